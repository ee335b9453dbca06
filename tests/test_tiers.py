"""Isolation tiers: a tenant's rows go to partitions of its own (dedicated) or to partitions
shared by retention (shared), as its plan says unless an admin overrides it; deleting a shared
tenant deletes its rows in the background, and nobody else's."""

from __future__ import annotations

import time

import pytest

from billing.models import Plan
from storage.tenant_data import shared_deletion_progress, tenant_stored_bytes
from tenants.audit import Actor
from tenants.encryption import reader_for
from tenants.models import AuditEvent, Tenant
from tenants.services import delete_tenant
from tests import otlp_requests
from tests.clients import http_post

pytestmark = pytest.mark.django_db(transaction=True)


def _plan(slug: str) -> Plan:
    """A seeded plan (Free shares partitions, Pro has its own: billing migration 0006); made
    again as seeded where an earlier test's database flush removed it."""
    isolation = "shared" if slug == "free" else "dedicated"
    return Plan.objects.get_or_create(slug=slug, defaults={"name": slug.title(), "isolation": isolation})[0]


def _on(tenant, plan_slug: str | None, isolation: str = ""):
    tenant.tenant.plan = _plan(plan_slug) if plan_slug else None
    tenant.tenant.isolation = isolation
    tenant.tenant.save()
    return tenant


def _partitions(store, tenant) -> set[str]:
    """The partitions of otel_traces holding the tenant's rows."""
    return {
        partition
        for (partition,) in store.dangerously_query_unscoped(
            "SELECT DISTINCT partition FROM system.parts WHERE table = 'otel_traces' AND active AND partition_id IN "
            "(SELECT DISTINCT _partition_id FROM otel_traces WHERE TenantId = {t:String})",
            {"t": str(tenant.tenant.id)},
            reason="test",
        ).result_rows
    }


def _send(http_url, tenant, number: int, spans: int = 3) -> None:
    body = otlp_requests.traces_request(spans, trace_id=number.to_bytes(16, "big")).SerializeToString()
    assert http_post(http_url, "traces", body, key=tenant.key).status == 200


def test_the_plan_sets_the_tier_and_an_admin_can_override_it(store, make_tenant, http_url):
    free, pro, none, free_dedicated = (make_tenant() for _ in range(4))
    _on(free, "free")
    _on(pro, "pro")
    _on(none, None)
    _on(free_dedicated, "free", isolation="dedicated")
    assert [t.tenant.effective_isolation.value for t in (free, pro, none, free_dedicated)] == [
        "shared",
        "dedicated",
        "dedicated",
        "dedicated",
    ]
    for number, tenant in enumerate((free, pro, none, free_dedicated), start=1):
        _send(http_url, tenant, number)
    day = time.strftime("%Y-%m-%d", time.gmtime(otlp_requests.NOW_NS / 1e9))
    retention = free.tenant.retention_days
    assert _partitions(store, free) == {f"('shared-{retention}d','{day}')"}
    for tenant in (pro, none, free_dedicated):
        assert _partitions(store, tenant) == {f"('{tenant.tenant.id}','{day}')"}
    # Each reads only its own rows, shared partition or not.
    assert [t.count("otel_traces") for t in (free, pro, none, free_dedicated)] == [3, 3, 3, 3]
    # The trace-id lookup follows its spans' partitions.
    lookup = store.dangerously_query_unscoped(
        "SELECT DISTINCT GatewayPartition FROM otel_traces_trace_id_ts WHERE TenantId = {t:String}",
        {"t": str(free.tenant.id)},
        reason="test",
    ).result_rows
    assert lookup == [(f"shared-{retention}d",)]
    assert tenant_stored_bytes(store, str(free.tenant.id)) > 0  # its share of the shared parts


def test_deleting_a_shared_tenant_deletes_its_rows_and_nobody_elses(store, make_tenant, http_url):
    victim, neighbour, dedicated = _on(make_tenant(), "free"), _on(make_tenant(), "free"), _on(make_tenant(), "pro")
    for number, tenant in enumerate((victim, neighbour, dedicated), start=11):
        _send(http_url, tenant, number, spans=4)
    victim_id, dedicated_id = str(victim.tenant.id), str(dedicated.tenant.id)

    def rows(tenant_id: str) -> int:
        return store.dangerously_query_unscoped(
            "SELECT count() FROM otel_traces WHERE TenantId = {t:String}", {"t": tenant_id}, reason="test"
        ).result_rows[0][0]

    delete_tenant(actor=Actor.system("tests"), tenant=victim.tenant, store=store)
    delete_tenant(actor=Actor.system("tests"), tenant=dedicated.tenant, store=store)
    assert rows(dedicated_id) == 0  # its own partitions: dropped at once
    # The mutation walks every part of the table, its partitions or not (~8 parts a second in
    # chDB): with the whole suite's parts, that takes a while.
    deadline = time.monotonic() + 300
    while not all(p["done"] for p in shared_deletion_progress(store, victim_id).values()):
        assert time.monotonic() < deadline, shared_deletion_progress(store, victim_id)
        time.sleep(0.2)
    assert "otel_traces" in shared_deletion_progress(store, victim_id)
    assert rows(victim_id) == 0
    assert neighbour.count("otel_traces") == 4
    with pytest.raises(PermissionError):  # the gateway's reader refuses a deleted tenant
        reader_for(store, victim_id)
    event = AuditEvent.objects.filter(action="tenant.data_dropped", target_id=victim_id).get()
    assert "otel_traces" in event.changes["after"]["shared_rows_deleting_from"]


def test_an_admin_overrides_the_tier_in_the_console_audited_and_shown(console_user, store, make_tenant):
    from django.test import Client
    from django.urls import reverse

    from tenants.roles import GATEWAY_ADMIN
    from tenants.services import delete_tenant as delete

    tenant = _on(make_tenant(), "free")
    client = Client()
    client.force_login(console_user(GATEWAY_ADMIN))
    page = reverse("admin:tenants_tenant_change", args=[tenant.tenant.pk])
    assert "Shared partitions (from its plan)" in client.get(page).content.decode()
    client.post(
        page,
        {
            "name": tenant.tenant.name,
            "slug": tenant.tenant.slug,
            "plan": tenant.tenant.plan_id,
            "isolation": "dedicated",
            "retention_days": tenant.tenant.retention_days,
            "sensitive_attribute_keys": "[]",
            "limit_overrides": "{}",
            "allowed_origins": "[]",
        },
    )
    event = AuditEvent.objects.filter(action="tenant.updated", target_id=str(tenant.tenant.id)).latest("seq")
    assert event.changes == {"before": {"isolation": ""}, "after": {"isolation": "dedicated"}}
    assert "Dedicated partitions (from this tenant&#x27;s setting)" in client.get(page).content.decode()
    delete(actor=Actor.system("tests"), tenant=Tenant.objects.get(pk=tenant.tenant.pk), store=store)
    assert "done: its partitions were dropped" in client.get(page).content.decode()
