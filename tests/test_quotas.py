"""Admission: plan limits refuse whole requests with the right reply and retry hint, before
anything is stored; every request's outcome is metered and accepted usage equals stored rows."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import grpc
import pytest

from billing import quotas
from billing.models import Plan, PlanSignal
from billing.services import change_plan
from billing.usage import daily_usage
from tenants.audit import Actor
from tests import otlp_requests
from tests.clients import grpc_export, http_post, retry_info
from tests.conftest import Clock

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEM = Actor.system("tests")
_plans = itertools.count(1)


def on_plan(tenant, *, signal="traces", max_request_bytes=0, stored_bytes=0, **limits):
    number = next(_plans)
    plan = Plan.objects.create(
        name=f"Plan {number}", slug=f"plan-{number}", max_request_bytes=max_request_bytes, stored_bytes=stored_bytes
    )
    PlanSignal.objects.create(plan=plan, signal=signal, **limits)
    change_plan(actor=SYSTEM, tenant=tenant.tenant, plan=plan)
    return plan


def spans(n: int, trace: int = 0) -> bytes:
    """A request of `n` spans; another `trace` makes another request of the same size (the
    gateway stores a body it was sent before only once)."""
    trace_id = trace.to_bytes(16, "big") if trace else otlp_requests.TRACE_ID
    return otlp_requests.traces_request(n, trace_id=trace_id).SerializeToString()


@pytest.fixture
def bucket_clock(monkeypatch) -> Clock:
    """The item-rate token buckets (in this process: the embedded mode) on a hand-moved clock."""
    buckets = quotas.bucket_store()
    assert isinstance(buckets, quotas.LocalBuckets)
    clock = Clock()
    monkeypatch.setattr(buckets, "clock", clock)
    return clock


@pytest.fixture
def day_clock(pipeline, monkeypatch):
    """The daily quotas' clock, one minute before midnight UTC."""
    moment = datetime(2026, 12, 1, 23, 59, 0, tzinfo=UTC)
    monkeypatch.setattr(pipeline.admission, "clock", lambda: moment)
    return moment


def test_item_rate_refuses_whole_requests_with_retry_hints(tenant, http_url, grpc_channel, bucket_clock):
    plan = on_plan(tenant, items_per_second=10, burst_items=10)
    assert http_post(http_url, "traces", spans(8), key=tenant.key).status == 200
    reply = http_post(http_url, "traces", spans(8), key=tenant.key)
    assert reply.status == 429 and int(reply.headers["retry-after"]) >= 1
    message = reply.status_message().message
    assert "10 items per second" in message and plan.name in message and "this request has 8" in message
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", spans(8), key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_info(caught.value).retry_delay.seconds >= 1
    assert tenant.count("otel_traces") == 8  # the refused requests stored nothing, not even part
    bucket_clock.advance(0.5)  # 5 items back: still too few for 8
    assert http_post(http_url, "traces", spans(8), key=tenant.key).status == 429
    bucket_clock.advance(0.5)
    assert http_post(http_url, "traces", spans(8), key=tenant.key).status == 200


def test_bandwidth_limit_refuses_whole_requests_before_decoding(tenant, http_url, grpc_channel, bucket_clock):
    body = spans(20)
    bodies = [spans(20, trace) for trace in range(1, 6)]  # distinct requests, each as large as `body`
    assert {len(b) for b in bodies} == {len(body)}
    on_plan(tenant, bytes_per_second=len(body), burst_bytes=2 * len(body))
    assert http_post(http_url, "traces", bodies[0], key=tenant.key).status == 200
    grpc_export(grpc_channel, "traces", bodies[1], key=tenant.key)  # the burst: two requests at once
    reply = http_post(http_url, "traces", bodies[2], key=tenant.key)
    assert reply.status == 429 and int(reply.headers["retry-after"]) >= 1
    assert f"allows {len(body)} bytes per second" in reply.status_message().message
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", bodies[3], key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_info(caught.value) is not None
    bucket_clock.advance(1)  # one second's worth back
    assert http_post(http_url, "traces", bodies[4], key=tenant.key).status == 200
    assert tenant.count("otel_traces") == 3 * 20
    # More than the burst can never pass: 413, no retry hint.
    reply = http_post(http_url, "traces", spans(60), key=tenant.key)
    assert reply.status == 413 and "accepts at once" in reply.status_message().message
    assert "retry-after" not in reply.headers


def test_request_larger_than_the_burst_cannot_succeed(tenant, http_url, grpc_channel):
    on_plan(tenant, items_per_second=10, burst_items=20)
    reply = http_post(http_url, "traces", spans(30), key=tenant.key)
    assert reply.status == 413 and "split it" in reply.status_message().message
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", spans(30), key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_info(caught.value) is None


