"""Storage: the ClickHouse schema, the batched writer and the tenant-scoped reader.

`get_store()` is the one way every part of the gateway reaches ClickHouse (the pipeline, the
console, the API, health checks, billing and commands). It is built lazily, once per process,
from the settings, and connects on first use: in the embedded mode only one process may open
the chDB directory, so nothing here opens it at import or in a parent that forks.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.clickhouse import Store

_lock = threading.Lock()
_store: Store | None = None


def store_from_settings() -> Store:
    """A new, not yet connected store for GATEWAY_CLICKHOUSE_URL."""
    from django.conf import settings

    from storage.clickhouse import Store
    from storage.host import available_cpus

    merge_threads = settings.GATEWAY_CHDB_MERGE_THREADS or max(1, available_cpus() // 2)
    return Store(
        settings.GATEWAY_CLICKHOUSE_URL,
        cluster=settings.GATEWAY_CLICKHOUSE_CLUSTER,
        merge_threads=merge_threads,
        async_insert=settings.GATEWAY_CLICKHOUSE_ASYNC_INSERT,
    )


def get_store() -> Store:
    """This process's store."""
    global _store
    if _store is None:
        with _lock:
            if _store is None:
                _store = store_from_settings()
    return _store


def install_store(store: Store | None) -> Store | None:
    """Make `store` this process's store (tests, and a process shutting down); returns the
    previous one, which the caller closes if it is done with it."""
    global _store
    with _lock:
        previous, _store = _store, store
    return previous
