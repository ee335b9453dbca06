"""Per-tenant fair turns in front of the prepare workers (gateway.otlp.fair)."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from gateway.otlp.fair import FairTurns, NoTurn
from storage.batcher import BUSY_LANE, Batcher, BatcherObserver


def _wait_until(condition) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_tenant_with_a_backlog_takes_turns_with_the_others():
    turns, order, threads = FairTurns(1), [], []
    holding = turns.turn("noisy", timeout=1)
    holding.__enter__()
    arrivals = [("noisy", "n1"), ("noisy", "n2"), ("noisy", "n3"), ("quiet", "q1"), ("other", "o1"), ("noisy", "n4")]
    for number, (tenant, name) in enumerate(arrivals, start=1):

        def take(tenant=tenant, name=name):
            with turns.turn(tenant, timeout=10):
                order.append(name)

        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
        _wait_until(lambda number=number: turns.waiting == number)  # they queue in this order
    holding.__exit__(None, None, None)
    for thread in threads:
        thread.join()
    # First come, first served would be n1 n2 n3 q1 o1 n4: the quiet tenants after the backlog.
    assert order == ["n1", "q1", "o1", "n2", "n3", "n4"]


def test_no_more_than_the_slots_hold_a_turn_at_once():
    turns, lock, inside, most = FairTurns(2), threading.Lock(), [0], [0]

    def take(tenant: str):
        with turns.turn(tenant, timeout=10):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.002)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=take, args=(f"t{i % 3}",)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2 and turns.waiting == 0


def test_a_wait_that_times_out_gives_up_its_place():
    turns = FairTurns(1)
    with turns.turn("a", timeout=1):
        with pytest.raises(NoTurn):
            with turns.turn("b", timeout=0.05):
                pass
        assert turns.waiting == 0
    with turns.turn("b", timeout=0.05):  # the slot came back when "a" let go
        pass


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_while_another_tenant_is_active_a_tenant_holds_only_its_share_of_the_slots():
    """Two workers, two active tenants: the busy one holds one of them and waits for the other
    even while it is free (it stays free for the other tenant's next request); once the other
    tenant has been quiet for the window, the busy one has both again."""
    clock = _Clock()
    turns = FairTurns(2, window=1.0, clock=clock)
    with turns.turn("busy", timeout=1), turns.turn("busy", timeout=1):  # alone: both slots
        assert turns.share("busy") == 2
    with turns.turn("quiet", timeout=1):
        pass
    granted = threading.Event()
    with turns.turn("busy", timeout=1):
        assert turns.share("busy") == 1

        def second():
            with turns.turn("busy", timeout=10):
                granted.set()

        thread = threading.Thread(target=second)
        thread.start()
        _wait_until(lambda: turns.waiting == 1)
        time.sleep(0.2)
        assert not granted.is_set()  # a slot is free, but it is the quiet tenant's share
        with turns.turn("quiet", timeout=0.1):  # which the quiet tenant gets at once
            pass
        clock.now += 2  # the quiet tenant has sent nothing for longer than the window
        _wait_until(granted.is_set)
        thread.join()


def test_a_busy_tenant_keeps_all_workers_but_one_for_each_other_active_tenant():
    clock = _Clock()
    turns = FairTurns(8, window=1.0, clock=clock)
    for tenant in ("busy", "quiet"):
        with turns.turn(tenant, timeout=1):
            pass
    assert turns.share("busy") == 7
    for tenant in ("a", "b", "c", "d", "e", "f", "g", "h"):
        with turns.turn(tenant, timeout=1):
            pass
    assert turns.share("busy") == 1
    clock.now += 2
    assert turns.share("busy") == 8  # nobody asked for a turn within the window


class _TraceInserts(BatcherObserver):
    """Notes the rows of each INSERT into otel_traces."""

    def __init__(self):
        self.rows: list[int] = []

    def inserted(self, *, table: str, rows: int, seconds: float, ok: bool) -> None:
        if table == "otel_traces":
            self.rows.append(rows)


@pytest.mark.django_db(transaction=True)
def test_the_writer_takes_turns_across_tenants_and_caps_a_backlog_per_insert(store, make_tenant):
    """A busy tenant's backlog waits for the writer (ClickHouse held by a long query). A quiet
    tenant's request that arrives behind it goes into the very next flush, in an INSERT of its
    own sent first, instead of behind the backlog; the busy tenant's INSERTs hold no more than
    `fair_rows` rows each; every request is stored once."""
    from tests.test_exactly_once import _blocks, _request, _stored_by_trace

    inserts = _TraceInserts()
    busy_tenant, quiet_tenant = make_tenant("Busy"), make_tenant("Quiet")
    # One connection, as with GATEWAY_BATCH_BUSY_LANE off (the engine held holds every INSERT).
    batcher = Batcher(store, linger_seconds=0, fair_rows=50, observer=inserts, busy_lane=False)
    batcher.start()
    finished: list[str] = []
    lock = threading.Lock()

    requests = {f"busy{k}": _blocks(batcher, busy_tenant, _request(40, 100 + k)) for k in range(1, 6)}
    requests["quiet"] = _blocks(batcher, quiet_tenant, _request(5, 200))

    def send(name: str) -> None:
        batcher.write_encoded(requests[name], timeout=30)
        with lock:
            finished.append(name)

    try:
        engine = threading.Thread(target=lambda: store.query("SELECT sleepEachRow(0.5) FROM numbers(3)"))
        engine.start()  # holds the engine ~1.5 s: the writer's first INSERT waits for it
        time.sleep(0.2)
        threads = [threading.Thread(target=send, args=(name,)) for name in requests]
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # they queue in this order, busy1 taken by the writer first
        assert batcher.drain(30)  # everything queued before it is written when it returns
        assert _stored_by_trace(busy_tenant) == {100 + k: 40 for k in range(1, 6)}
        assert _stored_by_trace(quiet_tenant) == {200: 5}
        engine.join()
        for thread in threads:
            thread.join()
    finally:
        batcher.stop()
    # First come, first served would write busy1, then busy2-5 and quiet in one INSERT of 165.
    # Turns alone would write quiet with busy2 (45 rows); the quiet tenant's rows go in an
    # INSERT of their own, first, answered before busy2's is sent.
    assert inserts.rows == [40, 5, 40, 40, 40, 40]
    assert finished.index("quiet") < finished.index("busy2")
    assert [name for name in finished if name.startswith("busy")] == [f"busy{k}" for k in range(1, 6)]
    assert _stored_by_trace(busy_tenant) == {100 + k: 40 for k in range(1, 6)}  # once each


@pytest.mark.django_db(transaction=True)
def test_a_light_request_that_arrives_during_a_turn_goes_before_the_busy_tenants_insert(store, make_tenant):
    """A quiet tenant's request that arrives while the writer writes another quiet request,
    with a busy tenant's INSERT still to come in the same turn, is written before that INSERT
    (it waits for the INSERT in progress only), and the busy tenant's INSERT follows it."""
    from tests.test_exactly_once import _blocks, _request, _stored_by_trace

    busy_tenant, quiet_tenant = make_tenant("Busy"), make_tenant("Quiet")
    requests = {}
    finished: list[str] = []
    lock = threading.Lock()
    threads: list[threading.Thread] = []

    def send(name: str) -> None:
        batcher.write_encoded(requests[name], timeout=30)
        with lock:
            finished.append(name)

    def start(name: str) -> None:
        thread = threading.Thread(target=send, args=(name,))
        threads.append(thread)
        thread.start()

    class Inserts(_TraceInserts):
        def inserted(self, *, table: str, rows: int, seconds: float, ok: bool) -> None:
            super().inserted(table=table, rows=rows, seconds=seconds, ok=ok)
            if table == "otel_traces" and self.rows == [40, 5]:  # quiet1 written, busy2's INSERT next
                start("quiet2")  # (in the writer's thread: it arrives before the writer goes on)
                time.sleep(0.3)

    inserts = Inserts()
    batcher = Batcher(store, linger_seconds=0, fair_rows=50, observer=inserts, busy_lane=False)
    requests.update({f"busy{k}": _blocks(batcher, busy_tenant, _request(40, 300 + k)) for k in range(1, 4)})
    requests.update({f"quiet{k}": _blocks(batcher, quiet_tenant, _request(5, 400 + k)) for k in (1, 2)})
    batcher.start()
    try:
        engine = threading.Thread(target=lambda: store.query("SELECT sleepEachRow(0.5) FROM numbers(3)"))
        engine.start()  # holds the engine: busy2, busy3 and quiet1 queue behind busy1's INSERT
        time.sleep(0.2)
        for name in ("busy1", "busy2", "busy3", "quiet1"):
            start(name)
            time.sleep(0.05)
        engine.join()
        deadline = time.monotonic() + 30
        while len(finished) < 5:
            assert time.monotonic() < deadline, finished
            time.sleep(0.05)
        for thread in threads:
            thread.join()
    finally:
        batcher.stop()
    # Without it quiet2 would wait for busy2's INSERT: [40, 5, 40, 5, 40].
    assert inserts.rows == [40, 5, 5, 40, 40]
    assert finished.index("quiet2") < finished.index("busy2")
    assert _stored_by_trace(busy_tenant) == {301: 40, 302: 40, 303: 40}
    assert _stored_by_trace(quiet_tenant) == {401: 5, 402: 5}


@pytest.mark.django_db(transaction=True)
def test_a_quiet_tenant_is_written_while_a_busy_tenants_insert_is_in_progress(store, make_tenant):
    """The busy lane: while a busy tenant's INSERT takes long (its connection held by a long
    query), a quiet tenant's request is written and answered on the writer's own connection.
    The busy tenant's next request waits for its INSERT in progress and goes after it; drain()
    waits for both; every request is stored once."""
    from tests.test_exactly_once import _blocks, _request, _stored_by_trace

    inserts = _TraceInserts()
    busy_tenant, quiet_tenant = make_tenant("Busy"), make_tenant("Quiet")
    batcher = Batcher(store, linger_seconds=0, fair_rows=50, observer=inserts)
    requests = {f"busy{k}": _blocks(batcher, busy_tenant, _request(40, 500 + k)) for k in (1, 2)}
    requests.update({f"quiet{k}": _blocks(batcher, quiet_tenant, _request(5, 600 + k)) for k in (1, 2)})
    finished: list[str] = []
    took: dict[str, float] = {}
    lock = threading.Lock()
    threads: list[threading.Thread] = []

    def send(name: str) -> None:
        started = time.monotonic()
        batcher.write_encoded(requests[name], timeout=30)
        with lock:
            finished.append(name)
            took[name] = time.monotonic() - started

    def start(name: str) -> None:
        threads.append(threading.Thread(target=send, args=(name,)))
        threads[-1].start()

    batcher.start()
    try:
        send("quiet1")  # the quiet tenant is active: the writer is contended from here on
        lane = threading.Thread(
            target=lambda: store._get_client(BUSY_LANE).query("SELECT sleepEachRow(0.5) FROM numbers(3)")
        )
        lane.start()  # holds the busy lane's connection ~1.5 s: busy1's INSERT waits for it
        time.sleep(0.2)
        for name in ("busy1", "busy2", "quiet2"):
            start(name)
            time.sleep(0.1)
        _wait_until(lambda: "quiet2" in finished)
        assert "busy1" not in finished  # still waiting for its connection
        (busy_thread,) = [thread for thread in threading.enumerate() if thread.name == "clickhouse-batcher-busy"]
        assert os.getpriority(os.PRIO_PROCESS, busy_thread.native_id) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        assert os.getpriority(os.PRIO_PROCESS, batcher._thread.native_id) == os.getpriority(os.PRIO_PROCESS, 0)
        assert batcher.drain(30)  # and drain() for it, and for busy2 behind it
        assert _stored_by_trace(busy_tenant) == {501: 40, 502: 40}
        lane.join()
        for thread in threads:
            thread.join()
    finally:
        batcher.stop()
    assert finished == ["quiet1", "quiet2", "busy1", "busy2"]
    assert took["quiet2"] < 1.0, took  # not the ~1.3 s busy1 waited
    assert sorted(inserts.rows) == [5, 5, 40, 40]
    assert _stored_by_trace(quiet_tenant) == {601: 5, 602: 5}


@pytest.mark.django_db(transaction=True)
def test_stopping_the_writer_answers_the_busy_lanes_requests_first(store, make_tenant):
    """A stop while a busy tenant's INSERT is on the busy lane, and another of its requests
    waits behind it: stop() returns once both are stored and answered, none is dropped."""
    from tests.test_exactly_once import _blocks, _request, _stored_by_trace

    busy_tenant, quiet_tenant = make_tenant("Busy"), make_tenant("Quiet")
    batcher = Batcher(store, linger_seconds=0, fair_rows=50)
    requests = {f"busy{k}": _blocks(batcher, busy_tenant, _request(40, 700 + k)) for k in (1, 2)}
    quiet = _blocks(batcher, quiet_tenant, _request(5, 800))
    errors: dict[str, Exception | None] = {}

    def send(name: str) -> None:
        try:
            batcher.write_encoded(requests[name], timeout=30)
            errors[name] = None
        except Exception as exc:
            errors[name] = exc

    batcher.start()
    batcher.write_encoded(quiet, timeout=30)
    lane = threading.Thread(
        target=lambda: store._get_client(BUSY_LANE).query("SELECT sleepEachRow(0.5) FROM numbers(2)")
    )
    lane.start()
    time.sleep(0.2)
    threads = [threading.Thread(target=send, args=(name,)) for name in requests]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    batcher.stop()
    for thread in threads:
        thread.join(5)
    lane.join()
    assert errors == {"busy1": None, "busy2": None}
    assert _stored_by_trace(busy_tenant) == {701: 40, 702: 40}


@pytest.mark.django_db(transaction=True)
def test_usage_records_of_refused_requests_do_not_make_a_tenants_inserts_smaller(store, make_tenant):
    """A tenant alone with a backlog, while refused requests from unknown senders are metered
    (a flood of bad keys, say): the records join the next INSERT, the tenant's INSERTs stay
    whole instead of being cut to `fair_rows` as if a second tenant were sending."""
    from billing.metering import UNKNOWN_TENANT, usage_batch
    from tests.test_exactly_once import _blocks, _request, _stored_by_trace
    from vocabulary import Outcome, Signal

    inserts = _TraceInserts()
    tenant = make_tenant("Alone")
    batcher = Batcher(store, linger_seconds=0, fair_rows=50, observer=inserts)
    batcher.start()
    requests = [_blocks(batcher, tenant, _request(40, 300 + k)) for k in range(1, 6)]
    # An hour of this test's own (within the usage table's TTL), not the one other tests meter in.
    hour = (datetime.now(UTC) - timedelta(days=300)).replace(minute=0, second=0, microsecond=0)
    record = usage_batch(
        tenant_id=None,
        signal=Signal.TRACES,
        outcome=Outcome.UNAUTHORIZED,
        items=0,
        items_accepted=0,
        body_bytes=7,
        at=hour,
    )

    def records() -> tuple[int, int]:
        return store.dangerously_query_unscoped(
            "SELECT sum(Requests), sum(Bytes) FROM gateway_usage WHERE TenantId = {tenant:String} "
            "AND Outcome = 'unauthorized' AND Hour = {hour:DateTime}",
            {"tenant": UNKNOWN_TENANT, "hour": hour.replace(tzinfo=None)},
            reason="a test: the records of unknown senders",
        ).result_rows[0]

    before = records()
    batcher.encode([record])  # the column types, read now: not while the engine is held below
    try:
        engine = threading.Thread(target=lambda: store.query("SELECT sleepEachRow(0.5) FROM numbers(3)"))
        engine.start()
        time.sleep(0.2)
        threads = [
            threading.Thread(target=batcher.write_encoded, args=(blocks,), kwargs={"timeout": 30})
            for blocks in requests
        ]
        for number, thread in enumerate(threads):
            thread.start()
            time.sleep(0.05)
            if number:
                batcher.write_later([record])
        assert batcher.drain(30)
        engine.join()
        for thread in threads:
            thread.join()
    finally:
        batcher.stop()
    assert inserts.rows == [40, 160]  # counted as a tenant's, the records would have cut it to 40s
    assert _stored_by_trace(tenant) == {300 + k: 40 for k in range(1, 6)}
    after = records()
    assert (after[0] - before[0], after[1] - before[1]) == (4, 28)  # the four records, stored