def test_request_rate_through_django_ratelimit(tenant, http_url, ratelimit_clock):
    on_plan(tenant, requests_per_second=2)
    statuses = [http_post(http_url, "traces", spans(1), key=tenant.key).status for _ in range(3)]
    assert statuses == [200, 200, 429]  # two per one-second window
    ratelimit_clock.advance(1)
    assert http_post(http_url, "traces", spans(1), key=tenant.key).status == 200


def test_plan_request_size_limit(tenant, http_url, grpc_channel):
    on_plan(tenant, max_request_bytes=200)
    reply = http_post(http_url, "traces", spans(20), key=tenant.key)
    assert reply.status == 413 and "limit of 200 bytes" in reply.status_message().message
    assert "retry-after" not in reply.headers
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", spans(20), key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_info(caught.value) is None


def test_daily_quota_says_when_it_resets(tenant, http_url, grpc_channel, day_clock):
    on_plan(tenant, items_per_day=10)
    assert http_post(http_url, "traces", spans(6), key=tenant.key).status == 200
    reply = http_post(http_url, "traces", spans(6), key=tenant.key)
    assert reply.status == 429 and "10 items per day" in reply.status_message().message
    assert reply.headers["retry-after"] == "60"  # the clock says 23:59:00 UTC
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", spans(6), key=tenant.key)
    assert retry_info(caught.value).retry_delay.seconds == 60
    assert http_post(http_url, "traces", spans(4), key=tenant.key).status == 200  # the refused 6 were given back
    assert tenant.count("otel_traces") == 10


def test_stored_bytes_cap_is_final(tenant, http_url, grpc_channel):
    assert http_post(http_url, "traces", spans(50), key=tenant.key).status == 200
    on_plan(tenant, stored_bytes=1)
    reply = http_post(http_url, "traces", spans(1), key=tenant.key)
    assert reply.status == 403 and "stored-data cap" in reply.status_message().message
    assert "retry-after" not in reply.headers
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", spans(1), key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_info(caught.value) is None


def test_tenant_override_beats_the_plan(tenant, http_url):
    on_plan(tenant, items_per_second=5, burst_items=5)
    from tenants.services import update_tenant

    update_tenant(
        actor=SYSTEM, tenant=tenant.tenant, limit_overrides={"traces": {"items_per_second": 1000, "burst_items": 1000}}
    )
    assert http_post(http_url, "traces", spans(100), key=tenant.key).status == 200
    with pytest.raises(ValueError, match="unknown traces limit"):
        update_tenant(actor=SYSTEM, tenant=tenant.tenant, limit_overrides={"traces": {"spans": 1}})


def _usage(store, tenant):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    rows = daily_usage(store, str(tenant.tenant.id), since=now - timedelta(days=1), until=now + timedelta(days=1))
    return {(r.signal, r.outcome): (r.requests, r.items, r.items_accepted) for r in rows}


def test_usage_counts_every_outcome_and_matches_stored_rows(
    tenant, http_url, grpc_channel, store, pipeline, bucket_clock
):
    on_plan(tenant, items_per_second=100, burst_items=100)
    assert http_post(http_url, "traces", spans(60), key=tenant.key).status == 200  # accepted
    partial = otlp_requests.traces_request(10)
    partial.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
    grpc_export(grpc_channel, "traces", partial.SerializeToString(), key=tenant.key)  # partial
    assert http_post(http_url, "traces", spans(60), key=tenant.key).status == 429  # throttled
    assert http_post(http_url, "traces", b"\x01garbage", key=tenant.key).status == 400  # invalid
    from tenants.services import issue_key

    logs_only = issue_key(actor=SYSTEM, tenant=tenant.tenant, scopes=["logs"]).secret
    assert http_post(http_url, "traces", spans(1), key=logs_only).status == 403  # unauthorized
    assert http_post(http_url, "logs", otlp_requests.logs_request(3).SerializeToString(), key=logs_only).status == 200
    assert pipeline.batcher.drain(30)  # refusals are metered without waiting for their INSERT
    usage = _usage(store, tenant)
    # Accepted usage is counted from the stored rows: the partially accepted request and its
    # rejected span under its outcome, but its accepted spans (all but one) may be counted
    # under 'accepted' (with no request). Together: the two requests, 70 spans, 69 accepted.
    accepted, partially = usage.pop(("traces", "accepted")), usage.pop(("traces", "partially_accepted"))
    assert tuple(a + p for a, p in zip(accepted, partially)) == (2, 60 + 10, 60 + 9)
    assert accepted[0] == 1 and accepted[1] == accepted[2]  # one request, nothing of it rejected
    assert partially[0] == 1 and partially[1] - partially[2] == 1  # one request, its one rejected span
    assert usage == {
        ("traces", "throttled"): (1, 60, 0),
        ("traces", "invalid"): (1, 0, 0),
        ("traces", "unauthorized"): (1, 0, 0),
        ("logs", "accepted"): (1, 3, 3),
    }
    assert tenant.count("otel_traces") == 60 + 9 and tenant.count("otel_logs") == 3
