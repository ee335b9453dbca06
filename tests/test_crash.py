"""kill -9 of the serving worker while two tenants' exports are being written (one sending
three times as much, so the writer holds a backlog and takes the tenants in turn): gunicorn
starts a new worker, which opens the same chDB directory, and every export that was
acknowledged is stored, once, and metered to its tenant; what was in flight when the worker
died was answered with an error or not at all. Then, with the gateway started again, every
export is sent again, as an exporter retries one it got no answer for: none is stored twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.clients import post_numbered_traces
from tests.test_serve import ROOT, Gateway, _query

pytestmark = pytest.mark.slow
SPANS = 50


def _worker_pid(arbiter: int) -> int | None:
    children = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()
    return int(children[0]) if children else None


def _send(port: int, key: str, number: int) -> int | None:
    return post_numbered_traces(port, key, number, SPANS)


def _second_key(gateway: Gateway) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "create_tenant", "Second"],
        cwd=ROOT,
        env=gateway.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return next(word for word in out.stdout.split() if word.startswith("otlpgw_"))


def test_a_killed_worker_loses_nothing_it_acknowledged(tmp_path):
    data_dir = tmp_path / "data"
    with Gateway(data_dir) as gateway:
        keys = [next(word for word in gateway.text().split() if word.startswith("otlpgw_")), _second_key(gateway)]
        arbiter = gateway.process.pid
        first_worker = _worker_pid(arbiter)
        statuses: dict[int, int | None] = {}
        sender_of: dict[int, int] = {}  # export number -> its tenant's index in keys
        numbers = iter(range(1, 10**6))
        lock, stop = threading.Lock(), threading.Event()

        def sender(tenant: int):
            while not stop.is_set():
                with lock:
                    number = next(numbers)
                sender_of[number] = tenant
                statuses[number] = _send(gateway.http_port, keys[tenant], number)

        threads = [threading.Thread(target=sender, args=(tenant,)) for tenant in (0, 0, 0, 1)]
        for thread in threads:
            thread.start()
        while sum(status == 200 for status in list(statuses.values())) < 20:  # writes under way
            time.sleep(0.05)
        os.kill(first_worker, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _worker_pid(arbiter) in (None, first_worker):  # gunicorn starts a new one
            assert time.monotonic() < deadline, gateway.text()
            time.sleep(0.1)
        acked_before = {n for n, status in list(statuses.items()) if status == 200}
        while sum(status == 200 for status in list(statuses.values())) < len(acked_before) + 20:
            assert time.monotonic() < deadline, gateway.text()  # the new worker serves again
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join()
    acked = {number for number, status in statuses.items() if status == 200}
    rows = _query(data_dir, "SELECT TenantId, TraceId, count() FROM otel_traces GROUP BY TenantId, TraceId")
    stored = {int(trace_id, 16): count for _, trace_id, count in rows}
    assert len(stored) == len(rows)  # no export stored under two tenants
    assert {number: stored.get(number) for number in acked} == dict.fromkeys(acked, SPANS)  # each once, whole
    assert set(stored) - set(statuses) == set()  # nothing stored that was never sent
    tenant_of = {int(trace_id, 16): tenant_id for tenant_id, trace_id, _ in rows}
    assert len(set(tenant_of.values())) == 2 and {sender_of[number] for number in acked} == {0, 1}
    for tenant_id in set(tenant_of.values()):
        assert len({sender_of[number] for number, owner in tenant_of.items() if owner == tenant_id}) == 1
    # Metered from the stored rows, in the same INSERT: what is stored is metered, once, to the
    # tenant that sent it.
    metered = {
        tenant_id: (int(requests), int(accepted))
        for tenant_id, requests, accepted in _query(
            data_dir,
            "SELECT TenantId, sum(Requests), sum(ItemsAccepted) FROM gateway_usage WHERE Outcome = 'accepted' "
            "GROUP BY TenantId",
        )
    }
    expected: dict[str, tuple[int, int]] = {}
    for number, tenant_id in tenant_of.items():
        requests, items = expected.get(tenant_id, (0, 0))
        expected[tenant_id] = (requests + 1, items + stored[number])
    assert metered == expected
    # Every export sent again after the restart (its exporter's retry) is answered as stored,
    # and stores nothing twice.
    with Gateway(data_dir) as gateway:
        for number in sorted(stored):
            assert _send(gateway.http_port, keys[sender_of[number]], number) == 200
    rows = _query(data_dir, "SELECT TraceId, count() FROM otel_traces GROUP BY TraceId")
    assert {int(trace_id, 16): count for trace_id, count in rows} == stored
    # The INSERTs the killed worker was in were kept until done, and the next start sent them
    # again: nothing is left in the journal.
    assert sorted(path.name for path in (data_dir / "repairs").glob("*")) == []
