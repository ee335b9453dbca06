"""/healthz: the process answers. /readyz: the database, the cache and ClickHouse answer too, and
ClickHouse can take writes (room on its disk, no table whose INSERTs are failing)."""

from __future__ import annotations

import os
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

import storage
from gateway.otlp import runtime
from storage.clickhouse import StorageUnavailable


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def readiness() -> dict[str, str]:
    """Each dependency's state, "ok" or what is wrong (for /readyz and the console's overview)."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # report, don't crash: this endpoint exists to say what is wrong
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        # A round trip through the shared cache (Redis in production): rate limits live there.
        key, token = f"gateway:readyz:{os.getpid()}", uuid.uuid4().hex
        cache.set(key, token, timeout=60)
        checks["cache"] = "ok" if cache.get(key) == token else "error: value not read back"
    except Exception as exc:
        checks["cache"] = f"error: {exc.__class__.__name__}"
    store = storage.get_store()
    try:
        checks["clickhouse"] = "ok" if store.ping() else "unreachable"
    except Exception as exc:
        checks["clickhouse"] = f"error: {exc.__class__.__name__}"
    checks["clickhouse_writes"] = _writes(store)
    return checks


def _writes(store) -> str:
    """Whether storage can take writes now: room on its disk, and no table whose INSERTs are
    failing (a table made unwritable, a disk that refuses writes)."""
    minimum = settings.GATEWAY_READY_MIN_FREE_MB * 1024 * 1024
    try:
        free = store.free_disk_bytes()
    except StorageUnavailable:
        return "error: ClickHouse is unreachable"
    except Exception as exc:
        return f"error: free disk space unknown ({exc.__class__.__name__})"
    if free < minimum:
        return f"error: {free // (1024 * 1024)} MB free, under GATEWAY_READY_MIN_FREE_MB={settings.GATEWAY_READY_MIN_FREE_MB}"
    pipeline = runtime.current_pipeline()
    window = settings.GATEWAY_READY_FAILURE_SECONDS
    failing = pipeline.batcher.failing_tables(within_seconds=window) if pipeline is not None else {}
    if failing:
        table, error = sorted(failing.items())[0]
        return f"error: INSERTs into {table} are failing: {error[:300]}"
    return "ok"
