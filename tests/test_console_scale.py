"""The console's lists and the REST API's ask the database a fixed number of times whatever the
number of tenants, and their tenant filters do not list every tenant (bench/console.py measures
the times at 10,000 tenants)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing.models import Plan
from tenants.audit import Actor
from tenants.roles import GATEWAY_ADMIN
from tenants.services import change_plan, create_console_token, create_tenant_with_key

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
PAGES = [
    "/admin/tenants/tenant/",
    "/admin/tenants/apikey/",
    "/admin/tenants/apikey/add/",
    "/admin/tenants/clientcertificate/",
    "/admin/tenants/auditevent/",
    "/api/v1/tenants/",
    "/api/v1/keys/",
    "/api/v1/audit-events/",
]


def _add_tenants(count: int, start: int) -> None:
    plan = Plan.objects.first()
    for number in range(start, start + count):
        tenant = create_tenant_with_key(actor=SYSTEM, name=f"Scale {number}", slug=f"scale-{number}").api_key.tenant
        change_plan(actor=SYSTEM, tenant=tenant, plan=plan)


def _queries(client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(captured), response.content.decode()


def test_list_pages_make_the_same_queries_with_more_tenants(console_user, store):
    admin = Client()
    user = console_user(GATEWAY_ADMIN)
    admin.force_login(user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {create_console_token(actor=SYSTEM, user=user).secret}")
    _add_tenants(3, 0)
    few = {url: _queries(api if url.startswith("/api/") else admin, url)[0] for url in PAGES}
    _add_tenants(30, 3)
    for url in PAGES:
        count, html = _queries(api if url.startswith("/api/") else admin, url)
        assert count <= few[url], f"{url}: {count} queries with 33 tenants, {few[url]} with 3"
        # A search box (the slug filter, the autocomplete), not a link or an option per tenant.
        if 'id="changelist-filter"' in html:
            filters = html.split('id="changelist-filter"')[1].split("</nav>")[0]
            assert "scale-" not in filters.replace('placeholder="tenant slug"', ""), url
        if '<select name="tenant"' in html:
            tenant_box = html.split('<select name="tenant"')[1].split("</select>")[0]
            assert "autocomplete" in tenant_box and tenant_box.count("<option") <= 1, url
