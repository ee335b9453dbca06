"""Flatten -> protect -> encode in worker processes (gateway.otlp.prepare): the rows stored are
the ones the request thread stores, a worker that dies loses nothing, and the defaults."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.test import override_settings

from gateway.otlp import decode, runtime
from gateway.otlp.pipeline import Pipeline
from gateway.otlp.prepare import PreparePool
from storage.clickhouse import StorageUnavailable, Store
from storage.schema import BLOCK_COLUMN, PARTITION_COLUMN, TELEMETRY_TABLES
from tenants.encryption import key_ring
from tenants.keyring import PREFIX, KeyRing
from tests import otlp_requests
from tests.clients import http_post
from vocabulary import Signal

pytestmark = pytest.mark.django_db(transaction=True)


def _traces_with_secrets() -> bytes:
    request = otlp_requests.traces_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].attributes.append(otlp_requests.kv("user.email", "ada@example.com"))  # encrypted by default
    event = spans[1].events.add(name="query", time_unix_nano=otlp_requests.NOW_NS)
    event.attributes.append(otlp_requests.kv("db.statement", "SELECT 1"))
    spans[2].span_id = b"\x01"  # rejected: partial success
    return request.SerializeToString()


REQUESTS = [
    (Signal.TRACES, decode.Encoding.PROTOBUF, _traces_with_secrets()),
    (Signal.TRACES, decode.Encoding.JSON, otlp_requests.dumps(otlp_requests.traces_json())),
    (Signal.METRICS, decode.Encoding.JSON, otlp_requests.dumps(otlp_requests.metrics_json())),
    (Signal.LOGS, decode.Encoding.JSON, otlp_requests.dumps(otlp_requests.logs_json())),
]


def _stored(tenant) -> dict[str, list]:
    """Every row of every telemetry table of `tenant`, decrypted, without the tenant's id. A
    block's id is derived from the tenant (storage.requests.request_key), so of it only whether
    the row leads a block is kept."""
    return {
        table: tenant.rows(
            f"SELECT * EXCEPT (TenantId, {BLOCK_COLUMN}, {PARTITION_COLUMN}), {BLOCK_COLUMN} != '' AS LeadsBlock, "
            f"{PARTITION_COLUMN} = TenantId AS OwnPartition FROM {table} "
            "WHERE TenantId = {tenant_id:String} ORDER BY ALL"
        )
        for table in TELEMETRY_TABLES
    }


def _traces(spans: int, n: int) -> bytes:
    """The n-th of distinct trace requests (each its own trace): a body sent again is stored once."""
    return otlp_requests.traces_request(spans, trace_id=(n + 1).to_bytes(16, "big")).SerializeToString()


def test_worker_processes_store_what_the_request_thread_stores(pipeline, store, make_tenant):
    assert pipeline.workers is not None and pipeline.workers.pids()
    in_thread = Pipeline(pipeline.batcher, pipeline.config, pipeline.admission, workers=None)
    by_worker, by_thread = make_tenant(), make_tenant()
    for signal_, encoding, body in REQUESTS:
        worker, thread = (
            runner.run(signal=signal_, api_key=tenant.key, read_body=lambda body=body: body, encoding=encoding)
            for runner, tenant in ((pipeline, by_worker), (in_thread, by_thread))
        )
        assert (worker.accepted, worker.rejected, worker.outcome, worker.response) == (
            thread.accepted,
            thread.rejected,
            thread.outcome,
            thread.response,
        )
        assert worker.accepted > 0
    rows = _stored(by_worker)
    assert sum(map(len, rows.values())) == 2 + 1 + 5 + 1  # 2 of 3 spans, JSON span, 5 metric kinds, 1 log
    assert rows == _stored(by_thread)
    # Encrypted at rest by the worker as by the request thread: same ring, values sealed.
    raw = store.dangerously_query_unscoped(
        "SELECT SpanAttributes['user.email'] FROM otel_traces WHERE TenantId = {t:String} AND "
        "mapContains(SpanAttributes, 'user.email')",
        {"t": str(by_worker.tenant.id)},
        reason="test",
    ).result_rows
    assert raw[0][0].startswith(f"{PREFIX}{key_ring(str(by_worker.tenant.id)).current}:")


def test_an_undecodable_attribute_found_by_a_worker_is_a_400(pipeline, tenant, http_url):
    request = otlp_requests.traces_request(1)
    request.resource_spans[0].scope_spans[0].spans[0].attributes.append(otlp_requests.kv("k", "v"))
    body = request.SerializeToString().replace(b"\x0a\x01v", b"\x0a\x01\xff")  # the value "v" -> invalid UTF-8
    reply = http_post(http_url, "traces", body, key=tenant.key)
    assert reply.status == 400 and "not valid" in reply.status_message().message
    assert tenant.count("otel_traces") == 0
    assert pipeline.batcher.expected == 0  # the refused request no longer holds INSERTs back


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            os.waitpid(pid, os.WNOHANG)  # our child: reap it
        except ChildProcessError:
            pass
        time.sleep(0.02)


def test_a_killed_worker_loses_nothing(pipeline, tenant, http_url):
    workers = pipeline.workers
    before, restarts = workers.pids(), workers.restarts
    _kill(before[0])
    for n in range(3):  # the first finds the pool broken and is prepared in its own thread
        assert http_post(http_url, "traces", _traces(5, n), key=tenant.key).status == 200
    assert tenant.count("otel_traces") == 15
    assert workers.restarts == restarts + 1
    assert workers.pids() and not set(workers.pids()) & set(before)


def test_several_workers_serve_concurrent_requests(store, make_tenant):
    with override_settings(GATEWAY_PREPARE_PROCESSES=2):
        assert runtime.prepare_processes(store) == 2
        two = runtime.build_pipeline(store=store, migrate=False)
    try:
        assert len(two.workers.pids()) == 2
        tenants = [make_tenant() for _ in range(2)]

        def send(i: int):
            body = _traces(50, i)
            return two.run(signal=Signal.TRACES, api_key=tenants[i % 2].key, read_body=lambda: body).accepted

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(send, range(16))) == [50] * 16
        assert [t.count("otel_traces") for t in tenants] == [400, 400]
    finally:
        two.stop()


def test_a_stopped_pool_refuses_instead_of_losing(store):
    pool = PreparePool(1, type_names=store.type_names, server_tz=lambda: store.server_tz)
    pool.start()
    pool.stop()
    body = otlp_requests.logs_request(1).SerializeToString()
    with pytest.raises(StorageUnavailable, match="shutting down"):
        pool.prepare(
            Signal.LOGS,
            body,
            decode.Encoding.PROTOBUF,
            tenant_id="t",
            retention_days=1,
            ring=KeyRing("t", {}),
            sensitive=frozenset(),
            timeout=5,
            body_bytes=len(body),
        )


def test_default_processes(store):
    with override_settings(GATEWAY_PREPARE_PROCESSES=None):
        assert runtime.prepare_processes(store) >= 1  # embedded: one per available CPU
        assert runtime.prepare_processes(Store("http://127.0.0.1:9/default")) == 0  # a server: none
    with override_settings(GATEWAY_PREPARE_PROCESSES=0):
        assert runtime.prepare_processes(store) == 0


def test_the_pipeline_takes_the_batch_settings(store):
    with override_settings(GATEWAY_BATCH_LINGER_MS=7, GATEWAY_BATCH_WAIT_MS=250, GATEWAY_PREPARE_PROCESSES=0):
        built = runtime.build_pipeline(store=store, migrate=False)
    try:
        assert built.batcher.linger_seconds == 0.007 and built.batcher.wait_seconds == 0.25
        assert built.workers is None
    finally:
        built.stop()


def test_workers_hold_what_preparing_needs_and_not_django(pipeline):
    """A worker runs decode, flatten, protect and the Native encoder; none of them needs Django,
    the gRPC server or chDB, and loading them would cost each worker tens of megabytes."""
    loaded = pipeline.workers.loaded_packages()
    assert {"google", "storage", "tenants", "clickhouse_connect", "cryptography"} <= loaded
    assert not loaded & {"django", "rest_framework", "grpc", "chdb", "billing"}


def _state(pid: int) -> str | None:
    """The process's state letter (Z: a zombie, dead), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(line.split()[1] for line in status if line.startswith("State:"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_workers_exit_when_their_owner_is_killed():
    """kill -9 on the serving process: its prepare workers do not wait for work for ever."""
    import subprocess
    import sys

    script = (
        "import json, sys, time\n"
        "from gateway.otlp.prepare import PreparePool\n"
        "pool = PreparePool(2, type_names=lambda tables: {}, server_tz=lambda: None)\n"
        "print(json.dumps(pool.start()), flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        import json

        workers = json.loads(owner.stdout.readline())
        assert len(workers) == 2 and all(_state(pid) not in (None, "Z") for pid in workers)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 15
        while any(_state(pid) not in (None, "Z") for pid in workers):
            assert time.monotonic() < deadline, f"workers still running: {[(p, _state(p)) for p in workers]}"
            time.sleep(0.1)
    finally:
        owner.kill()
        owner.wait(10)
