"""Groups the rows of concurrent requests into one columnar INSERT per table, each request's
rows stored once (storage.requests: the ingest ledger, deduplication tokens, `_Repair`,
`Batcher.reconcile`).

A request hands its batches to `write()` and is blocked until they are stored (or failed),
so nothing is acknowledged before it is in ClickHouse. `write()` encodes the request's rows
(ClickHouse Native format) in the request's own thread; one thread does all inserts, joining
the encoded blocks of the requests waiting into one INSERT per table, which is also what
chDB's one-writer-per-process model wants. Keeping the encoding out of that thread keeps the
writer, the one thing every request waits for in turn, off the GIL for most of its time.
(While more than one tenant is active, the busy tenants' INSERTs are sent by a second thread on
a connection of its own, at a lower CPU priority: `Batcher._send_busy`.)

How long an INSERT waits for more:
- `linger_seconds`, for rows that are on their way: a request says so with `expecting()` before
  it prepares its rows (flatten, protect, encode). Requests that overlap share an INSERT; a
  request alone is written at once. Every INSERT costs chDB a fixed ~7 ms of CPU, so sharing
  matters (docs/BENCHMARKS.md), but waiting for rows nobody is preparing only adds latency:
  at half the benchmark's load, lingering every time made the median request 62 ms, not 33 ms.
- `wait_seconds` (0 by default), for requests that have not arrived yet. With a ClickHouse
  server fed by many gateway processes, each seeing few requests, this trades latency for
  fewer, larger INSERTs (fewer parts for the server to merge).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from storage.clickhouse import MAIN_LANE, StorageError, StorageUnavailable, Store
from storage.flatten import TableBatch
from storage.partitions import MAX_PARTITIONS_PER_INSERT, batch_tenant
from storage.requests import RequestMark, request_blocks
from storage.schema import (
    BLOCK_COLUMN,
    BLOCK_ROWS_COLUMN,
    DAY_PARTITIONED_TIME_COLUMNS,
    DEDUPLICATION_WINDOW,
    ITEMS_REJECTED_COLUMN,
    LEDGER_TABLE,
    LEDGER_USAGE_COLUMNS,
    REQUEST_BYTES_COLUMN,
    TABLE_SIGNALS,
    TELEMETRY_TABLES,
    USAGE_COLUMNS,
    USAGE_TABLE,
)

log = logging.getLogger(__name__)


@dataclass
class EncodedBlock:
    """One TableBatch, encoded (ClickHouse Native)."""

    table: str
    column_names: tuple[str, ...]
    rows: int
    data: bytes
    partitions: frozenset = frozenset()  # the table partitions its rows go to (storage.partitions)
    block_id: str = ""  # a request's block (storage.requests); "" for usage records
    tenant_id: str = ""
    # What tells this block from any other in an INSERT's deduplication token: its id, or for a
    # usage record (two of which may be alike, and both count) a random one of its own.
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)


def encode_blocks(
    batches: list[TableBatch], *, mark: RequestMark | None, server_tz, encode: Callable[[TableBatch], bytes]
) -> list[EncodedBlock]:
    """`batches` as the blocks the writer stores (storage.requests), each encoded by `encode`."""
    return [
        EncodedBlock(
            block.batch.table,
            tuple(block.batch.column_names),
            block.batch.rows,
            encode(block.batch),
            block.partitions,
            block.block_id,
            batch_tenant(block.batch),
        )
        for block in request_blocks(batches, mark=mark, server_tz=server_tz)
    ]


@dataclass
class _Pending:
    blocks: list[EncodedBlock]
    done: threading.Event = field(default_factory=threading.Event)
    error: StorageError | None = None
    # queued -> started (the writer took it into an INSERT) or abandoned (its request stopped
    # waiting first, and was told nothing was stored: the writer leaves it out).
    state: str = "queued"
    state_lock: threading.Lock = field(default_factory=threading.Lock)
    # Usage records of refused requests (`write_later`): nobody waits for them, and while their
    # table cannot be written the writer keeps them to write later (`Batcher._later`).
    background: bool = False

    @property
    def rows(self) -> int:
        return sum(block.rows for block in self.blocks)

    def start(self) -> bool:
        with self.state_lock:
            if self.state == "abandoned":
                return False
            self.state = "started"
            return True

    def abandon(self) -> bool:
        """True if the writer had not taken it: then it never will."""
        with self.state_lock:
            if self.state == "started":
                return False
            self.state = "abandoned"
            return True


@dataclass
class _Repair:
    """An INSERT that stored its rows but not what a view derives from them (StorageError.partial):
    the writer sends it again, the same, until the views have it too."""

    table: str
    blocks: list[EncodedBlock]
    token: str
    since: float
    next_at: float
    attempts: int = 1
    inserts_at: int = 0  # INSERTs into its table the writer had begun when this one failed


# How an INSERT whose views failed is sent again: at once a few times while its requests wait,
# then in the background (`_Repair`), every REPAIR_INTERVAL seconds for up to REPAIR_SECONDS.
RETRY_PAUSES = (0.05, 0.2, 0.5)
REPAIR_INTERVAL = 2.0
REPAIR_SECONDS = 3600.0
MAX_REPAIRS = 100
# A tenant whose rows were written this recently is active: while another is too, an INSERT
# takes at most `Batcher.fair_rows` rows of each.
FAIR_WINDOW_SECONDS = 1.0
# Most usage records of refused requests kept while their table cannot be written.
MAX_LATER = 10_000
# How far back `Batcher.reconcile` looks, in parts written (or merged) that recently.
RECONCILE_MINUTES = 60
# `Batcher.check_usage`: how often the writer runs it (with a ClickHouse server; embedded, only
# after a repair was given up, since the journal completes the rest), the hours it looks back
# (at start, the ledger's first day), and how long after a repair's last attempt an INSERT may
# still be writing.
USAGE_CHECK_SECONDS = 1200.0
USAGE_CHECK_HOURS = 4
USAGE_CHECK_HOURS_AT_START = 24
USAGE_SETTLE_SECONDS = 300
# The usage a ledger row carries that `check_usage` compares (USAGE_COLUMNS' counts).
_COUNTS = ("Requests", "Items", "ItemsAccepted", "Bytes")


def insert_token(blocks: list[EncodedBlock]) -> str:
    """The insert_deduplication_token of one INSERT of `blocks`: the same for the same blocks."""
    digest = hashlib.blake2b(digest_size=16)
    for block in blocks:
        digest.update((block.block_id or block.nonce).encode())
        digest.update(b"\0")
    return digest.hexdigest()


# The connection (Store lanes) busy tenants' INSERTs are sent on, by a thread of their own.
BUSY_LANE = "busy"

_STOP = object()
_WAKE = object()  # an expectation ended without rows: the writer stops waiting for them


class Expectation:
    """Rows one request is preparing for the batcher (`Batcher.expecting`)."""

    def __init__(self, batcher: Batcher):
        self._batcher = batcher
        self.open = True

    def __enter__(self) -> Expectation:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.open:  # the request failed before its rows were queued
            self._batcher._end_expectation(self, queued=None)


class BatcherObserver:
    """Told what the batcher does (gateway.metrics.BatcherMetrics turns it into metrics)."""

    def queue_depth(self, depth: int) -> None:
        pass

    def collecting(self, *, rows: int) -> None:
        """The writer took a request's rows and now gathers what joins them into one INSERT."""

    def inserted(self, *, table: str, rows: int, seconds: float, ok: bool) -> None:
        pass

    def flushed(self, *, seconds: float) -> None:
        pass


