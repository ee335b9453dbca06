"""/healthz: the process answers. /readyz: the database, the cache and ClickHouse answer too."""

from __future__ import annotations

import os
import uuid

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

import storage


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
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
    try:
        checks["clickhouse"] = "ok" if storage.get_store().ping() else "unreachable"
    except Exception as exc:
        checks["clickhouse"] = f"error: {exc.__class__.__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)
