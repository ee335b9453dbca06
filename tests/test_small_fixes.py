"""Smaller faults found with the HTTP edge review, each kept as a test: out-of-range usage dates,
tenant settings that made no sense, and a log record whose all-zero trace id means none."""

from __future__ import annotations

import pytest

from tenants.audit import Actor
from tenants.roles import GATEWAY_ADMIN
from tenants.services import create_tenant, update_tenant
from tests import otlp_requests
from tests.clients import http_post
from tests.test_api import _client

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEM = Actor.system("tests")


@pytest.mark.parametrize("query", [{"until": "0001-01-01"}, {"since": "1969-12-31"}, {"until": "9999-12-31"}])
def test_usage_dates_out_of_range_are_a_400(query, tenant, console_user, pipeline):
    api = _client(console_user(GATEWAY_ADMIN))
    reply = api.get(f"/api/v1/tenants/{tenant.tenant.slug}/usage/", query)
    assert reply.status_code == 400
    assert "outside 1970-01-02 .. 2105-12-31" in str(reply.json())


@pytest.mark.parametrize("days", [0, -1, 3651, True, "30"])
def test_retention_must_be_1_to_3650_days(days, tenant):
    with pytest.raises(ValueError, match="retention_days must be a whole number of days from 1 to 3650"):
        update_tenant(actor=SYSTEM, tenant=tenant.tenant, retention_days=days)
    with pytest.raises(ValueError, match="retention_days"):
        create_tenant(actor=SYSTEM, name="No retention", retention_days=days)


def test_retention_zero_is_a_400_in_the_api(tenant, console_user):
    api = _client(console_user(GATEWAY_ADMIN))
    reply = api.patch(f"/api/v1/tenants/{tenant.tenant.slug}/", {"retention_days": 0}, format="json")
    assert reply.status_code == 400 and "retention_days" in reply.json()


@pytest.mark.parametrize(
    "overrides",
    [
        {"traces": {"items_per_second": True}},
        {"max_request_bytes": False},
        {"max_request_bytes": 2**63},
        {"logs": {"burst_items": -1}},
    ],
)
def test_limit_overrides_must_be_whole_numbers_in_range(overrides, tenant):
    with pytest.raises(ValueError, match="must be a whole number from 0 to"):
        update_tenant(actor=SYSTEM, tenant=tenant.tenant, limit_overrides=overrides)


def test_a_log_record_with_an_all_zero_trace_id_is_stored(tenant, http_url):
    request = otlp_requests.logs_request(2)
    for record in request.resource_logs[0].scope_logs[0].log_records:
        record.trace_id, record.span_id = bytes(16), bytes(8)
    reply = http_post(http_url, "logs", request.SerializeToString(), key=tenant.key)
    assert reply.status == 200 and reply.body == b""  # no partial_success
    rows = tenant.rows("SELECT TraceId, SpanId FROM otel_logs WHERE TenantId = {tenant_id:String}")
    assert rows == [{"TraceId": "", "SpanId": ""}] * 2
