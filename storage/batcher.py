"""Groups the rows of concurrent requests into one columnar INSERT per table.

A request hands its batches to `write()` and is blocked until they are stored (or failed),
so nothing is acknowledged before it is in ClickHouse. `write()` encodes the request's rows
(ClickHouse Native format) in the request's own thread; one thread does all inserts, joining
the encoded blocks of the requests waiting into one INSERT per table, which is also what
chDB's one-writer-per-process model wants. Keeping the encoding out of that thread keeps the
writer, the one thing every request waits for in turn, off the GIL for most of its time.

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

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from storage.clickhouse import StorageError, StorageUnavailable, Store
from storage.flatten import TableBatch
from storage.partitions import MAX_PARTITIONS_PER_INSERT, split_by_partition
from storage.schema import USAGE_TABLE

log = logging.getLogger(__name__)


@dataclass
class EncodedBlock:
    """One TableBatch, encoded (ClickHouse Native)."""

    table: str
    column_names: tuple[str, ...]
    rows: int
    data: bytes
    partitions: frozenset = frozenset()  # the table partitions its rows go to (storage.partitions)


@dataclass
class _Pending:
    blocks: list[EncodedBlock]
    done: threading.Event = field(default_factory=threading.Event)
    error: StorageError | None = None

    @property
    def rows(self) -> int:
        return sum(block.rows for block in self.blocks)


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
    def __init__(
        self,
        store: Store,
        *,
        max_rows: int = 50_000,
        linger_seconds: float = 0.002,
        wait_seconds: float = 0.0,
        observer: BatcherObserver | None = None,
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
            raise StorageUnavailable(f"storage did not confirm the write within {timeout:g}s")
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
            self._queue.put(_Pending(blocks))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued before this call has been written (or has failed);
        False if that took longer than `timeout`."""
        if self._thread is None or not self._thread.is_alive():
            return False
        marker = _Pending([])
        self._queue.put(marker)
        return marker.done.wait(timeout)

    def encode(self, batches: list[TableBatch]) -> list[EncodedBlock]:
        started = time.perf_counter()
        try:
            return [
                EncodedBlock(
                    part.table,
                    tuple(part.column_names),
                    part.rows,
                    self.store.encode(part.table, part.column_names, part.columns),
                    partitions,
                )
                for batch in batches
                for part, partitions in split_by_partition(batch, server_tz=self.store.server_tz)
            ]
        except StorageError:
            # (Cannot reach ClickHouse for the column types, or rows it could not take.) Counted
            # as rows that failed to store, as a refused INSERT of them would be.
            for batch in batches:
                self.observer.inserted(
                    table=batch.table, rows=batch.rows, seconds=time.perf_counter() - started, ok=False
                )
            raise

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _WAKE:
                continue
            if first is _STOP:
                return
            group, stop = self._collect(first)
            self.observer.queue_depth(self._queue.qsize())
            self._flush(group)
            if stop:
                return

    def _collect(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """`first` and what joins it: everything queued; until the linger runs out, the rows of
        requests still preparing them; and until the wait runs out, whatever arrives."""
        group, rows = [first], first.rows
        self.observer.collecting(rows=rows)
        started = time.monotonic()
        wait_until = started + self.wait_seconds
        linger_until = max(wait_until, started + self.linger_seconds)
        while rows < self.max_rows:
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
                return group, True
            group.append(item)
            rows += item.rows
        return group, False

    def _flush(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        by_table: dict[tuple[str, tuple[str, ...]], list[tuple[_Pending, EncodedBlock]]] = {}
        for pending in group:
            for block in pending.blocks:
                by_table.setdefault((block.table, block.column_names), []).append((pending, block))
        # The usage table last, and only the usage rows of requests whose data was stored: a
        # request whose rows could not be written is metered by its refusal, not as accepted.
        for (table, _), blocks in sorted(by_table.items(), key=lambda entry: entry[0][0] == USAGE_TABLE):
            if table == USAGE_TABLE:
                blocks = [(pending, block) for pending, block in blocks if pending.error is None]
            for parts in _within_partition_limit(blocks):
                self._insert_parts(table, parts)
        self.observer.flushed(seconds=time.perf_counter() - started)
        for pending in group:
            if pending.error is not None:
                log.error("storing a request failed: %s", pending.error)
            pending.done.set()

    def _insert_parts(self, table: str, parts: list[tuple[_Pending, EncodedBlock]]) -> None:
        """One INSERT of `parts`; when it fails, one per block, so that a bad request fails alone."""
        try:
            self._insert([block for _, block in parts])
            return
        except StorageError as exc:
            if len(parts) == 1:
                parts[0][0].error = exc
                return
            log.warning("grouped insert into %s failed (%s); retrying request by request", table, exc)
        for pending, block in parts:
            try:
                self._insert([block])
            except StorageError as single_exc:
                pending.error = single_exc

    def _insert(self, blocks: list[EncodedBlock]) -> None:
        first = blocks[0]
        rows, started, ok = sum(block.rows for block in blocks), time.perf_counter(), False
        try:
            self.store.insert_native(first.table, first.column_names, [block.data for block in blocks])
            ok = True
            self._failing.pop(first.table, None)
        except StorageError as exc:
            if exc.retryable:
                self._failing[first.table] = (time.monotonic(), str(exc))
            raise
        finally:
            self.observer.inserted(table=first.table, rows=rows, seconds=time.perf_counter() - started, ok=ok)
        self.inserts += 1


def _within_partition_limit(
    blocks: list[tuple[_Pending, EncodedBlock]], limit: int = MAX_PARTITIONS_PER_INSERT
) -> list[list[tuple[_Pending, EncodedBlock]]]:
    """`blocks` (of one table) in groups whose partitions together stay within `limit`, each
    group one INSERT. A block is never over the limit alone (storage.partitions split it)."""
    groups: list[list[tuple[_Pending, EncodedBlock]]] = []
    current: list[tuple[_Pending, EncodedBlock]] = []
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
