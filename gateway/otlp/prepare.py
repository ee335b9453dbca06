"""The pipeline's CPU-heavy middle, parse -> flatten -> protect -> encode, in the request's
thread or in worker processes. The parse here is the request's one full parse.

Flattening a 1000-span request and encoding its rows is ~15 ms of Python that holds the GIL.
In one process, every request thread, the gRPC and HTTP servers and the batcher take turns on
that one GIL, so the gateway cannot use more than about one core for Python however many it
has (the benchmark showed a 2-core machine a quarter idle with the GIL held 85% of the time).
`PreparePool` runs that step in worker processes instead, each with its own GIL.

The process that owns the pipeline keeps everything that needs shared state or storage:
authentication, admission, metering and the INSERT (in the embedded mode only it may open chDB).
A worker gets what one request needs and nothing more: the request's body (decompressed), the
tenant's id, retention, sensitive keys and the data key that encrypts (its current version),
and the column types; it returns the encoded blocks and the counts. It never opens the database
or ClickHouse. Workers are spawned, so they import the main module as multiprocessing does
(`manage.py` keeps its entry point under `if __name__ == "__main__"`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from gateway.otlp import decode
from gateway.otlp.fair import FairTurns, NoTurn
from gateway.otlp.worker import init_worker
from storage.batcher import EncodedBlock, encode_blocks
from storage.clickhouse import RowsRejected, StorageError, StorageUnavailable, column_types, encode_native
from storage.flatten import FLATTENERS, TABLES, TableBatch
from storage.flatten.common import TimeWindow
from storage.requests import RequestMark, partition_key, request_key
from tenants.keyring import KeyRing
from tenants.protect import protect
from vocabulary import Reason, Refusal, Signal

log = logging.getLogger(__name__)


Encoder = Callable[[list[TableBatch], RequestMark | None], list[EncodedBlock]]


@dataclass(frozen=True)
class Prepared:
    items: int  # in the request as parsed (spans, data points, log records)
    accepted: int
    rejected: int
    rejection_message: str
    blocks: list[EncodedBlock]  # its rows, which also carry its usage (storage.requests); none if no row is kept


def prepare(
    signal: Signal,
    data: bytes,
    encoding: decode.Encoding,
    *,
    tenant_id: str,
    retention_days: int,
    ring: KeyRing,
    sensitive: frozenset[str],
    encode: Encoder,
    body_bytes: int,
    window: TimeWindow | None = None,
    isolation: str = "dedicated",
) -> Prepared:
    """parse -> flatten -> protect -> encode one request's (decompressed) body: its one full
    parse. `body_bytes`: its size as received, which its rows carry for metering. Raises
    Refusal for a body or an attribute that cannot be read, RowsRejected for rows the column
    types cannot hold."""
    request = decode.parse(signal, data, encoding)
    # The place for per-tenant processing rules (filter, transform, route): after the parse,
    # before the items are counted and flattened. A tenant with rules would then be admitted on
    # this count, after prepare, as OTLP/JSON is (Pipeline.run counts protobuf early only
    # because nothing here changes its items yet).
    items = decode.item_count(signal, request)
    try:
        flattened = FLATTENERS[signal](request, tenant_id=tenant_id, retention_days=retention_days, window=window)
    except (UnicodeDecodeError, DecodeError) as exc:
        raise decode.undecodable_attribute(signal, exc) from exc
    protect(flattened.batches, ring=ring, sensitive=sensitive)
    mark = RequestMark(
        request_key(tenant_id, signal.value, data),
        body_bytes,
        flattened.rejected,
        partition_key(tenant_id, isolation, retention_days),
    )
    return Prepared(
        items, flattened.accepted, flattened.rejected, flattened.rejection_message, encode(flattened.batches, mark)
    )


@dataclass(frozen=True)
class _Job:
    signal: Signal
    data: bytes  # the request's body, decompressed
    encoding: decode.Encoding
    tenant_id: str
    retention_days: int
    sensitive: frozenset[str]
    data_keys: dict[int, bytes]  # the tenant's current data key, {version: key}; empty if it has none
    types: dict[str, dict[str, str]]  # table -> column -> ClickHouse type name
    server_tz: Any
    window: TimeWindow | None  # item timestamps the tenant's tables keep
    body_bytes: int
    isolation: str


# --- in a worker process ------------------------------------------------------------------------
_rings: dict[tuple[str, tuple[tuple[int, bytes], ...]], KeyRing] = {}


def _ring(tenant_id: str, data_keys: dict[int, bytes]) -> KeyRing:
    key = (tenant_id, tuple(sorted(data_keys.items())))
    ring = _rings.get(key)
    if ring is None:
        if len(_rings) > 1024:
            _rings.clear()
        ring = _rings[key] = KeyRing(tenant_id, dict(data_keys))
    return ring


def _encoder(types: dict[str, dict[str, str]], server_tz) -> Encoder:
    def encode_one(batch: TableBatch) -> bytes:
        return encode_native(
            batch.table,
            batch.column_names,
            column_types(types, batch.table, batch.column_names),
            server_tz,
            batch.columns,
        )

    def encode(batches: list[TableBatch], mark: RequestMark | None = None) -> list[EncodedBlock]:
        return encode_blocks(batches, mark=mark, server_tz=server_tz, encode=encode_one)

    return encode


def _run(job: _Job) -> tuple:
    """A job's outcome as plain data: ("ok", Prepared), or ("refused", reason name, message),
    ("rejected", message) for rows storage cannot hold, or ("unavailable", message)."""
    try:
        prepared = prepare(
            job.signal,
            job.data,
            job.encoding,
            tenant_id=job.tenant_id,
            retention_days=job.retention_days,
            ring=_ring(job.tenant_id, job.data_keys),
            sensitive=job.sensitive,
            encode=_encoder(job.types, job.server_tz),
            body_bytes=job.body_bytes,
            window=job.window,
            isolation=job.isolation,
        )
    except Refusal as exc:
        return ("refused", exc.reason.name, exc.message)
    except StorageError as exc:
        return ("rejected" if not exc.retryable else "unavailable", str(exc))
    return ("ok", prepared)


def _ready(pause: float) -> int:
    time.sleep(pause)
    return os.getpid()


def _loaded_packages() -> set[str]:
    return {name.partition(".")[0] for name in sys.modules}


# --- in the owner ---------------------------------------------------------------------------------
class PreparePool:
    """Worker processes for `prepare`. A worker that dies (killed, out of memory) breaks the
    pool: the request it had, and any that arrive meanwhile, are prepared in their own thread
    while a new pool starts, so nothing is lost and no request fails for it."""

    def __init__(self, processes: int, *, type_names: Callable[[tuple[str, ...]], dict], server_tz: Callable[[], Any]):
        if processes < 1:
            raise ValueError("a PreparePool needs at least one process")
        self.processes = processes
        self._type_names = type_names
        self._server_tz = server_tz
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        # One job per worker at a time, taken in turn across tenants (gateway.otlp.fair): the
        # executor's own queue would serve them first come, first served, so a tenant's backlog
        # would hold up everyone else's requests.
        self.turns = FairTurns(processes)

    def start(self) -> list[int]:
        """Start the workers and wait until each has loaded; returns their pids."""
        with self._lock:
            if self._executor is None:
                self._executor = self._new_executor()
            executor = self._executor
        return self._warm(executor)

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: a fork of this process would copy its gRPC, chDB and database threads' state.
        return ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker
        )

    def _warm(self, executor: ProcessPoolExecutor) -> list[int]:
        # Until every worker has answered once: a worker that has loaded takes tasks while the
        # others are still importing, so one round may not reach them all.
        pids: set[int] = set()
        deadline = time.monotonic() + 120
        while len(pids) < self.processes and time.monotonic() < deadline:
            round_ = [executor.submit(_ready, 0.05) for _ in range(self.processes)]
            pids.update(future.result(timeout=120) for future in round_)
        return sorted(pids)

    def pids(self) -> list[int]:
        executor = self._executor
        if executor is None:
            return []
        return sorted(process.pid for process in (executor._processes or {}).values())

    def loaded_packages(self) -> set[str]:
        """The top-level packages a worker has imported (what it holds in memory)."""
        executor = self._executor
        if executor is None:
            return set()
        return executor.submit(_loaded_packages).result(timeout=60)

    def stop(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def prepare(
        self,
        signal: Signal,
        data: bytes,
        encoding: decode.Encoding,
        *,
        tenant_id: str,
        retention_days: int,
        ring: KeyRing,
        sensitive: frozenset[str],
        timeout: float,
        body_bytes: int,
        window: TimeWindow | None = None,
        isolation: str = "dedicated",
    ) -> Prepared:
        """`prepare`, in a worker process."""
        data_keys = {} if ring.current is None else {ring.current: ring.keys[ring.current]}  # encrypts
        job = _Job(
            signal,
            data,
            encoding,
            tenant_id,
            retention_days,
            sensitive,
            data_keys,
            self._type_names(TABLES[signal]),
            self._server_tz(),
            window,
            body_bytes,
            isolation,
        )
        started = time.monotonic()
        try:
            with self.turns.turn(tenant_id, timeout=timeout):
                outcome = self._submit(job, timeout - (time.monotonic() - started))
        except NoTurn as exc:
            raise StorageUnavailable(f"preparing the rows did not start within {timeout:g}s") from exc
        kind = outcome[0]
        if kind == "ok":
            return outcome[1]
        if kind == "refused":
            raise Refusal(Reason[outcome[1]], outcome[2])
        if kind == "rejected":
            raise RowsRejected(outcome[1])
        raise StorageUnavailable(outcome[1])

    def _submit(self, job: _Job, timeout: float) -> tuple:
        executor = self._executor
        if executor is None:
            raise StorageUnavailable("the gateway is shutting down; nothing was stored")
        try:
            future = executor.submit(_run, job)
        except RuntimeError as exc:  # broken, or shut down by another thread that replaced it
            self._replace(executor, exc)
            future = None
        try:
            return future.result(max(0.0, timeout)) if future is not None else _run(job)
        except FutureTimeout as exc:
            raise StorageUnavailable(f"preparing the rows did not finish within {timeout:g}s") from exc
        except CancelledError as exc:
            raise StorageUnavailable("the gateway is shutting down; nothing was stored") from exc
        except BrokenProcessPool as exc:  # a worker died with this job or another in hand
            self._replace(executor, exc)
            return _run(job)

    def _replace(self, broken: ProcessPoolExecutor, exc: Exception) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # another request thread did it, or the pool is stopping
            log.error("a prepare worker process stopped (%s); starting new ones", exc)
            self._executor = self._new_executor()
            self.restarts += 1
        broken.shutdown(wait=False, cancel_futures=True)
