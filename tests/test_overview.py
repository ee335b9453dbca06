"""The console an on-call admin uses: the overview of every tenant and of the gateway, the tenant
page's requests and refusals by key and reason, and the same refusals from the REST API, all
from real requests through the HTTP edge."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tenants.audit import Actor
from tenants.roles import AUDITOR, GATEWAY_ADMIN
from tenants.services import create_console_token, suspend_tenant
from tests import otlp_requests
from tests.clients import http_post

pytestmark = pytest.mark.django_db(transaction=True)
TRACES = otlp_requests.traces_request(4).SerializeToString()


def _text(html: str) -> str:
    """The page's text with tags and runs of white space collapsed, as a reader sees it."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return _text(html[start : html.index("</section>", start)])


def _totals(html: str) -> dict[str, int]:
    """Requests by outcome, as the overview's totals show them."""
    rows = re.findall(
        r"<tr><td>([a-z ]+)</td>\s*<td class=\"num[^\"]*\">([\d,]+)</td></tr>", html.split('id="totals"')[1]
    )
    return {outcome: int(count.replace(",", "")) for outcome, count in rows}


def test_overview_tenant_page_and_api_show_what_was_stored_and_what_was_refused(
    make_tenant, http_url, pipeline, console_user
):
    admin = Client()
    admin.force_login(console_user(GATEWAY_ADMIN))
    # Usage outlives the tests before this one (and their tenants): compare with what was there.
    before = _totals(admin.get(reverse("admin:index")).content.decode())
    healthy, broken, suspended = make_tenant("Healthy Co"), make_tenant("Broken Co"), make_tenant("Gone Co")
    for number in range(3):  # three requests of their own (the same body again is the same request)
        trace = otlp_requests.traces_request(4, trace_id=(number + 1).to_bytes(16, "big")).SerializeToString()
        assert http_post(http_url, "traces", trace, key=healthy.key).status == 200
    # Broken Co's exporter sends what is not OTLP: 400 on every request.
    for _ in range(2):
        assert http_post(http_url, "traces", b"\xff\xfenot protobuf", key=broken.key).status == 400
    assert http_post(http_url, "logs", b"{", key=broken.key, content_type="application/json").status == 400
    suspend_tenant(actor=Actor.system("tests"), tenant=suspended.tenant)
    assert http_post(http_url, "metrics", TRACES, key=suspended.key).status in (401, 403)
    assert http_post(http_url, "traces", TRACES, key="otlpgw_" + "x" * 36).status == 401  # no such key
    assert pipeline.batcher.drain(timeout=30)

    page = admin.get(reverse("admin:index"))
    assert page.status_code == 200
    html = page.content.decode()
    gateway = _section(html, "gateway-state")
    assert (
        "Clickhouse writes ok" in gateway
        and "Database ok" in gateway
        and "Writer queue" in gateway
        and "INSERTs" in gateway
    )
    after = _totals(html)
    assert len(after) == 8 and {o: after[o] - before.get(o, 0) for o in after if after[o] != before.get(o, 0)} == {
        "accepted": 3,
        "invalid": 3,
        "unauthorized": 2,
    }
    failing = _section(html, "failing")
    assert "Broken Co 3 100% invalid 3" in failing and "Gone Co 1 100% unauthorized 1" in failing
    assert "Healthy Co" not in failing
    assert "Healthy Co 12" in _section(html, "top")
    # This test's tenants (the usage of earlier tests' is there too): by items, most first.
    everyone = _section(admin.get(reverse("admin:index"), {"q": "Co"}).content.decode(), "tenants")
    assert everyone.index("Healthy Co") < everyone.index("Broken Co")
    # Sorted and filtered: by refused requests, only those with any.
    only_failing = _section(
        admin.get(reverse("admin:index"), {"failing": "1", "o": "refused", "q": "Co"}).content.decode(), "tenants"
    )
    assert "Broken Co" in only_failing and "Healthy Co" not in only_failing
    assert only_failing.index("Broken Co") < only_failing.index("Gone Co")
    searched = _section(admin.get(reverse("admin:index"), {"q": "healthy", "period": "7d"}).content.decode(), "tenants")
    assert "Healthy Co" in searched and "Broken Co" not in searched and "(1 of 3)" in searched

    tenant_page = admin.get(reverse("admin:tenants_tenant_change", args=[broken.tenant.pk])).content.decode()
    refusals = _text(
        tenant_page[
            tenant_page.index('id="refusals"') : tenant_page.index("</table>", tenant_page.index('id="refusals"'))
        ]
    )
    prefix = broken.tenant.api_keys.get().prefix
    assert f"{prefix}… (default) traces invalid (undecodable) 2" in refusals
    assert f"{prefix}… (default) logs invalid (undecodable) 1" in refusals
    assert "Wire format was corrupt" in refusals and "JSON" in refusals  # the messages the exporter got
    assert "otlp_gateway" not in refusals  # no name of the gateway's own parser types
    keys = _text(tenant_page[tenant_page.index('id="tenant-keys"') :])
    assert f"{prefix}… default active" in keys and "never" not in keys.split("Issue another key")[0]

    token = create_console_token(actor=Actor.system("tests"), user=console_user(GATEWAY_ADMIN, username="api")).secret
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    rows = api.get(f"/api/v1/tenants/{broken.tenant.slug}/refusals/").json()
    assert {(r["key_name"], r["signal"], r["reason"], r["requests"]) for r in rows} == {
        ("default", "traces", "undecodable", 2),
        ("default", "logs", "undecodable", 1),
    }
    assert api.get(f"/api/v1/tenants/{healthy.tenant.slug}/refusals/").json() == []
    gone = api.get(f"/api/v1/tenants/{suspended.tenant.slug}/refusals/").json()
    assert [(r["signal"], r["outcome"], r["key_name"]) for r in gone] == [("metrics", "unauthorized", "default")]


def test_an_auditor_gets_the_plain_index_not_the_overview(console_user):
    auditor = Client()
    auditor.force_login(console_user(AUDITOR))
    html = auditor.get(reverse("admin:index")).content.decode()
    assert 'id="overview"' not in html and "Audit" in html
