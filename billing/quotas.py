"""Counters every process and replica shares, kept in Django's cache: local memory in the
single-process embedded mode, Redis in production.

- requests per second: django-ratelimit's fixed one-second windows;
- items per second with a burst: a token bucket (a Lua script in Redis, so that a check and its
  take are one atomic step on the server's clock; a lock in the single embedded process);
- items and bytes per UTC day: exact counts that are never evicted. In Redis, atomic
  increments given back when a request is refused; otherwise (the embedded mode) rows in the
  database, added to only while under the limit, so a restart or 10,000 tenants lose nothing
  (a local-memory cache would evict them, and forget them on restart).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta

from django.core.cache import cache
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

_TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait_ms
"""


class LocalBuckets:
    """Token buckets in this process (the embedded mode has exactly one). `clock`: seconds on
    a monotonic clock (tests move it by hand)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, *, rate: float, burst: float, cost: float) -> float:
        now = self.clock()
        with self._lock:
            tokens, ts = self._state.get(key, (burst, now))
            tokens = min(burst, tokens + (now - ts) * rate)
            if tokens >= cost:
                self._state[key] = (tokens - cost, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (cost - tokens) / rate


class RedisBuckets:
    def __init__(self, client) -> None:
        self._script = client.register_script(_TOKEN_BUCKET_LUA)

    def take(self, key: str, *, rate: float, burst: float, cost: float) -> float:
        return int(self._script(keys=[cache.make_key(key)], args=[rate, burst, cost])) / 1000


_buckets = None
_buckets_lock = threading.Lock()


def bucket_store() -> LocalBuckets | RedisBuckets:
    """This process's token buckets: in Redis when the cache is Redis, else in memory."""
    global _buckets
    if _buckets is None:
        with _buckets_lock:
            if _buckets is None:
                client = _redis_client()
                _buckets = RedisBuckets(client) if client is not None else LocalBuckets()
    return _buckets


def take_items(key: str, *, rate: int, burst: int, cost: int) -> float:
    """Take `cost` items from the bucket; 0 when allowed, else seconds until they would be."""
    return bucket_store().take(f"quota:items:{key}", rate=rate, burst=burst, cost=cost)


def take_bytes(key: str, *, rate: int, burst: int, cost: int) -> float:
    """`take_items` for request bytes, in a bucket of their own."""
    return bucket_store().take(f"quota:bytes:{key}", rate=rate, burst=burst, cost=cost)


def _redis_client():
    """The Redis client behind Django's cache, or None when the cache is not Redis."""
    client_factory = getattr(getattr(cache, "_cache", None), "get_client", None)
    return client_factory(write=True) if callable(client_factory) else None


def _uses_redis() -> bool:
    """Asked per request: whether the cache is Redis, without making a client to find out."""
    return callable(getattr(getattr(cache, "_cache", None), "get_client", None))


def request_allowed(key: str, *, per_second: int) -> tuple[bool, int]:
    """Count one request against `per_second` (django-ratelimit); (allowed, seconds to wait)."""
    usage = get_usage(
        HttpRequest(),
        group="otlp-requests",
        key=lambda group, request: key,
        rate=f"{per_second}/s",
        method=ALL,
        increment=True,
    )
    if usage is None or not usage["should_limit"]:
        return True, 0
    return False, max(1, math.ceil(usage["time_left"]))


def add_daily(counters: list[tuple[str, int, int]], *, day: date) -> str | None:
    """Add each (key, amount, limit) to its count for `day`. If any would pass its limit,
    nothing is added and that key is returned; otherwise None."""
    if _uses_redis():
        return _add_daily_in_cache(counters, day=day)
    return _add_daily_in_database(counters, day=day)


def _add_daily_in_cache(counters: list[tuple[str, int, int]], *, day: date) -> str | None:
    added: list[tuple[str, int]] = []
    for key, amount, limit in counters:
        cache_key = f"quota:daily:{key}:{day:%Y%m%d}"
        cache.add(cache_key, 0, timeout=2 * 86400)
        total = cache.incr(cache_key, amount)
        added.append((cache_key, amount))
        if total > limit:
            for undo_key, undo_amount in added:
                cache.decr(undo_key, undo_amount)
            return key
    return None


def daily_used(key: str, *, day: date) -> int:
    """What `add_daily` has counted for `key` on `day`."""
    if _uses_redis():
        return int(cache.get(f"quota:daily:{key}:{day:%Y%m%d}", 0))
    from billing.models import DailyCounter

    return DailyCounter.objects.filter(key=key, day=day).values_list("amount", flat=True).first() or 0


_pruned_before: date | None = None


def _add_daily_in_database(counters: list[tuple[str, int, int]], *, day: date) -> str | None:
    from billing.models import DailyCounter

    global _pruned_before
    if _pruned_before != day:  # once a day per process: counts of days before yesterday go
        DailyCounter.objects.filter(day__lt=day - timedelta(days=1)).delete()
        _pruned_before = day
    with transaction.atomic():
        for key, amount, limit in counters:
            DailyCounter.objects.get_or_create(key=key, day=day)
            # Added only while it stays within the limit: one statement, so concurrent requests
            # (threads, or processes sharing PostgreSQL) cannot both take the last of a quota.
            added = DailyCounter.objects.filter(key=key, day=day, amount__lte=limit - amount).update(
                amount=F("amount") + amount
            )
            if not added:
                transaction.set_rollback(True)
                return key
    return None
