"""What is acknowledged is stored once and metered once: a request sent again, an INSERT the
writer sends again, a request whose sender stopped waiting, a usage table that cannot be
written. Every test ends in the same check: the rows stored, the items metered as accepted and
the requests metered are what was acknowledged, each once."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from gateway.otlp import runtime
from gateway.otlp.pipeline import Pipeline, PipelineConfig
from storage.batcher import Batcher
from storage.clickhouse import StorageError
from tests import otlp_requests
from tests.clients import grpc_export, http_post
from tests.conftest import unwritable_table
from vocabulary import Outcome, Signal

pytestmark = pytest.mark.django_db(transaction=True)


def _request(spans: int, number: int) -> bytes:
    return otlp_requests.traces_request(spans, trace_id=number.to_bytes(16, "big")).SerializeToString()


def _metered(tenant, signal: str = "traces") -> dict[str, tuple[int, int, int, int]]:
    """Outcome -> (requests, items, items accepted, bytes) of the tenant's usage."""
    assert runtime.get_pipeline().batcher.drain(30)
    return {
        row["Outcome"]: (row["Requests"], row["Items"], row["ItemsAccepted"], row["Bytes"])
        for row in tenant.rows(
            "SELECT Outcome, sum(Requests) AS Requests, sum(Items) AS Items, sum(ItemsAccepted) AS ItemsAccepted, "
            "sum(Bytes) AS Bytes FROM gateway_usage WHERE TenantId = {tenant_id:String} AND Signal = {signal:String} "
            "GROUP BY Outcome",
            signal=signal,
        )
    }


def _stored_by_trace(tenant) -> dict[int, int]:
    return {
        int(row["TraceId"], 16): row["n"]
        for row in tenant.rows(
            "SELECT TraceId, count() AS n FROM otel_traces WHERE TenantId = {tenant_id:String} GROUP BY TraceId"
        )
    }


def test_a_request_sent_again_is_stored_and_metered_once(tenant, http_url, grpc_channel):
    """The exporter whose reply was lost sends the same request again, over either transport:
    it is answered as stored, and nothing is stored or metered twice."""
    body = _request(5, 1)
    assert http_post(http_url, "traces", body, key=tenant.key).status == 200
    assert http_post(http_url, "traces", body, key=tenant.key).status == 200
    grpc_export(grpc_channel, "traces", body, key=tenant.key)
    assert _stored_by_trace(tenant) == {1: 5}
    assert _metered(tenant) == {"accepted": (1, 5, 5, len(body))}
    # A different request is a different request, however alike.
    other = _request(5, 2)
    assert http_post(http_url, "traces", other, key=tenant.key).status == 200
    assert _stored_by_trace(tenant) == {1: 5, 2: 5}
    assert _metered(tenant) == {"accepted": (2, 10, 10, len(body) + len(other))}


def test_the_same_body_from_two_tenants_is_two_requests(make_tenant, http_url):
    first, second = make_tenant(), make_tenant()
    body = _request(3, 7)
    for tenant in (first, second):
        assert http_post(http_url, "traces", body, key=tenant.key).status == 200
    for tenant in (first, second):
        assert _stored_by_trace(tenant) == {7: 3}
        assert _metered(tenant) == {"accepted": (1, 3, 3, len(body))}


def test_accepted_usage_is_the_stored_rows(tenant, http_url, grpc_channel):
    """Metrics across several tables, logs, and a request with items rejected: the usage
    counts each request once, each stored row as an accepted item, and each rejection."""
    metrics = otlp_requests.dumps(otlp_requests.metrics_json())
    logs = otlp_requests.logs_request(4).SerializeToString()
    partial = otlp_requests.traces_request(3)
    partial.resource_spans[0].scope_spans[0].spans[0].start_time_unix_nano = 1  # 1970: outside the retention
    partial = partial.SerializeToString()
    assert http_post(http_url, "metrics", metrics, key=tenant.key, content_type="application/json").status == 200
    grpc_export(grpc_channel, "logs", logs, key=tenant.key)
    reply = http_post(http_url, "traces", partial, key=tenant.key)
    assert reply.status == 200
    metric_rows = sum(
        tenant.count(table)
        for table in (
            "otel_metrics_gauge",
            "otel_metrics_sum",
            "otel_metrics_histogram",
            "otel_metrics_exponential_histogram",
            "otel_metrics_summary",
        )
    )
    assert metric_rows > 1
    metered = _metered(tenant, "metrics")
    assert metered == {"accepted": (1, metric_rows, metric_rows, len(metrics))}
    assert _metered(tenant, "logs") == {"accepted": (1, 4, 4, len(logs))}
    assert tenant.count("otel_traces") == 2
    traces = _metered(tenant, "traces")
    # The request is partially accepted, once; its stored rows are accepted items.
    assert sum(requests for requests, *_ in traces.values()) == traces["partially_accepted"][0] == 1
    assert sum(accepted for _, _, accepted, _ in traces.values()) == 2
    assert sum(items for _, items, _, _ in traces.values()) == 3
    assert sum(size for *_, size in traces.values()) == len(partial)