class Batcher:
    repair_interval = REPAIR_INTERVAL  # seconds between the attempts of a `_Repair`
    usage_check_interval = USAGE_CHECK_SECONDS  # seconds between the writer's `check_usage`
    # A `_Repair` is given up once this many INSERTs into its table have begun after it:
    # ClickHouse remembers the tokens of a table's last DEDUPLICATION_WINDOW INSERTs, and sent
    # again later, its rows would be stored twice. (With room for the INSERTs of the 2 s
    # between two looks, so that a journal file left behind is always still safe to send.)
    safe_inserts = DEDUPLICATION_WINDOW - 100

    def __init__(
        self,
        store: Store,
        *,
        max_rows: int = 50_000,
        linger_seconds: float = 0.002,
        wait_seconds: float = 0.0,
        fair_rows: int = 2_000,
        observer: BatcherObserver | None = None,
        journal: Path | None = None,
        busy_lane: bool = True,
        busy_niceness: int = 10,
    ):
        self.store = store
        self.max_rows = max_rows
        self.linger_seconds = linger_seconds
        self.wait_seconds = wait_seconds
        self.observer = observer or BatcherObserver()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._expected_lock = threading.Lock()
        self._expected = 0
        self.inserts = 0  # INSERT statements issued; tells how well requests were grouped
        # table -> (when, error) of its last INSERT, while its INSERTs fail for a reason that can
        # pass (the server, the disk); cleared by the next one that succeeds.
        self._failing: dict[str, tuple[float, str]] = {}
        # INSERTs whose rows are stored but whose views failed, sent again until they succeed
        # (writer thread only), and the ids of the request blocks they hold.
        self._repairs: list[_Repair] = []
        self._repairing: set[str] = set()
        self.ledger = IngestLedger(store)
        self.fair_rows = fair_rows
        # Writer thread only: requests taken from the queue and not yet written, by tenant (in
        # the order they came), their rows, when each tenant's rows were last written, and
        # drain()'s markers with the requests each waits for. Usage records of refused
        # requests, a row or two each and often of no known tenant, are held apart: they join
        # the next INSERT whole and do not count as a tenant's, so a flood of refused requests
        # does not make a tenant's INSERTs smaller.
        self._held: dict[str, deque[_Pending]] = {}
        self._records: list[_Pending] = []
        self._held_rows = 0
        self._served: dict[str, float] = {}
        self._contended = False  # more than one tenant active at the last `_take_fair`
        self._stop_seen = False  # `_flush_late_light`'s `_collect` took the stop from the queue
        self._markers: list[tuple[_Pending, list[_Pending]]] = []
        # Usage records of refused requests whose INSERT failed for a reason that can pass,
        # written again with the repairs (writer thread only), and when that is next due.
        self._later: deque[_Pending] = deque()
        self._later_at = 0.0
        # A directory where each INSERT under repair is kept until it is complete, so that the
        # next start completes it if this process dies first (`reconcile`). Embedded mode only:
        # the INSERT is sent again with its token, which ClickHouse remembers for the table's
        # last 1000 INSERTs, and there no other process writes before the next start does.
        self.journal = journal
        self._journal_ok = True  # the last entry could be written (errors are logged once)
        self._table_inserts: dict[str, int] = {}  # INSERTs begun, by table (writer thread only)
        # When the writer next runs `check_usage` (writer thread; set by its first look).
        self._check_at: float | None = None
        self._gave_up = False  # a repair was given up since the last `check_usage` (writer thread)
        # While more than one tenant is active, busy tenants' INSERTs are sent on a connection
        # and a thread of their own (`_send_busy`), one job at a time, and the writer goes on
        # writing the light tenants' requests meanwhile: a request of a tenant that sends little
        # then waits for its own INSERT, not for a busy tenant's too. The tenants of the job in
        # progress are not written by the writer until it ends (writer thread only), so a
        # tenant's rows are only ever in one INSERT at a time, as with one thread.
        self.busy_lane = busy_lane
        # The busy lane's thread runs at this much lower CPU priority (chDB runs an INSERT in
        # the thread that sends it): while the CPUs are all taken, the light tenants' INSERTs,
        # the writer and the request threads get them first, and the busy tenant all the rest.
        self.busy_niceness = busy_niceness
        self._busy: threading.Thread | None = None
        self._busy_tenants: set[str] = set()
        self._busy_pending: list[_Pending] = []  # its requests (drain() waits for them too)
        self._busy_done = threading.Event()
        self._busy_done.set()
        # What both threads change: the repairs, and the INSERTs begun by table.
        self._bookkeeping = threading.RLock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="clickhouse-batcher", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)
        # Anything that arrived after the stop is refused, not left waiting.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Pending):
                item.error = StorageUnavailable("the gateway is shutting down; nothing was stored")
                item.done.set()

    def failing_tables(self, *, within_seconds: float) -> dict[str, str]:
        """Tables whose last INSERT failed for a reason that can pass, within the last
        `within_seconds`, and its error. Older failures are forgotten: a process taken out of
        service for them gets no traffic to succeed with, so it must try again."""
        since = time.monotonic() - within_seconds
        return {table: error for table, (when, error) in list(self._failing.items()) if when >= since}

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def expected(self) -> int:
        """Requests preparing rows for this batcher (open `expecting()` contexts)."""
        return self._expected

    def expecting(self) -> Expectation:
        """`with batcher.expecting() as expectation:` around preparing a request's rows, ending
        with `write_encoded(..., expectation=expectation)`: meanwhile, an INSERT about to be
        written waits (up to the linger) for these rows too."""
        with self._expected_lock:
            self._expected += 1
        return Expectation(self)

    def _end_expectation(self, expectation: Expectation, queued: _Pending | None) -> None:
        # Under the lock the writer's check takes: it sees either the expectation or the rows
        # that end it, and it is woken when an expectation ends without rows.
        with self._expected_lock:
            if not expectation.open:
                return
            expectation.open = False
            self._expected -= 1
            self._queue.put(queued if queued is not None else _WAKE)

    def write(self, batches: list[TableBatch], *, timeout: float) -> None:
        """Store `batches`; returns only once they are in ClickHouse. Raises StorageError."""
        if not batches:
            return
        if self._thread is None or not self._thread.is_alive():
            raise StorageUnavailable("the storage writer is not running")
        with self.expecting() as expectation:
            self.write_encoded(self.encode(batches), timeout=timeout, expectation=expectation)

    def write_encoded(
        self, blocks: list[EncodedBlock], *, timeout: float, expectation: Expectation | None = None
    ) -> None:
        """`write` for rows already encoded (`encode`, or gateway.otlp.prepare in a worker
        process): returns only once they are in ClickHouse. Raises StorageError.
        `expectation`: the one these rows fulfil, if any."""
        if not blocks:
            return
        if self._thread is None or not self._thread.is_alive():
            raise StorageUnavailable("the storage writer is not running")
        pending = _Pending(blocks)
        if expectation is not None and expectation.open:
            self._end_expectation(expectation, queued=pending)
        else:
            self._queue.put(pending)
        self.observer.queue_depth(self._queue.qsize())
        if not pending.done.wait(timeout):
            if pending.abandon():
                raise StorageUnavailable(f"storage did not take the rows within {timeout:g}s; nothing was stored")
            error = StorageUnavailable(f"storage did not confirm the write within {timeout:g}s")
            error.partial = True
            raise error
        if pending.error is not None:
            raise pending.error

    def write_later(self, batches: list[TableBatch]) -> None:
        """Queue `batches` to be stored with the next group, without waiting (usage records of
        refused requests: nobody is waiting for an answer about them)."""
        if batches and self._thread is not None and self._thread.is_alive():
            try:
                blocks = self.encode(batches)
            except StorageError as exc:
                log.error("storing a request failed: %s", exc)
                return
            self._queue.put(_Pending(blocks, background=True))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call has been written (or has failed; a
        refused request's usage record kept while its table cannot be written is not done
        until it is written); False if that took longer than `timeout`."""
        if self._thread is None or not self._thread.is_alive():
            return False
        marker = _Pending([])
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def encode(self, batches: list[TableBatch], mark: RequestMark | None = None) -> list[EncodedBlock]:
        """`batches` as blocks for `write_encoded`; with `mark`, a request's (storage.requests)."""
        started = time.perf_counter()
        try:
            return encode_blocks(
                batches,
                mark=mark,
                server_tz=self.store.server_tz,
                encode=lambda batch: self.store.encode(batch.table, batch.column_names, batch.columns),
            )
        except StorageError:
            # (Cannot reach ClickHouse for the column types, or rows it could not take.) Counted
            # as rows that failed to store, as a refused INSERT of them would be.
            for batch in batches:
                self.observer.inserted(
                    table=batch.table, rows=batch.rows, seconds=time.perf_counter() - started, ok=False
                )
            raise

    def _run(self) -> None:
        stop = last_try = False
        while True:
            self._busy_ended()
            if not (self._held or self._records):
                if stop:
                    if self._busy is not None:  # its requests are answered first
                        self._busy_done.wait()
                        continue
                    if self._later and not last_try:  # one more try for the kept usage records
                        last_try = True
                        self._hold_later(final=True)
                        continue
                    if self._later:
                        log.error("stopping with %d usage records of refused requests unwritten", len(self._later))
                        for pending in self._later:
                            pending.done.set()
                    self._repair(final=True)
                    return
                try:
                    first = self._queue.get(timeout=self._next_repair_in())
                except queue.Empty:
                    self._repair()
                    self._check_usage_when_due()
                    self._hold_later()
                    continue
                if first is _WAKE:
                    self._release_markers()
                    continue
                if first is _STOP:
                    stop = True
                    continue
                self._hold(first)
                if first.blocks:
                    self.observer.collecting(rows=first.rows)
                stop = self._collect(linger=True)
            elif not stop:  # a backlog: what has arrived joins it, nothing is waited for
                stop = self._collect(linger=False)
            self._hold_later()
            group = self._take_fair()
            self.observer.queue_depth(self._queue.qsize() + self._held_requests())
            self._repair()
            self._check_usage_when_due()
            if group:
                self._flush(group)
                stop = stop or self._stop_seen
            elif self._held:  # all of it waits for the busy lane
                if stop:
                    self._busy_done.wait()
                else:
                    stop = self._wait_for_busy()
            self._release_markers()

    def _hold(self, pending: _Pending) -> None:
        if not pending.blocks:  # drain()'s marker: done once what was held before it is
            before = [held for queue_ in self._held.values() for held in queue_] + self._busy_pending
            self._markers.append((pending, before + self._records + list(self._later)))
            return
        if pending.background:
            self._records.append(pending)
            return
        self._held.setdefault(pending.blocks[0].tenant_id, deque()).append(pending)
        self._held_rows += pending.rows

    def _held_requests(self) -> int:
        return len(self._records) + sum(len(queue_) for queue_ in self._held.values())

    def _busy_ended(self) -> None:
        """Once the busy lane's job has ended, its tenants are the writer's again."""
        if self._busy is not None and self._busy_done.is_set():
            self._busy.join()
            self._busy = None
            self._busy_tenants, self._busy_pending = set(), []

    def _wait_for_busy(self) -> bool:
        """Everything held waits for the busy lane (its tenants', or busy tenants' while it is
        taken): wait for its job to end or for something new to arrive. True once told to stop."""
        if self._busy is None or self._busy_done.is_set():
            return False  # it has ended (and its wake-up may have been taken by `_collect`)
        try:
            item = self._queue.get(timeout=self._next_repair_in())
        except queue.Empty:
            return False
        if item is _STOP:
            return True
        if item is not _WAKE:
            self._hold(item)
        return False

    def _collect(self, *, linger: bool) -> bool:
        """Hold what is queued, and with `linger`: until the linger runs out, the rows of requests
        still preparing them; until the wait runs out, whatever arrives. True once told to stop."""
        started = time.monotonic()
        wait_until = started + (self.wait_seconds if linger else 0.0)
        linger_until = max(wait_until, started + (self.linger_seconds if linger else 0.0))
        while self._held_rows < self.max_rows:
            with self._expected_lock:
                nothing_coming = self._expected <= 0 and self._queue.empty()
            remaining = (wait_until if nothing_coming else linger_until) - time.monotonic()
            if remaining <= 0:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _WAKE:
                continue
            if item is _STOP:
                return True
            self._hold(item)
        return False

    def _take_fair(self) -> list[_Pending]:
        """The requests of the next INSERT, from those held: tenants least recently written
        first; while more than one tenant is active, at most `fair_rows` rows of each (a request
        larger than that goes alone). One tenant's backlog then neither fills every INSERT nor
        keeps another tenant's rows out of the next one. (Every INSERT costs chDB about the
        same fixed time whatever its rows, docs/BENCHMARKS.md: an INSERT of its own per tenant
        would cost the busy tenant throughput and spare the others little.)"""
        self._busy_ended()
        now = time.monotonic()
        for tenant, at in list(self._served.items()):
            if now - at > FAIR_WINDOW_SECONDS:
                del self._served[tenant]
        contended = len(self._served.keys() | self._held.keys()) > 1
        share = self.fair_rows if contended else self.max_rows
        self._contended = contended
        group, self._records = self._records, []
        rows = 0
        for tenant in sorted(self._held, key=lambda tenant: self._served.get(tenant, 0.0)):
            held, taken = self._held[tenant], 0
            if tenant in self._busy_tenants or (
                self._busy is not None and not self._light(sum(pending.rows for pending in held))
            ):
                continue  # in the busy lane's job, or busy while the lane is taken: after it
            while held and rows < self.max_rows and (not taken or taken + held[0].rows <= share):
                pending = held.popleft()
                group.append(pending)
                taken += pending.rows
                rows += pending.rows
            if not held:
                del self._held[tenant]
            self._held_rows -= taken
            self._served[tenant] = now
            if rows >= self.max_rows:
                break
        return group

    def _release_markers(self) -> None:
        still = []
        for marker, before in self._markers:
            if all(pending.done.is_set() or pending.state == "abandoned" for pending in before):
                marker.done.set()
            else:
                still.append((marker, before))
        self._markers = still

    def _flush(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        group = [pending for pending in group if pending.start()]  # not those nobody waits for
        stored = self._stored(group)
        parts, busy = self._light_first(group) if stored is not None else ([group], set())
        kept = 0
        if self.busy_lane and stored is not None and busy and self._contended:
            # The busy tenants' INSERTs to the busy lane, and the rest (with the usage records of
            # refused requests, which only the writer keeps) in one INSERT here, at once.
            light = [p for part in parts for p in part if p.background or p.blocks[0].tenant_id not in busy]
            heavy = [[p for p in part if not p.background and p.blocks[0].tenant_id in busy] for part in parts]
            self._send_busy([part for part in heavy if part], stored, busy)
            parts = [light] if light else []
        for index, part in enumerate(parts):
            if index:  # before each busy tenant's INSERT, the light requests that came meanwhile
                kept += self._flush_late_light(busy=busy)
            if stored is not None:
                self._insert_group(part, stored)
            kept += self._answer(part)  # now, not after the INSERTs that follow in this flush
        self.observer.flushed(seconds=time.perf_counter() - started)
        if kept:
            log.warning("%d usage records of refused requests kept until storage takes them", kept)

    def _send_busy(self, parts: list[list[_Pending]], stored: set[str], tenants: set[str]) -> None:
        """Write `parts` (busy tenants' INSERTs, one after the other) on the busy lane's thread,
        each answered as soon as it is written; the writer goes on meanwhile."""
        assert self._busy is None, "one busy job at a time"
        self._busy_tenants = set(tenants)
        self._busy_pending = [pending for part in parts for pending in part]
        self._busy_done.clear()

        def job() -> None:
            _lower_this_threads_priority(self.busy_niceness)
            try:
                for part in parts:
                    self._insert_group(part, stored, lane=BUSY_LANE)
                    self._answer(part)
            except BaseException as exc:  # never leave a request waiting
                log.exception("the busy lane failed")
                for part in parts:
                    for pending in part:
                        if not pending.done.is_set():
                            pending.error = pending.error or StorageUnavailable(f"the storage writer failed: {exc}")
                            pending.done.set()
            finally:
                self._busy_done.set()
                self._queue.put(_WAKE)

        self._busy = threading.Thread(target=job, name="clickhouse-batcher-busy", daemon=True)
        self._busy.start()

    def _stored(self, group: list[_Pending]) -> set[str] | None:
        """The blocks of `group` the ledger has; None if it cannot be read (then each request
        has its error)."""
        try:
            return self.ledger.stored([block for pending in group for block in pending.blocks])
        except StorageError as exc:
            for pending in group:
                pending.error = exc
            return None

    def _answer(self, part: list[_Pending]) -> int:
        """Tell the requests of `part` how their INSERT went; returns the usage records kept."""
        kept = 0
        for pending in part:
            if self._keep_for_later(pending):  # not done: drain() waits for it
                kept += 1
                continue
            if pending.error is not None:
                log.error("storing a request failed: %s", pending.error)
            pending.done.set()
        return kept

    def _flush_late_light(self, *, busy: set[str]) -> int:
        """Write, in an INSERT of their own, the requests of light tenants (as in `_light_first`)
        that arrived while this flush was being written, so that they wait for the INSERT in
        progress only, not for `busy` tenants' INSERTs as well. At most one such INSERT before
        each busy tenant's: a busy tenant still gets its turn. Returns the usage records kept."""
        if not self._stop_seen:
            self._stop_seen = self._collect(linger=False)
        late, now = [], time.monotonic()
        for tenant in [tenant for tenant in self._held if tenant not in busy]:
            held = self._held[tenant]
            rows = sum(pending.rows for pending in held)
            if not self._light(rows):
                continue
            late.extend(held)
            del self._held[tenant]
            self._held_rows -= rows
            self._served[tenant] = now
        if not late:
            return 0
        late = [pending for pending in late if pending.start()]
        stored = self._stored(late)
        if stored is not None:
            self._insert_group(late, stored)
        return self._answer(late)

    def _light(self, rows: int) -> bool:
        """Whether a tenant with `rows` in a turn is light: under half its share of an INSERT."""
        return rows * 2 < self.fair_rows

    def _light_first(self, group: list[_Pending]) -> tuple[list[list[_Pending]], set[str]]:
        """`group` as the INSERTs to send one after the other: while more than one tenant is
        active, the tenants with fewer than half of `fair_rows` rows here (and the usage records)
        first, in one INSERT of their own, and each other tenant's rows after them, alone. A
        tenant sending little then neither waits for a busy tenant's INSERT within the flush
        nor pays for its rows: an INSERT that carries 2000 of another tenant's rows, in another
        partition, costs chDB about twice as much as one of 100 (docs/BENCHMARKS.md). Returns
        the INSERTs' requests, and the tenants that are not light."""
        if not self._contended:
            return [group], set()
        rows: dict[str, int] = {}
        for pending in group:
            if not pending.background:
                tenant = pending.blocks[0].tenant_id
                rows[tenant] = rows.get(tenant, 0) + pending.rows
        heavy = {tenant for tenant, count in rows.items() if not self._light(count)}
        if not heavy or len(heavy) == len(rows) == 1:
            return [group], heavy
        light = [p for p in group if p.background or p.blocks[0].tenant_id not in heavy]
        parts = [light] if light else []
        for tenant in sorted(heavy, key=lambda tenant: rows[tenant]):
            parts.append([p for p in group if not p.background and p.blocks[0].tenant_id == tenant])
        return parts, heavy

    def _insert_group(self, group: list[_Pending], stored: set[str], *, lane: str = MAIN_LANE) -> None:
        # Each block once: not one the ledger has (the request was sent again, or stored after
        # its sender stopped waiting), nor twice in this group (sent again while queued).
        owners: dict[str, list[_Pending]] = {}
        by_table: dict[tuple[str, tuple[str, ...]], list[tuple[list[_Pending], EncodedBlock]]] = {}
        for pending in group:
            for block in pending.blocks:
                if block.block_id:
                    # Repairs first: the ledger's view may have stored the block while usage's
                    # did not, so a block being repaired can be in the ledger already.
                    if block.block_id in self._repairing:
                        pending.error = StorageUnavailable(
                            "this request's rows are stored but their usage is not recorded yet; the gateway keeps trying"
                        )
                        pending.error.partial = True
                        continue
                    if block.block_id in stored:
                        continue
                    if block.block_id in owners:
                        owners[block.block_id].append(pending)
                        continue
                    owners[block.block_id] = [pending]
                    entry = (owners[block.block_id], block)
                else:
                    entry = ([pending], block)
                by_table.setdefault((block.table, block.column_names), []).append(entry)
        for (table, _), blocks in by_table.items():
            for parts in _within_partition_limit(blocks):
                self._insert_parts(table, parts, lane=lane)

    def _insert_parts(
        self, table: str, parts: list[tuple[list[_Pending], EncodedBlock]], *, lane: str = MAIN_LANE
    ) -> None:
        """One INSERT of `parts`; when the rows are refused, one per block, so that a bad request
        fails alone (refused rows store nothing: ClickHouse reads them all before it writes)."""
        blocks = [block for _, block in parts]
        try:
            self._insert_idempotent(table, blocks, lane=lane)
            return
        except StorageError as exc:
            if exc.retryable or len(parts) == 1:
                for owners, _ in parts:
                    for pending in owners:
                        pending.error = exc
                return
            log.warning("rows refused by an insert into %s (%s); retrying request by request", table, exc)
        for owners, block in parts:
            try:
                self._insert_idempotent(table, [block], lane=lane)
            except StorageError as single_exc:
                for pending in owners:
                    pending.error = single_exc

    def _insert_idempotent(self, table: str, blocks: list[EncodedBlock], *, lane: str = MAIN_LANE) -> None:
        """INSERT `blocks`; if that stored them but not the views they feed, send the same INSERT
        again (it stores only what is missing) a few times, then leave it to `_repair`."""
        token = insert_token(blocks)
        with self._bookkeeping:
            self._table_inserts[table] = self._table_inserts.get(table, 0) + 1
        ahead = self._journal_ahead(table, token, blocks)
        try:
            for pause in (*RETRY_PAUSES, None):
                try:
                    self._insert(blocks, token=token, lane=lane)
                    return
                except StorageError as exc:
                    if not exc.retryable or not (exc.partial or self._stored_without_views(table, blocks)):
                        raise
                    exc.partial = True
                    if pause is None:
                        self._add_repair(table, blocks, token, exc)  # kept in the journal as a repair
                        raise
                    log.warning(
                        "an insert into %s stored its rows but not their views (%s); sending it again", table, exc
                    )
                    time.sleep(pause)
        finally:
            # The INSERT's outcome is known (stored; nothing stored; or under repair), and its
            # requests are answered only after this.
            if ahead is not None:
                ahead.unlink(missing_ok=True)

    def _stored_without_views(self, table: str, blocks: list[EncodedBlock]) -> bool:
        """Whether a failed INSERT of request blocks stored some of them all the same (a view
        they feed failed after them; ClickHouse's error does not always say so)."""
        ids = sorted({block.block_id for block in blocks if block.block_id})
        time_column = DAY_PARTITIONED_TIME_COLUMNS.get(table)
        if not ids or time_column is None:
            return False
        partitions = {partition for block in blocks for partition in block.partitions}
        try:
            rows = self.store.dangerously_query_unscoped(
                f"SELECT DISTINCT {BLOCK_COLUMN} FROM {table} WHERE TenantId IN {{tenants:Array(String)}} "
                f"AND toDate({time_column}) IN {{days:Array(Date)}} AND {BLOCK_COLUMN} IN {{ids:Array(String)}}",
                {
                    "tenants": sorted({block.tenant_id for block in blocks if block.block_id}),
                    "days": sorted({day for _, day in partitions}),
                    "ids": ids,
                },
                reason="the writer: which rows of a failed INSERT were stored",
            ).result_rows
        except Exception as exc:  # storage that cannot be read stored nothing either, as far as anyone can tell
            log.warning("cannot tell whether a failed insert into %s stored rows: %s", table, exc)
            return False
        return bool(rows)

    def _add_repair(self, table: str, blocks: list[EncodedBlock], token: str, exc: StorageError) -> None:
        with self._bookkeeping:
            self._add_repair_locked(table, blocks, token, exc)

    def _add_repair_locked(self, table: str, blocks: list[EncodedBlock], token: str, exc: StorageError) -> None:
        if len(self._repairs) >= MAX_REPAIRS:
            dropped = self._repairs.pop(0)
            self._give_up(dropped)
            log.error(
                "giving up an insert into %s: %d rows are stored without their usage records until the usage "
                "check meters them",
                dropped.table,
                sum(block.rows for block in dropped.blocks),
            )
        log.error("an insert into %s stored its rows but not their views (%s); retrying in the background", table, exc)
        self._journal_keep(self._start_repair(table, blocks, token))

    def _start_repair(self, table: str, blocks: list[EncodedBlock], token: str) -> _Repair:
        now = time.monotonic()
        repair = _Repair(
            table,
            blocks,
            token,
            since=now,
            next_at=now + self.repair_interval,
            inserts_at=self._table_inserts.get(table, 0),
        )
        self._repairs.append(repair)
        self._repairing.update(block.block_id for block in blocks if block.block_id)
        return repair

    def _give_up(self, repair: _Repair) -> None:
        """`repair` is given up: its rows may be stored without their usage, which the next
        `check_usage` meters."""
        self._forget(repair)
        self._gave_up = True

    def _forget(self, repair: _Repair) -> None:
        """`repair` is done with (completed, or given up): it is no longer kept anywhere."""
        self._repairing.difference_update(block.block_id for block in repair.blocks if block.block_id)
        if self.journal is not None:
            (self.journal / f"{repair.token}.repair").unlink(missing_ok=True)

    def _journal_ahead(self, table: str, token: str, blocks: list[EncodedBlock]) -> Path | None:
        """Keep the INSERT about to be sent in the journal until its outcome is known, so that if
        this process dies meanwhile (kill -9 between the parts of the table and of its views),
        the next start sends it again (`_journal_replay`): ClickHouse then stores only what is
        missing. Not fsynced: it is to outlive the process, as the parts ClickHouse writes
        without fsync do, not the machine. None when it cannot be kept (the INSERT goes ahead)."""
        if self.journal is None:
            return None
        path = self.journal / f"{token}.insert"
        try:
            self.journal.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as out:
                _write_entry(out, table, token, blocks)
        except OSError as exc:  # a full disk, say
            path.unlink(missing_ok=True)
            if self._journal_ok:
                log.error(
                    "cannot keep inserts in %s until they are done (%s): a crash meanwhile may leave rows unmetered",
                    self.journal,
                    exc,
                )
            self._journal_ok = False
            return None
        self._journal_ok = True
        return path

    def _journal_keep(self, repair: _Repair) -> None:
        if self.journal is None:
            return
        path = self.journal / f"{repair.token}.repair"
        try:
            self.journal.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".tmp"), "wb") as out:
                _write_entry(out, repair.table, repair.token, repair.blocks)
                out.flush()
                os.fsync(out.fileno())
            os.replace(path.with_suffix(".tmp"), path)
        except OSError as exc:  # a full disk, say: the repair still runs, only not across a restart
            log.error("cannot keep an insert into %s under repair in %s: %s", repair.table, self.journal, exc)

    def _journal_replay(self) -> int:
        """Send again the INSERTs a previous process left under repair, or died during (each
        with its token: what was stored is not stored again); those that still fail are
        repaired in the background. Returns the INSERTs sent again."""
        if self.journal is None or not self.journal.is_dir():
            return 0
        completed = 0
        for path in sorted(self.journal.glob("*.insert")) + sorted(self.journal.glob("*.repair")):
            try:
                table, token, blocks = _read_entry(path)
            except (OSError, ValueError, KeyError) as exc:
                if path.suffix == ".insert":
                    # Cut short: the process died writing it, before the INSERT was sent.
                    log.warning("removing %s, an insert never sent (%s)", path, exc)
                    path.unlink(missing_ok=True)
                else:
                    log.error("cannot read the insert under repair in %s (%s); leaving it there", path, exc)
                continue
            try:
                self._insert(blocks, token=token)
            except StorageError as exc:
                if not exc.retryable:  # refused as it stands: it stored nothing, and never will
                    log.error("an insert into %s the last run left unfinished is refused (%s); dropped", table, exc)
                    path.unlink(missing_ok=True)
                    continue
                log.warning("an insert into %s the last run left unfinished is still incomplete (%s)", table, exc)
                if path.suffix == ".insert":
                    os.replace(path, path.with_suffix(".repair"))
                with self._bookkeeping:
                    self._start_repair(table, blocks, token)
                self._queue.put(_WAKE)  # the writer's next wait ends in time for it
                continue
            path.unlink(missing_ok=True)
            completed += 1
            log.warning("sent again an insert into %s that the last run left unfinished (%s)", table, path.suffix[1:])
        return completed

    def _next_repair_in(self) -> float | None:
        due = [repair.next_at for repair in self._repairs]
        if self._check_at is not None:
            due.append(self._check_at)
        if self._later:
            due.append(self._later_at)
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _keep_for_later(self, pending: _Pending) -> bool:
        """Keep a refused request's usage record whose INSERT failed for a reason that can pass
        (and stored nothing), to write it again with the repairs; False when it is not one."""
        error = pending.error
        if not pending.background or error is None or not error.retryable or error.partial:
            return False
        if not self._later:
            self._later_at = time.monotonic() + self.repair_interval
        if len(self._later) >= MAX_LATER:
            self._later.popleft().done.set()
            log.error("dropping the usage record of a refused request: %d are waiting for storage", MAX_LATER)
        pending.error = None
        self._later.append(pending)
        return True

    def _hold_later(self, *, final: bool = False) -> None:
        """Hold the kept usage records again, when they are due (all of them when `final`)."""
        if self._later and (final or time.monotonic() >= self._later_at):
            later, self._later = self._later, deque()
            for pending in later:
                self._hold(pending)

    def _repair(self, *, final: bool = False) -> None:
        """Send again the INSERTs whose views failed, those due (all of them when `final`)."""
        with self._bookkeeping:
            self._repair_locked(final=final)

    def _repair_locked(self, *, final: bool) -> None:
        now = time.monotonic()
        for repair in list(self._repairs):
            if not final and repair.next_at > now:
                continue
            if self._table_inserts.get(repair.table, 0) - repair.inserts_at > self.safe_inserts:
                self._repairs.remove(repair)
                self._give_up(repair)
                log.error(
                    "giving up an insert into %s after %d attempts: ClickHouse may no longer remember it, and "
                    "sent again its rows could be stored twice; %d rows are stored without their usage records "
                    "until the usage check meters them",
                    repair.table,
                    repair.attempts,
                    sum(block.rows for block in repair.blocks),
                )
                continue
            try:
                self._insert(repair.blocks, token=repair.token)
            except StorageError as exc:
                repair.attempts += 1
                repair.next_at = time.monotonic() + self.repair_interval
                if now - repair.since > REPAIR_SECONDS or not (exc.partial or exc.retryable):
                    self._repairs.remove(repair)
                    self._give_up(repair)
                    log.error(
                        "giving up an insert into %s after %d attempts (%s): %d rows are stored without their "
                        "usage records until the usage check meters them",
                        repair.table,
                        repair.attempts,
                        exc,
                        sum(block.rows for block in repair.blocks),
                    )
                continue
            log.info("an insert into %s is now stored with its views, after %d attempts", repair.table, repair.attempts)
            self._repairs.remove(repair)
            self._forget(repair)

    def reconcile(self, *, minutes: int = RECONCILE_MINUTES) -> int:
        """Meter the request blocks stored in the last `minutes` whose views were never written
        (the process died between an INSERT's rows and its views: kill -9, a power cut), and
        record them in the ledger, so that an exporter's retry of them stores nothing twice.
        Run once at start, before serving. Returns the INSERTs it sent again (below) and the
        blocks it completed; each block is written with a token of its own, so running it
        again, or in two processes, counts nothing twice.
        First it sends again the INSERTs the last run left under repair or died during
        (`journal`): their rows may be stored, and their ledger rows too, while their usage is
        not, which the search below cannot tell from a complete INSERT."""
        completed = sent_again = self._journal_replay()
        if self.store.layout.cluster:
            return completed  # each shard's parts are its own; see docs/OPERATIONS.md
        for table in TELEMETRY_TABLES:
            try:
                missing = self.store.dangerously_query_unscoped(
                    f"SELECT TenantId, {BLOCK_COLUMN}, {BLOCK_ROWS_COLUMN}, {REQUEST_BYTES_COLUMN}, "
                    f"{ITEMS_REJECTED_COLUMN} FROM {table} WHERE {BLOCK_COLUMN} != '' AND _part IN ("
                    # Parts as inserted (level 0), not merged: a merge makes a new part of old rows.
                    "SELECT name FROM system.parts WHERE database = currentDatabase() AND table = {table:String} "
                    "AND active AND level = 0 AND modification_time >= now() - toIntervalMinute({minutes:UInt32}) "
                    # With a server, other gateway processes write meanwhile: not the parts of
                    # INSERTs that may still be writing their views.
                    "AND modification_time <= now() - toIntervalSecond({settle:UInt32})) "
                    f"AND {BLOCK_COLUMN} NOT IN (SELECT Block FROM {LEDGER_TABLE} "
                    "WHERE At >= now() - toIntervalMinute({minutes:UInt32} + 10)) LIMIT 100000",
                    {"table": table, "minutes": minutes, "settle": 0 if self.store.embedded else 60},
                    reason="the writer: blocks stored without their views",
                ).result_rows
            except Exception as exc:  # noqa: BLE001 - storage that cannot be read is reported by /readyz
                log.warning("cannot reconcile %s with its usage: %s", table, exc)
                continue
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
            for tenant_id, block_id, rows, body_bytes, rejected in missing:
                # The block's ledger row, with its usage: the ledger's view meters it.
                ledger = TableBatch(
                    LEDGER_TABLE,
                    ("TenantId", "Block", *LEDGER_USAGE_COLUMNS),
                    [
                        [tenant_id],
                        [block_id],
                        [TABLE_SIGNALS[table]],
                        [hour],
                        ["partially_accepted" if rejected else "accepted"],
                        [1 if body_bytes else 0],
                        [rows + rejected],
                        [rows],
                        [body_bytes],
                    ],
                )
                try:
                    self.store.insert_native(
                        ledger.table,
                        ledger.column_names,
                        [self.store.encode(ledger.table, ledger.column_names, ledger.columns)],
                        token=f"reconcile-{block_id}",
                    )
                except StorageError as exc:
                    log.warning("cannot reconcile block %s of %s: %s", block_id, table, exc)
                    continue
                completed += 1
        try:
            completed += self.check_usage(hours=USAGE_CHECK_HOURS_AT_START)
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("cannot compare the ledger with usage: %s", exc)
        if completed > sent_again:
            log.warning(
                "metered %d request blocks stored without their usage (the last run was cut off)",
                completed - sent_again,
            )
        return completed

    def _check_usage_when_due(self) -> None:
        if self._check_at is None or time.monotonic() < self._check_at:
            if self._check_at is None:
                self._check_at = time.monotonic() + self.usage_check_interval
            return
        self._check_at = time.monotonic() + self.usage_check_interval
        if self.store.embedded and not self._gave_up:
            return  # the journal completes the rest (`_journal_ahead`)
        try:
            self.check_usage()
            self._gave_up = False
        except Exception as exc:  # noqa: BLE001 - storage that cannot be read is reported by /readyz
            log.warning("cannot compare the ledger with usage: %s", exc)

    def check_usage(self, *, hours: int = USAGE_CHECK_HOURS) -> int:
        """Meter what the ledger holds and usage does not, for the hours that began within the
        last `hours`: a block whose ledger row was written while its usage was not (its
        INSERT's usage part failed, and the process died before it was sent again, or its
        repair was given up). Accepted usage is the sum of the ledger's rows (migration 7), so
        the difference is what is missing. Returns the usage rows written; raises StorageError
        if the ledger or usage cannot be read, or a row cannot be written.
        Left out: the blocks under repair here (their repair meters them), and with a ClickHouse
        server, the hours in which other processes' INSERTs may still be under repair (those
        that began less than REPAIR_SECONDS and an hour ago): they are checked later, by the
        check every USAGE_CHECK_SECONDS. Each correction carries a token made of what it
        corrects, so that two processes that find the same difference at once write it once."""
        if self.store.layout.cluster:
            return 0  # each shard's ledger and usage are its own; see docs/OPERATIONS.md
        settled = -3600 if self.store.embedded else int(3600 + REPAIR_SECONDS + USAGE_SETTLE_SECONDS)
        window = (
            "Hour >= toStartOfHour(now()) - toIntervalHour({hours:UInt32}) "
            "AND Hour <= now() - toIntervalSecond({settled:Int64})"
        )
        sums = ", ".join(
            f"sumIf({column}, Ledger) AS L{column}, sumIf({column}, NOT Ledger) AS U{column}" for column in _COUNTS
        )
        result = self.store.dangerously_query_unscoped(
            f"SELECT TenantId, Signal, toUnixTimestamp(Hour), Outcome, {sums} FROM ("
            f"SELECT true AS Ledger, TenantId, Signal, Hour, Outcome, {', '.join(_COUNTS)} FROM {LEDGER_TABLE} "
            # (At is what the ledger is partitioned by; a block's Hour is the start of its At's.)
            f"WHERE At >= toStartOfHour(now()) - toIntervalHour({{hours:UInt32}}) AND {window} AND Signal != '' "
            "AND Block NOT IN {repairing:Array(String)} "
            f"UNION ALL SELECT false, TenantId, Signal, Hour, Outcome, {', '.join(_COUNTS)} FROM {USAGE_TABLE} "
            f"WHERE {window} AND Outcome IN ('accepted', 'partially_accepted')"
            ") GROUP BY TenantId, Signal, Hour, Outcome HAVING "
            + " OR ".join(f"L{column} > U{column}" for column in _COUNTS),
            {"hours": hours, "settled": settled, "repairing": sorted(self._repairing)},
            reason="the writer: usage the ledger holds and usage does not",
        ).result_rows
        written, failed = 0, None
        for tenant_id, signal, hour, outcome, *counts in result:
            ledger, usage = counts[0::2], counts[1::2]
            missing = [max(0, have - metered) for have, metered in zip(ledger, usage)]
            digest = hashlib.blake2b(repr((tenant_id, signal, hour, outcome, ledger, usage)).encode(), digest_size=16)
            correction = TableBatch(
                USAGE_TABLE,
                USAGE_COLUMNS,
                [[tenant_id], [signal], [datetime.fromtimestamp(hour, UTC)], [outcome], *([n] for n in missing)],
            )
            try:
                self.store.insert_native(
                    USAGE_TABLE,
                    USAGE_COLUMNS,
                    [self.store.encode(USAGE_TABLE, USAGE_COLUMNS, correction.columns)],
                    token=f"usage-check-{digest.hexdigest()}",
                )
            except StorageError as exc:
                log.warning("cannot meter the usage the ledger holds for tenant %s: %s", tenant_id, exc)
                failed = exc
                continue
            written += 1
            log.warning(
                "metered %d %s items of tenant %s stored without their usage (hour %s)",
                missing[2],
                signal,
                tenant_id,
                datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%d %H:00"),
            )
        if failed is not None:
            raise failed  # (what could be written is; the next check writes the rest)
        return written

    @property
    def repairs(self) -> int:
        """INSERTs stored without their views, waiting to be sent again."""
        return len(self._repairs)

    def _insert(self, blocks: list[EncodedBlock], *, token: str | None = None, lane: str = MAIN_LANE) -> None:
        first = blocks[0]
        rows, started, ok = sum(block.rows for block in blocks), time.perf_counter(), False
        try:
            self.store.insert_native(
                first.table, first.column_names, [block.data for block in blocks], token=token, lane=lane
            )
            ok = True
            self._failing.pop(first.table, None)
        except StorageError as exc:
            if exc.retryable:
                self._failing[first.table] = (time.monotonic(), str(exc))
            raise
        finally:
            self.observer.inserted(table=first.table, rows=rows, seconds=time.perf_counter() - started, ok=ok)
        with self._bookkeeping:
            self.inserts += 1


