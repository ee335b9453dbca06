"""No INSERT exceeds ClickHouse's partitions-per-block limit: a request whose spans fall on more
days than that is split by day and stored whole, and the batcher joins requests into one INSERT
only while their partitions together stay within the limit."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from storage.batcher import Batcher
from storage.flatten import TableBatch
from storage.partitions import MAX_PARTITIONS_PER_INSERT, split_by_partition
from tenants.audit import Actor
from tenants.services import update_tenant
from tests import otlp_requests
from tests.clients import http_post

DAY_NS = 86_400 * 10**9


def _spans_on_days(days: int, per_day: int = 1) -> bytes:
    request = otlp_requests.traces_request(days * per_day)
    now = int(datetime.now(UTC).timestamp() * 1e9)
    for number, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        start = now - (number // per_day) * DAY_NS - 3600 * 10**9
        span.start_time_unix_nano, span.end_time_unix_nano = start, start + 1_000_000
    return request.SerializeToString()


def test_a_batch_over_the_limit_is_split_by_day_and_keeps_every_row():
    days = 250
    times = [int(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp() * 1e9) + (i % days) * DAY_NS for i in range(1000)]
    batch = TableBatch("otel_traces", ("TenantId", "Timestamp", "SpanName"), [["t"] * 1000, times, list(range(1000))])
    parts = split_by_partition(batch, server_tz=UTC)
    assert [len(partitions) for _, partitions in parts] == [100, 100, 50]
    assert all(part.rows and len(partitions) <= MAX_PARTITIONS_PER_INSERT for part, partitions in parts)
    assert sorted(value for part, _ in parts for value in part.columns[2]) == list(range(1000))
    assert set().union(*(partitions for _, partitions in parts)) == {
        ("t", date(2026, 1, 1) + timedelta(days=d)) for d in range(days)
    }


def test_a_batch_within_the_limit_stays_whole():
    now = int(datetime(2026, 1, 1, 12, tzinfo=UTC).timestamp() * 1e9)
    batch = TableBatch("otel_traces", ("TenantId", "Timestamp"), [["t", "t"], [now, now + 2 * DAY_NS]])
    [(part, partitions)] = split_by_partition(batch, server_tz=UTC)
    assert part is batch and partitions == {("t", date(2026, 1, d)) for d in (1, 2, 3)}


@pytest.mark.django_db(transaction=True)
def test_a_120_day_backfill_is_stored_whole(tenant, http_url):
    update_tenant(actor=Actor.system("tests"), tenant=tenant.tenant, retention_days=400)
    reply = http_post(http_url, "traces", _spans_on_days(120, per_day=2), key=tenant.key)
    assert reply.status == 200, reply.status_message().message
    assert tenant.count("otel_traces") == 240
    days = tenant.rows(
        "SELECT uniqExact(toDate(Timestamp)) AS days FROM otel_traces WHERE TenantId = {tenant_id:String}"
    )
    assert days == [{"days": 120}]


def test_many_tenants_share_inserts_within_the_limit(store):
    """150 tenants' requests queued together: one INSERT would write 150 partitions; the
    batcher writes two, each within the limit, and every request is stored."""
    batcher = Batcher(store, linger_seconds=30)
    tenant_ids = [str(uuid.uuid4()) for _ in range(150)]
    now = int(datetime.now(UTC).timestamp() * 1e9)
    expectations = [batcher.expecting() for _ in tenant_ids]  # the writer waits for all of them
    batcher.start()

    def send(tenant_id, expectation):
        batch = TableBatch(
            "otel_traces", ("TenantId", "Timestamp", "RetentionDays"), [[tenant_id] * 3, [now] * 3, [7] * 3]
        )
        with expectation:
            batcher.write_encoded(batcher.encode([batch]), timeout=60, expectation=expectation)

    threads = [threading.Thread(target=send, args=pair) for pair in zip(tenant_ids, expectations, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()
    assert batcher.inserts == 2
    counts = store.dangerously_query_unscoped(
        "SELECT count() FROM otel_traces WHERE TenantId IN {ids:Array(String)}", {"ids": tenant_ids}, reason="test"
    ).result_rows
    assert counts == [(450,)]
