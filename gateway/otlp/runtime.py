"""The process's ingest pipeline, built once from settings on the process's store
(storage.get_store()).

In the embedded mode exactly one process may open the chDB data directory, so the pipeline is
built lazily in the process that serves requests (the gunicorn worker), never in a parent that
forks.
"""

from __future__ import annotations

import threading

from django.conf import settings

import storage
from billing.admission import Admission
from gateway.metrics import BatcherMetrics
from gateway.otlp.pipeline import Pipeline, PipelineConfig
from gateway.otlp.prepare import PreparePool
from storage.batcher import Batcher
from storage.clickhouse import StorageUnavailable, Store
from storage.host import available_cpus
from storage.tenant_data import tenant_stored_bytes

_lock = threading.Lock()
_pipeline: Pipeline | None = None


def build_pipeline(*, store: Store | None = None, migrate: bool | None = None) -> Pipeline:
    """`store`: the process's unless given. `migrate` None: as GATEWAY_MIGRATE_ON_START says,
    and when that is unset, when the store is embedded chDB (a server is migrated by a Job)."""
    store = store or storage.get_store()
    if migrate if migrate is not None else migrate_on_start(store):
        store.migrate()
    batcher = Batcher(
        store,
        max_rows=settings.GATEWAY_BATCH_MAX_ROWS,
        linger_seconds=settings.GATEWAY_BATCH_LINGER_MS / 1000,
        fair_rows=settings.GATEWAY_BATCH_FAIR_ROWS,
        wait_seconds=settings.GATEWAY_BATCH_WAIT_MS / 1000,
        busy_lane=settings.GATEWAY_BATCH_BUSY_LANE,
        busy_niceness=settings.GATEWAY_BATCH_BUSY_NICENESS,
        observer=BatcherMetrics(),
        # Embedded only (storage.batcher: the INSERT is sent again after a restart with its token).
        journal=settings.DATA_DIR / "repairs" if store.embedded else None,
    )
    batcher.start()
    batcher.reconcile()
    config = PipelineConfig(
        max_decompressed_bytes=settings.GATEWAY_MAX_DECOMPRESSED_BYTES,
        store_timeout_seconds=settings.GATEWAY_STORE_TIMEOUT_SECONDS,
        retry_after_seconds=settings.GATEWAY_RETRY_AFTER_SECONDS,
        future_grace_seconds=settings.GATEWAY_FUTURE_GRACE_SECONDS,
    )
    workers = None
    processes = prepare_processes(store)
    if processes:
        workers = PreparePool(processes, type_names=store.type_names, server_tz=lambda: store.server_tz)
        workers.start()
    return Pipeline(
        batcher, config, Admission(stored_bytes=lambda tenant_id: _stored_bytes(store, tenant_id)), workers=workers
    )


def migrate_on_start(store: Store) -> bool:
    """GATEWAY_MIGRATE_ON_START, or when unset: yes for embedded chDB, no for a server."""
    if settings.GATEWAY_MIGRATE_ON_START is not None:
        return settings.GATEWAY_MIGRATE_ON_START
    return store.embedded


def prepare_processes(store: Store) -> int:
    """GATEWAY_PREPARE_PROCESSES, or when unset: one per available CPU in the embedded mode,
    none (prepare in the request's thread) with a ClickHouse server."""
    if settings.GATEWAY_PREPARE_PROCESSES is not None:
        return max(0, settings.GATEWAY_PREPARE_PROCESSES)
    if not store.embedded:
        return 0
    return available_cpus()


def _stored_bytes(store: Store, tenant_id: str) -> int:
    try:
        return tenant_stored_bytes(store, tenant_id)
    except StorageUnavailable:
        return 0  # the write that follows will tell the sender storage is down


def get_pipeline() -> Pipeline:
    global _pipeline
    if _pipeline is None:
        with _lock:
            if _pipeline is None:
                _pipeline = build_pipeline()
    return _pipeline


def current_pipeline() -> Pipeline | None:
    """The process's pipeline if it has one; never builds it (health checks ask this)."""
    return _pipeline


def install_pipeline(pipeline: Pipeline | None) -> Pipeline | None:
    """Make `pipeline` the process's pipeline (startup and tests); returns the previous one."""
    global _pipeline
    with _lock:
        previous, _pipeline = _pipeline, pipeline
    return previous