class IngestLedger:
    """Which request blocks are stored (storage.requests), from the ledger table the telemetry
    tables' views fill."""

    def __init__(self, store: Store):
        self.store = store

    def stored(self, blocks: list[EncodedBlock]) -> set[str]:
        """The ids of `blocks` stored already. Raises StorageUnavailable if it cannot be read."""
        ids = sorted({block.block_id for block in blocks if block.block_id})
        if not ids:
            return set()
        tenants = sorted({block.tenant_id for block in blocks if block.block_id})
        try:
            result = self.store.query(
                f"SELECT DISTINCT Block FROM {LEDGER_TABLE} WHERE TenantId IN {{tenants:Array(String)}}"
                " AND Block IN {ids:Array(String)}",
                {"tenants": tenants, "ids": ids},
            )
        except StorageError:
            raise
        except Exception as exc:
            raise StorageUnavailable(f"cannot read the ingest ledger: {exc}") from exc
        return {row[0] for row in result.result_rows}


def _write_entry(out, table: str, token: str, blocks: list[EncodedBlock]) -> None:
    """An INSERT as the journal keeps it: a JSON line (its table, token and blocks), then the
    blocks' Native data."""
    header = {
        "table": table,
        "token": token,
        "blocks": [
            {
                "columns": list(block.column_names),
                "rows": block.rows,
                "size": len(block.data),
                "block_id": block.block_id,
                "tenant_id": block.tenant_id,
                "nonce": block.nonce,
            }
            for block in blocks
        ],
    }
    out.write(json.dumps(header).encode() + b"\n")
    for block in blocks:
        out.write(block.data)


