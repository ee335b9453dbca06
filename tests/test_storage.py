"""ClickHouse schema, migrations and the batcher, against the real embedded ClickHouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.test import override_settings

from storage.batcher import Batcher, BatcherObserver
from storage.clickhouse import RowsRejected, StorageError, StorageUnavailable, Store
from storage.flatten.traces import flatten_traces
from storage.host import available_cpus
from storage.reader import TenantReader
from storage.schema import EMBEDDED_MERGE_SETTINGS, MIGRATIONS, TELEMETRY_TABLES, TENANT_TABLES
from tests import otlp_requests

ROOT = Path(__file__).resolve().parent.parent


def test_every_telemetry_table_is_partitioned_by_isolation_and_sorted_by_tenant_first(store):
    """Partitions of a tenant's own (GatewayPartition = its id) or shared ones, by day; the
    tenant first in every sort key. Usage, which outlives tenants for billing, by month alone."""
    tables = (*TELEMETRY_TABLES, "otel_traces_trace_id_ts")
    rows = store.query(
        "SELECT name, partition_key, sorting_key FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        {"names": list(tables)},
    ).result_rows
    assert sorted(name for name, _, _ in rows) == sorted(tables)
    for name, partition_key, sorting_key in rows:
        assert partition_key.startswith("(GatewayPartition, toDate("), (name, partition_key)
        assert sorting_key.startswith("TenantId, "), (name, sorting_key)
    ((usage_partition, usage_sort),) = store.query(
        "SELECT partition_key, sorting_key FROM system.tables WHERE database = currentDatabase() "
        "AND name = {name:String}",
        {"name": "gateway_usage"},
    ).result_rows
    assert (usage_partition, usage_sort.split(",")[0]) == ("toYYYYMM(Hour)", "TenantId")


def test_migrations_are_recorded_and_idempotent(store):
    assert store.migrate() == []
    versions = sorted(v for (v,) in store.query("SELECT version FROM gateway_schema_migrations").result_rows)
    assert versions == [migration.version for migration in MIGRATIONS]


_MERGE_THREADS_SCRIPT = """
import django, json
django.setup()
import storage
store = storage.get_store()
rows = store.query("SELECT value FROM system.server_settings WHERE name = 'background_pool_size'").result_rows
print(json.dumps([int(rows[0][0]), store.merge_threads]))
"""


@pytest.mark.parametrize("setting", ["", "3"])
def test_embedded_chdb_gets_its_merge_threads(tmp_path, setting):
    """Half the CPUs (at least one) unless GATEWAY_CHDB_MERGE_THREADS says otherwise. In a new
    process: chDB takes engine options only when a process first opens it."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_CHDB_MERGE_THREADS": setting,
    }
    env.pop("GATEWAY_CLICKHOUSE_URL", None)
    out = subprocess.run(
        [sys.executable, "-c", _MERGE_THREADS_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    applied, wanted = json.loads(out.stdout.strip().splitlines()[-1])
    expected = 3 if setting else max(1, available_cpus() // 2)
    assert applied == wanted == expected


def test_embedded_inserts_leave_skip_indexes_to_the_first_merge(store):
    """A new part has no skip index data; the merge builds it, and queries find the same rows
    before and after."""
    tenant_id = str(uuid.uuid4())
    # Two parts (two INSERTs that differ: the same rows twice would be one, deduplicated).
    for retention_days in (1, 2):
        batch = flatten_traces(otlp_requests.traces_request(20), tenant_id=tenant_id, retention_days=retention_days)
        store.insert("otel_traces", batch.batches[0].column_names, batch.batches[0].columns)
    sql = (
        "SELECT count() FROM otel_traces WHERE TenantId = {tenant_id:String} AND SpanAttributes['i'] = '7' "
        "AND TraceId = {trace_id:String}"
    )
    reader = TenantReader(store, tenant_id)
    parameters = {"trace_id": otlp_requests.TRACE_ID.hex()}

    def index_bytes() -> list[int]:
        return [
            size
            for (size,) in store.dangerously_query_unscoped(
                "SELECT secondary_indices_compressed_bytes FROM system.parts WHERE active AND table = 'otel_traces' "
                "AND position(partition, {tenant_id:String}) > 0",
                {"tenant_id": tenant_id},
                reason="test",
            ).result_rows
        ]

    assert index_bytes() == [0, 0]
    assert reader.query(sql, parameters).result_rows == [(2,)]
    store.command("OPTIMIZE TABLE otel_traces FINAL")
    (merged,) = index_bytes()
    assert merged > 0
    assert reader.query(sql, parameters).result_rows == [(2,)]


def test_embedded_tables_carry_the_merge_tuning(store):
    """chDB's merges share the gateway's CPU: every tenant table gets the embedded merge
    settings, also when migrate runs again on an existing data directory."""
    assert store.embedded
    store.migrate()
    rows = store.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        {"names": list(TENANT_TABLES)},
    ).result_rows
    assert sorted(name for name, _ in rows) == sorted(TENANT_TABLES)
    for name, engine in rows:
        for setting, value in EMBEDDED_MERGE_SETTINGS.items():
            assert f"{setting} = {value}" in engine, (name, engine)


def _batch(tenant_id: str, spans: int = 10):
    return flatten_traces(otlp_requests.traces_request(spans), tenant_id=tenant_id, retention_days=7).batches


def _count(store, tenant_id: str) -> int:
    reader = TenantReader(store, tenant_id)
    return reader.query("SELECT count() FROM otel_traces WHERE TenantId = {tenant_id:String}").result_rows[0][0]


def test_batcher_groups_concurrent_requests_into_few_inserts(store):
    batcher = Batcher(store, linger_seconds=0.05)
    batcher.start()
    tenant_ids = [str(uuid.uuid4()) for _ in range(20)]
    barrier = threading.Barrier(len(tenant_ids))

    def send(tenant_id):
        barrier.wait()
        batcher.write(_batch(tenant_id), timeout=30)

    threads = [threading.Thread(target=send, args=(t,)) for t in tenant_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()
    assert batcher.inserts < len(tenant_ids)
    assert [_count(store, t) for t in tenant_ids] == [10] * len(tenant_ids)


class Collecting(BatcherObserver):
    """Tells a test when the writer has taken a request's rows and is gathering more."""

    def __init__(self):
        self.started = threading.Event()

    def collecting(self, *, rows: int) -> None:
        self.started.set()


def test_a_request_alone_is_written_without_lingering(store):
    batcher = Batcher(store, linger_seconds=30)
    batcher.start()
    tenant_id = str(uuid.uuid4())
    started = time.monotonic()
    batcher.write(_batch(tenant_id), timeout=60)
    elapsed = time.monotonic() - started
    batcher.stop()
    assert elapsed < 10  # not the 30 s linger: nothing else was on its way
    assert _count(store, tenant_id) == 10


def test_an_insert_waits_for_rows_being_prepared(store):
    collecting = Collecting()
    batcher = Batcher(store, linger_seconds=30, observer=collecting)
    batcher.start()
    preparing, waiting = str(uuid.uuid4()), str(uuid.uuid4())
    done = {}

    def write_waiting():
        batcher.write(_batch(waiting), timeout=60)
        done["waiting"] = time.monotonic()

    with batcher.expecting() as expectation:
        assert batcher.expected == 1
        writer = threading.Thread(target=write_waiting)
        writer.start()
        # The other request's rows are taken; these are still being prepared.
        assert collecting.started.wait(30)
        assert "waiting" not in done
        blocks = batcher.encode(_batch(preparing))
        queued_at = time.monotonic()
        batcher.write_encoded(blocks, timeout=60, expectation=expectation)
    writer.join()
    batcher.stop()
    assert done["waiting"] >= queued_at and batcher.expected == 0
    assert batcher.inserts == 1  # one INSERT for both requests
    assert _count(store, preparing) == 10 and _count(store, waiting) == 10


def test_an_expectation_that_ends_without_rows_releases_the_writer(store):
    collecting = Collecting()
    batcher = Batcher(store, linger_seconds=30, observer=collecting)
    batcher.start()
    tenant_id = str(uuid.uuid4())
    with pytest.raises(RuntimeError):
        with batcher.expecting():
            writer = threading.Thread(target=batcher.write, args=(_batch(tenant_id),), kwargs={"timeout": 60})
            started = time.monotonic()
            writer.start()
            assert collecting.started.wait(30)  # the writer lingers for this request's rows
            raise RuntimeError("preparing this request failed")
    writer.join()
    elapsed = time.monotonic() - started
    batcher.stop()
    assert elapsed < 10 and batcher.expected == 0
    assert _count(store, tenant_id) == 10


def test_the_wait_groups_requests_that_arrive_later(store):
    collecting = Collecting()
    batcher = Batcher(store, linger_seconds=0, wait_seconds=5, observer=collecting)
    batcher.start()
    first, later = str(uuid.uuid4()), str(uuid.uuid4())
    writer = threading.Thread(target=batcher.write, args=(_batch(first),), kwargs={"timeout": 60})
    writer.start()
    assert collecting.started.wait(30)  # nothing is being prepared: only the wait holds the INSERT
    batcher.write(_batch(later), timeout=60)
    writer.join()
    batcher.stop()
    assert batcher.inserts == 1
    assert _count(store, first) == 10 and _count(store, later) == 10


def test_one_refused_request_fails_alone(store):
    batcher = Batcher(store, linger_seconds=0.2)
    batcher.start()
    good_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
    bad = _batch(bad_id)
    bad[0].columns[bad[0].column_names.index("Duration")][0] = -5  # UInt64 cannot hold it
    results = {}

    def send(name, batches):
        try:
            batcher.write(batches, timeout=30)
            results[name] = "stored"
        except StorageError as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=send, args=("bad", bad)),
        threading.Thread(target=send, args=("good", _batch(good_id))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.stop()
    assert results["good"] == "stored"
    # Rows the column cannot hold: a retry would fail the same way, and the error says so.
    assert isinstance(results["bad"], RowsRejected) and not results["bad"].retryable
    assert _count(store, good_id) == 10 and _count(store, bad_id) == 0


def test_stop_stores_what_is_queued(store):
    collecting = Collecting()
    batcher = Batcher(store, linger_seconds=30, observer=collecting)
    batcher.start()
    tenant_id = str(uuid.uuid4())
    writer = threading.Thread(target=batcher.write, args=(_batch(tenant_id),), kwargs={"timeout": 30})
    with batcher.expecting():  # another request is preparing rows, so the batcher lingers
        writer.start()
        assert collecting.started.wait(30)  # the batcher took the request and lingers for more
        batcher.stop()
    writer.join()
    assert _count(store, tenant_id) == 10


def test_write_without_a_running_batcher_is_refused(store):
    with pytest.raises(StorageUnavailable):
        Batcher(store).write(_batch(str(uuid.uuid4())), timeout=1)


def test_unreachable_server_is_storage_unavailable():
    store = Store("http://127.0.0.1:9/default")
    with pytest.raises(StorageUnavailable, match="cannot connect"):
        store.insert("otel_traces", ("TenantId",), [["x"]])
    assert store.ping() is False


def test_url_validation_hides_password():
    with pytest.raises(ValueError) as caught:
        Store("mysql://user:secret@host/db")
    assert "secret" not in str(caught.value)


def test_async_insert_mode_still_answers_only_for_stored_rows(store):
    """GATEWAY_CLICKHOUSE_ASYNC_INSERT: the INSERT asks the server to batch it with others
    (async_insert) and to answer once it is written (wait_for_async_insert); a write returns
    with its rows readable. chDB takes the settings; the server-side batching itself needs a
    ClickHouse server, which this machine does not have."""
    async_store = Store(store.url, async_insert=True)
    batcher = Batcher(async_store, linger_seconds=0)
    batcher.start()
    tenant_id = str(uuid.uuid4())
    batcher.write(_batch(tenant_id), timeout=60)
    assert _count(store, tenant_id) == 10  # readable the moment the write returned
    batcher.stop()
    with override_settings(GATEWAY_CLICKHOUSE_ASYNC_INSERT=True):
        from storage import store_from_settings

        assert store_from_settings().async_insert