def test_an_insert_sent_again_stores_nothing_twice(store, tenant):
    """The writer sends an INSERT again only as it was (the same blocks, the same token):
    ClickHouse keeps the first, the usage views count it once."""
    batcher = Batcher(store)
    blocks = _blocks(batcher, tenant, _request(4, 3))
    for _ in range(3):
        batcher._insert(blocks, token="the-same-insert")
    assert _stored_by_trace(tenant) == {3: 4}
    assert _metered(tenant) == {"accepted": (1, 4, 4, 123)}


def _blocks(batcher: Batcher, tenant, body: bytes):
    from gateway.otlp import decode
    from gateway.otlp.prepare import prepare
    from tenants.encryption import key_ring

    tenant_id = str(tenant.tenant.id)
    prepared = prepare(
        Signal.TRACES,
        body,
        decode.Encoding.PROTOBUF,
        tenant_id=tenant_id,
        retention_days=30,
        ring=key_ring(tenant_id),
        sensitive=frozenset(),
        encode=batcher.encode,
        body_bytes=123,
    )
    return prepared.blocks


def test_a_request_stored_after_its_sender_stopped_waiting_is_not_stored_again(store, tenant):
    """Storage is busy past the request's timeout: the sender is told to retry, the rows are
    stored meanwhile, and the retry is answered as stored without storing them again."""
    batcher = Batcher(store, linger_seconds=0)
    batcher.start()
    pipeline = Pipeline(
        batcher, PipelineConfig(max_decompressed_bytes=10**7, store_timeout_seconds=0.5, retry_after_seconds=1)
    )
    body = _request(6, 4)

    def export():
        return pipeline.run(signal=Signal.TRACES, api_key=tenant.key, read_body=lambda: body)

    try:
        busy = threading.Thread(target=lambda: store.query("SELECT sleepEachRow(0.5) FROM numbers(4)"))
        busy.start()  # a query holds the engine for ~2 s: the writer waits for it
        time.sleep(0.2)
        first = export()
        assert first.outcome is Outcome.STORAGE_UNAVAILABLE
        assert "nothing is stored twice" in first.refusal.message
        busy.join()
        assert batcher.drain(30)
        assert _stored_by_trace(tenant) == {4: 6}  # stored, after all
        again = export()
        assert again.outcome is Outcome.ACCEPTED
        assert batcher.drain(30)
        assert _stored_by_trace(tenant) == {4: 6}
        metered = _metered(tenant)
        assert metered["accepted"] == (1, 6, 6, len(body))
        assert metered["storage_unavailable"][2] == 0  # the first reply's record: nothing accepted
    finally:
        batcher.stop()