def _read_entry(path: Path) -> tuple[str, str, list[EncodedBlock]]:
    """An INSERT as `_write_entry` kept it: its table, token and blocks."""
    with open(path, "rb") as source:
        header = json.loads(source.readline())
        blocks = []
        for block in header["blocks"]:
            data = source.read(block["size"])
            if len(data) != block["size"]:
                raise ValueError("the file is cut short")
            blocks.append(
                EncodedBlock(
                    header["table"],
                    tuple(block["columns"]),
                    block["rows"],
                    data,
                    block_id=block["block_id"],
                    tenant_id=block["tenant_id"],
                    nonce=block["nonce"],
                )
            )
    return header["table"], header["token"], blocks


def _lower_this_threads_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by `niceness` (Linux, where a thread's priority is
    its own; any user may lower its own priority, so nothing to undo: the thread is a new one
    each time, and ends with its job)."""
    if niceness <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + niceness))
    except OSError as exc:  # a sandbox that refuses it: the lane still runs, at the same priority
        log.warning("cannot lower the busy lane's CPU priority: %s", exc)


def _within_partition_limit(blocks: list, limit: int = MAX_PARTITIONS_PER_INSERT) -> list[list]:
    """`blocks` (of one table) in groups whose partitions together stay within `limit`, each
    group one INSERT. A block is never over the limit alone (storage.partitions split it)."""
    groups: list[list] = []
    current: list = []
    partitions: set = set()
    for pending, block in blocks:
        joined = partitions | block.partitions
        if current and len(joined) > limit:
            groups.append(current)
            current, joined = [], set(block.partitions)
        current.append((pending, block))
        partitions = joined
    if current:
        groups.append(current)
    return groups