def test_a_request_not_taken_before_its_sender_stopped_waiting_is_never_stored(store, tenant):
    """The sender was told nothing was stored, and nothing is, even once storage is free."""
    batcher = Batcher(store, linger_seconds=0)
    batcher.start()
    pipeline = Pipeline(
        batcher, PipelineConfig(max_decompressed_bytes=10**7, store_timeout_seconds=0.5, retry_after_seconds=1)
    )
    try:
        busy = threading.Thread(target=lambda: store.query("SELECT sleepEachRow(0.5) FROM numbers(4)"))
        busy.start()
        time.sleep(0.2)
        results = {}

        def export(number: int):
            body = _request(2, number)
            results[number] = pipeline.run(signal=Signal.TRACES, api_key=tenant.key, read_body=lambda: body)

        # The first is taken by the writer (and waits on the engine); the others queue behind it.
        threads = [threading.Thread(target=export, args=(n,)) for n in (10, 11, 12)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        busy.join()
        assert batcher.drain(30)
        refused = {n for n, result in results.items() if result.outcome is Outcome.STORAGE_UNAVAILABLE}
        told_nothing = {n for n in refused if "nothing from this request was stored" in results[n].refusal.message}
        assert told_nothing  # some were never taken
        stored = _stored_by_trace(tenant)
        assert not told_nothing & set(stored)
        accepted = {n for n, result in results.items() if result.outcome is Outcome.ACCEPTED}
        assert accepted <= set(stored)
    finally:
        batcher.stop()


def test_a_usage_table_that_cannot_be_written(store, tenant, http_url, grpc_channel):
    """gateway_usage made immutable: the spans can be stored but not their usage, so the
    request is answered 503 and the writer keeps the INSERT; the exporter's retries are told
    to wait, store nothing twice; once the table can be written, the INSERT is completed, and
    the next retry is answered as stored: stored once, metered once, and the refusals metered
    too."""
    batcher = runtime.get_pipeline().batcher
    batcher.repair_interval = 0.2
    body = _request(4, 5)
    try:
        with unwritable_table(store, "gateway_usage"):
            reply = http_post(http_url, "traces", body, key=tenant.key)
            assert reply.status == 503, reply.body
            assert _stored_by_trace(tenant) == {5: 4}  # the spans are in, their usage is not
            assert batcher.repairs == 1
            again = http_post(http_url, "traces", body, key=tenant.key)
            assert again.status == 503 and "nothing is stored twice" in again.status_message().message
            with pytest.raises(grpc.RpcError) as caught:
                grpc_export(grpc_channel, "traces", body, key=tenant.key)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert _stored_by_trace(tenant) == {5: 4}
        deadline = time.monotonic() + 30
        while batcher.repairs:
            assert time.monotonic() < deadline, "the writer did not complete the INSERT"
            time.sleep(0.05)
        assert http_post(http_url, "traces", body, key=tenant.key).status == 200
    finally:
        batcher.repair_interval = Batcher.repair_interval
    assert _stored_by_trace(tenant) == {5: 4}
    metered = _metered(tenant)
    assert metered["accepted"] == (1, 4, 4, len(body))
    # The three 503s are metered as refusals, with nothing accepted: their records waited in
    # the writer until the table could be written.
    assert set(metered) == {"accepted", "storage_unavailable"}
    assert metered["storage_unavailable"][:3] == (3, 12, 0)


_MIGRATE_FROM_AN_EARLIER_VERSION = """
import json, sys
import django
django.setup()
from storage import schema
import storage.clickhouse as clickhouse
from storage.batcher import Batcher
from storage.clickhouse import StorageError
from storage.clickhouse import Store
from gateway.otlp import decode
from gateway.otlp.prepare import prepare
from tenants.keyring import KeyRing
from tests import otlp_requests
from vocabulary import Signal

store = Store(sys.argv[1])
version = int(sys.argv[2])
current = schema.MIGRATIONS
clickhouse.MIGRATIONS = schema.MIGRATIONS = current[:version]  # the schema an earlier version made
tuning = clickhouse.embedded_tuning_statements
clickhouse.embedded_tuning_statements = lambda: ()  # (it names the tables of every version)
store.migrate()
clickhouse.embedded_tuning_statements = tuning
tenant = "7f0c3d4e-0000-4000-8000-000000000002"
# What the previous version wrote: rows without the gateway's columns, usage rows of its own.
store.command(
    "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, ServiceName, Duration, RetentionDays) "
    f"SELECT '{tenant}', now64(9) - number, 'trace-old', toString(number), 'op', 'svc', 5, 30 FROM numbers(12)"
)
store.command(
    "INSERT INTO gateway_usage (TenantId, Signal, Hour, Outcome, Requests, Items, ItemsAccepted, Bytes) "
    f"VALUES ('{tenant}', 'traces', toStartOfHour(now()), 'accepted', 1, 12, 12, 900)"
)
body = otlp_requests.traces_request(3).SerializeToString()
def send(batcher):
    prepared = prepare(Signal.TRACES, body, decode.Encoding.PROTOBUF, tenant_id=tenant, retention_days=30,
                       ring=KeyRing(tenant, {}), sensitive=frozenset(), encode=batcher.encode, body_bytes=len(body))
    batcher.write_encoded(prepared.blocks, timeout=30)
if version >= 4:  # a version with the ledger: the request is stored and metered before the migration
    batcher = Batcher(store)
    batcher.start()
    send(batcher)
    batcher.stop()
clickhouse.MIGRATIONS = schema.MIGRATIONS = current
applied = store.migrate()  # what manage.py migrate_clickhouse does
batcher = Batcher(store)
batcher.start()
for _ in range(2):  # the same request (again), and again
    send(batcher)
batcher.stop()
def rows(sql):
    return store.dangerously_query_unscoped(sql, reason="test").result_rows
print(json.dumps({
    "applied": applied,
    "traces": rows("SELECT TraceId, count(), countIf(GatewayBlock != '') FROM otel_traces GROUP BY TraceId ORDER BY 1"),
    "usage": rows("SELECT sum(Requests), sum(Items), sum(ItemsAccepted), sum(Bytes) FROM gateway_usage"),
    "ledger": rows("SELECT count() FROM gateway_ingest_ledger"),
    "corrected": batcher.check_usage(),
    "body": len(body),
}))
"""


@pytest.mark.parametrize("version", [3, 6])
def test_migrations_bring_an_earlier_database_up_to_date_with_its_data(tmp_path, version):
    """A database an earlier version made (migrations 1-3: before the ledger; 1-6: usage from
    views of its own on each telemetry table) with spans and usage in it: after the migrations
    its rows and usage are as they were, new requests are metered once each (a request stored
    before the migration is not stored again after it), and the usage check finds nothing
    missing in the hour of the migration, whose usage came from both kinds of view."""
    from tests.test_serve import run_script

    result = run_script(_MIGRATE_FROM_AN_EARLIER_VERSION, tmp_path, str(version))
    assert result["applied"] == list(range(version + 1, 8))
    new_trace = otlp_requests.TRACE_ID.hex()
    assert result["traces"] == sorted([[new_trace, 3, 1], ["trace-old", 12, 0]])
    # The earlier version's usage row (12 items) and the request (3); from version 4 on, the
    # 12 spans put in by hand were metered by the views of the time as well.
    items = 15 + (12 if version >= 4 else 0)
    assert result["usage"] == [[2, items, items, 900 + result["body"]]]
    assert result["ledger"] == [[1]]
    assert result["corrected"] == 0


def test_rows_stored_without_their_views_are_metered_at_the_next_start(store, tenant):
    """The process died between an INSERT's rows and its views (here: the views' tables could
    not be written, and the writer never got to send the INSERT again): the next start meters
    those rows and records them in the ledger, once, however often it runs."""
    batcher = Batcher(store)
    body = _request(5, 6)
    blocks = _blocks(batcher, tenant, body)
    with unwritable_table(store, "gateway_usage"), unwritable_table(store, "gateway_ingest_ledger"):
        with pytest.raises(StorageError):
            store.insert_native(blocks[0].table, blocks[0].column_names, [block.data for block in blocks], token="t1")
    assert _stored_by_trace(tenant) == {6: 5}
    assert _metered(tenant) == {}
    assert batcher.reconcile() >= 1
    assert batcher.reconcile() == 0
    assert _metered(tenant) == {"accepted": (1, 5, 5, 123)}
    assert batcher.ledger.stored(blocks) == {block.block_id for block in blocks}


def test_the_same_request_twice_in_one_insert_is_stored_once(store, tenant):
    """A request sent again while the first copy is still queued: both are in one flush, the
    block is written once, and both are answered as stored."""
    from storage.batcher import _Pending

    batcher = Batcher(store)
    body = _request(3, 8)
    first, again = _Pending(_blocks(batcher, tenant, body)), _Pending(_blocks(batcher, tenant, body))
    batcher._flush([first, again])
    assert first.error is None and again.error is None and first.done.is_set() and again.done.is_set()
    assert _stored_by_trace(tenant) == {8: 3}
    assert _metered(tenant) == {"accepted": (1, 3, 3, 123)}


def test_an_insert_left_under_repair_is_completed_at_the_next_start(store, tenant, tmp_path):
    """The process stops (or dies) while an INSERT is under repair: its rows and their ledger
    rows are stored, their usage is not, and the ledger would tell the next start's search that
    the block is complete. The writer kept the INSERT in its journal; the next start sends it
    again, which stores only the usage: stored once, metered once."""
    journal = tmp_path / "repairs"
    batcher = Batcher(store, journal=journal)
    batcher.repair_interval = 60  # no background attempt during the test
    batcher.start()
    body = _request(4, 7)
    blocks = _blocks(batcher, tenant, body)
    with unwritable_table(store, "gateway_usage"):
        with pytest.raises(StorageError) as caught:
            batcher.write_encoded(blocks, timeout=30)
        assert caught.value.partial
        assert batcher.repairs == 1 and len(list(journal.glob("*.repair"))) == 1
        batcher.stop()  # its last attempt fails too: the table still cannot be written
    assert _stored_by_trace(tenant) == {7: 4}
    assert _metered(tenant) == {}
    assert tenant.count("gateway_ingest_ledger") == 1  # what makes the search blind to it
    next_start = Batcher(store, journal=journal)
    next_start.start()
    try:
        assert next_start.reconcile() >= 1
        next_start.reconcile()
    finally:
        next_start.stop()
    assert _stored_by_trace(tenant) == {7: 4}
    assert _metered(tenant) == {"accepted": (1, 4, 4, 123)}
    assert not list(journal.iterdir())


_DIE_BETWEEN_THE_VIEWS = """
import json, os, subprocess, sys
from pathlib import Path
import django
django.setup()
from gateway.otlp import decode
from gateway.otlp.prepare import prepare
from storage.batcher import Batcher
from storage.clickhouse import Store
from tenants.keyring import KeyRing
from tests import otlp_requests
from vocabulary import Signal

store = Store(sys.argv[1])
store.migrate()
tenant = "7f0c3d4e-0000-4000-8000-000000000003"
def rows(sql):
    return store.dangerously_query_unscoped(sql, reason="test").result_rows
usage_path = rows("SELECT data_paths[1] FROM system.tables WHERE database = currentDatabase() AND name = 'gateway_usage'")[0][0]
print(json.dumps({"usage_path": usage_path}), flush=True)
batcher = Batcher(store, journal=Path(sys.argv[2]) if sys.argv[2] else None)

def die(table, blocks):
    # The moment a kill -9 between an INSERT's parts leaves behind: its rows and their ledger
    # row stored, their usage not (the ledger's view feeds usage's, after the ledger's part is
    # written), and the writer gone before it looked at the outcome.
    (block_id,) = {block.block_id for block in blocks if block.block_id}
    ledger = rows(f"SELECT count() FROM gateway_ingest_ledger WHERE Block = '{block_id}'")[0][0]
    print(json.dumps({"ledger_at_death": ledger}), flush=True)
    os._exit(9)

batcher._stored_without_views = die
subprocess.run(["chattr", "+i", usage_path], check=True)
batcher.start()
body = otlp_requests.traces_request(3).SerializeToString()
Path(sys.argv[3]).write_bytes(body)  # for the exporter's retry
prepared = prepare(Signal.TRACES, body, decode.Encoding.PROTOBUF, tenant_id=tenant, retention_days=30,
                   ring=KeyRing(tenant, {}), sensitive=frozenset(), encode=batcher.encode, body_bytes=len(body))
batcher.write_encoded(prepared.blocks, timeout=30)
print(json.dumps({"error": "the INSERT did not fail"}))
"""

_START_AFTER_THE_DEATH = """
import json, sys
from pathlib import Path
import django
django.setup()
from gateway.otlp import decode
from gateway.otlp.prepare import prepare
from storage.batcher import Batcher
from storage.clickhouse import Store
from tenants.keyring import KeyRing
from vocabulary import Signal

store = Store(sys.argv[1])
journal = Path(sys.argv[2]) if sys.argv[2] else None
tenant = "7f0c3d4e-0000-4000-8000-000000000003"
left = sorted(path.suffix for path in journal.iterdir()) if journal else []
def rows(sql):
    return store.dangerously_query_unscoped(sql, reason="test").result_rows
before = rows("SELECT sum(ItemsAccepted) FROM gateway_usage")
batcher = Batcher(store, journal=journal)
batcher.start()
sent_again = batcher.reconcile()
body = Path(sys.argv[3]).read_bytes()  # the exporter sends the request again
prepared = prepare(Signal.TRACES, body, decode.Encoding.PROTOBUF, tenant_id=tenant, retention_days=30,
                   ring=KeyRing(tenant, {}), sensitive=frozenset(), encode=batcher.encode, body_bytes=len(body))
batcher.write_encoded(prepared.blocks, timeout=30)
batcher.stop()
print(json.dumps({
    "left": left,
    "usage_before": before,
    "sent_again": sent_again,
    "traces": rows("SELECT count() FROM otel_traces"),
    "usage": rows("SELECT sum(Requests), sum(Items), sum(ItemsAccepted), sum(Bytes) FROM gateway_usage"),
    "ledger": rows("SELECT count() FROM gateway_ingest_ledger"),
    "journal": [path.name for path in journal.iterdir()] if journal else [],
    "body": len(body),
}))
"""


@pytest.mark.parametrize("with_journal", [True, False], ids=["journal", "no-journal"])
def test_a_process_killed_between_an_inserts_parts_is_completed_at_the_next_start(tmp_path, with_journal):
    """The writer's process dies after an INSERT stored its rows and their ledger row but not
    their usage (os._exit inside the writer, where a kill -9 can land: the views' parts are
    written one after the other). The ledger would tell the next start's search that the block
    is complete.
    - With the journal (the embedded mode), the INSERT was kept before it was sent, so the next
      start sends it again, which stores only the usage.
    - Without it (as with a ClickHouse server, where the journal is off), the next start's
      usage check finds the ledger row's usage missing from usage, and meters it.
    Either way the exporter's retry then stores nothing: stored once, metered once."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from tests.test_serve import ROOT, run_script

    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("making gateway_usage unwritable needs root and chattr (CI runs as root)")
    journal = str(tmp_path / "repairs") if with_journal else ""
    body = tmp_path / "request.bin"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway.settings", "GATEWAY_DATA_DIR": str(tmp_path)}
    died = subprocess.run(
        [sys.executable, "-c", _DIE_BETWEEN_THE_VIEWS, f"chdb://{tmp_path / 'clickhouse'}", journal, str(body)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.stdout, died.stderr[-3000:]
    lines = [json.loads(line) for line in died.stdout.splitlines()]
    subprocess.run(["chattr", "-i", lines[0]["usage_path"]], check=True)
    assert died.returncode == 9, died.stdout[-2000:] + died.stderr[-3000:]
    assert lines[-1] == {"ledger_at_death": 1}  # what makes the search blind to it
    result = run_script(_START_AFTER_THE_DEATH, tmp_path, journal, str(body))
    assert result["left"] == ([".insert"] if with_journal else [])  # the INSERT it was in
    assert result["usage_before"] == [[0]]
    assert result["sent_again"] >= 1
    assert result["traces"] == [[3]]
    assert result["usage"] == [[1, 3, 3, result["body"]]]
    assert result["ledger"] == [[1]]
    assert result["journal"] == []


def test_an_insert_is_not_sent_again_once_clickhouse_may_have_forgotten_its_token(store, tenant, tmp_path):
    """While gateway_usage cannot be written every INSERT waits for repair. Once more INSERTs
    into its table have begun after it than ClickHouse remembers tokens for (here 3, in place of
    900), an INSERT is given up rather than sent again, which could store its rows twice: its
    rows stay stored once, and the later INSERTs complete; the writer's usage check then meters
    the rows given up, once."""
    journal = tmp_path / "repairs"
    batcher = Batcher(store, journal=journal)
    batcher.repair_interval = 0.2
    batcher.safe_inserts = 3
    batcher.usage_check_interval = 0.5
    batcher.start()
    numbers = range(20, 25)
    requests = {number: _blocks(batcher, tenant, _request(2, number)) for number in numbers}
    try:
        with unwritable_table(store, "gateway_usage"):
            for number in numbers:
                with pytest.raises(StorageError):
                    batcher.write_encoded(requests[number], timeout=30)
            deadline = time.monotonic() + 10
            # The first given up (its journal file gone), the other four waiting.
            while (batcher.repairs, len(list(journal.glob("*.repair")))) != (4, 4):
                assert time.monotonic() < deadline, (batcher.repairs, list(journal.iterdir()))
                time.sleep(0.05)
        deadline = time.monotonic() + 30
        while batcher.repairs:
            assert time.monotonic() < deadline, "the writer did not complete the inserts"
            time.sleep(0.05)
        # The writer's next usage check meters the one given up, once.
        deadline = time.monotonic() + 30
        while _metered(tenant) != {"accepted": (5, 10, 10, 5 * 123)}:
            assert time.monotonic() < deadline, _metered(tenant)
            time.sleep(0.1)
    finally:
        batcher.stop()
    assert batcher.check_usage() == 0
    assert _stored_by_trace(tenant) == dict.fromkeys(numbers, 2)  # each once
    assert _metered(tenant) == {"accepted": (5, 10, 10, 5 * 123)}
    assert not list(journal.iterdir())


def test_the_usage_check_leaves_an_insert_under_repair_to_its_repair(store, tenant):
    """An INSERT under repair has its ledger row and not its usage; the usage check does not
    meter it, since its repair will: once the repair is done, it is metered once."""
    batcher = Batcher(store)
    batcher.repair_interval = 60  # no background attempt until the stop
    batcher.start()
    blocks = _blocks(batcher, tenant, _request(3, 30))
    try:
        with unwritable_table(store, "gateway_usage"):
            with pytest.raises(StorageError):
                batcher.write_encoded(blocks, timeout=30)
        assert batcher.repairs == 1 and tenant.count("gateway_ingest_ledger") == 1
        assert batcher.check_usage() == 0
        assert _metered(tenant) == {}
    finally:
        batcher.stop()  # its last attempt, now that the table can be written
    assert batcher.repairs == 0
    assert batcher.check_usage() == 0
    assert _stored_by_trace(tenant) == {30: 3}
    assert _metered(tenant) == {"accepted": (1, 3, 3, 123)}


def _ledger_row_without_usage(store, tenant, *, hours_ago: int, block: str) -> None:
    """A block's ledger row, written `hours_ago`, whose usage was not: the ledger's view into
    gateway_usage failed."""
    with unwritable_table(store, "gateway_usage"), pytest.raises(Exception, match="gateway_usage|not permitted"):
        store.command(
            "INSERT INTO gateway_ingest_ledger (TenantId, Block, At, Signal, Hour, Outcome, Requests, Items, "
            f"ItemsAccepted, Bytes) SELECT '{tenant.tenant.id}', '{block}', now() - toIntervalHour({hours_ago}), "
            f"'logs', toStartOfHour(now() - toIntervalHour({hours_ago})), 'accepted', 1, 7, 7, 70"
        )
    assert tenant.count("gateway_ingest_ledger") >= 1


def test_with_a_server_the_usage_check_waits_until_other_processes_repairs_are_over(store, tenant, monkeypatch):
    """With a ClickHouse server, another gateway process may hold an INSERT under repair, for up
    to REPAIR_SECONDS: the usage check meters only the hours in which every INSERT is done."""
    batcher = Batcher(store)
    _ledger_row_without_usage(store, tenant, hours_ago=0, block="now")
    _ledger_row_without_usage(store, tenant, hours_ago=3, block="three-hours-ago")
    monkeypatch.setattr(store, "embedded", False)
    assert batcher.check_usage() == 1  # three hours ago
    assert _metered(tenant, "logs") == {"accepted": (1, 7, 7, 70)}
    monkeypatch.undo()
    assert batcher.check_usage() == 1  # embedded: no other process, so every hour
    assert batcher.check_usage() == 0
    assert _metered(tenant, "logs") == {"accepted": (2, 14, 14, 140)}


def test_two_processes_that_find_the_same_missing_usage_at_once_write_it_once(store, tenant, monkeypatch):
    """Two gateway processes whose usage checks read the ledger and usage before either wrote
    its correction: both write the same correction, with the same token, and ClickHouse keeps
    one."""
    _ledger_row_without_usage(store, tenant, hours_ago=0, block="missing")
    query = store.dangerously_query_unscoped
    seen = []

    def before_either_wrote(sql, parameters=None, *, reason):
        result = query(sql, parameters, reason=reason)
        if reason.startswith("the writer: usage the ledger holds"):
            if seen:
                return seen[0]
            seen.append(result)
        return result

    monkeypatch.setattr(store, "dangerously_query_unscoped", before_either_wrote)
    assert Batcher(store).check_usage() == 1
    assert Batcher(store).check_usage() == 1  # it wrote the same correction again
    assert _metered(tenant, "logs") == {"accepted": (1, 7, 7, 70)}
