"""Daily quotas in the embedded mode are exact and durable: counted in the database, so no
number of tenants evicts a count, a restart keeps them, and concurrent requests cannot both
take the last of a quota."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from django.core.cache import cache

from billing import quotas
from billing.models import DailyCounter
from tests import otlp_requests
from tests.clients import http_post
from tests.test_quotas import on_plan

pytestmark = pytest.mark.django_db(transaction=True)
DAY = date(2026, 12, 1)


def test_thousands_of_tenants_evict_no_count():
    assert quotas.add_daily([("first:traces:items", 3000, 3000)], day=DAY) is None
    for number in range(2000):  # more tenants than any cache of a few hundred entries keeps
        assert quotas.add_daily([(f"tenant-{number}:traces:items", 1, 3000)], day=DAY) is None
    assert quotas.add_daily([("first:traces:items", 1, 3000)], day=DAY) == "first:traces:items"
    assert quotas.daily_used("first:traces:items", day=DAY) == 3000


def test_a_refusal_adds_nothing_to_any_counter():
    counters = [("t:logs:items", 5, 10), ("t:logs:bytes", 500, 100)]  # the bytes are over
    assert quotas.add_daily(counters, day=DAY) == "t:logs:bytes"
    assert quotas.daily_used("t:logs:items", day=DAY) == 0 and quotas.daily_used("t:logs:bytes", day=DAY) == 0


def test_concurrent_requests_take_exactly_the_quota():
    admitted = []

    def send():
        if quotas.add_daily([("busy:traces:items", 7, 100)], day=DAY) is None:
            admitted.append(7)

    threads = [threading.Thread(target=send) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 98 == quotas.daily_used("busy:traces:items", day=DAY)  # 14 of 40 fit


def test_older_days_are_pruned():
    quotas.add_daily([("old:traces:items", 1, 10)], day=date(2026, 11, 1))
    quotas.add_daily([("new:traces:items", 1, 10)], day=DAY)
    assert not DailyCounter.objects.filter(day=date(2026, 11, 1)).exists()


def test_the_quota_holds_across_a_restart(tenant, http_url, pipeline):
    on_plan(tenant, items_per_day=10)
    spans = otlp_requests.traces_request(10).SerializeToString()
    assert http_post(http_url, "traces", spans, key=tenant.key).status == 200
    cache.clear()  # what a restart loses: everything in the process's memory
    assert http_post(http_url, "traces", spans, key=tenant.key).status == 429
    assert DailyCounter.objects.get(key=f"{tenant.tenant.id}:traces:items").amount == 10
    assert tenant.count("otel_traces") == 10


def test_with_redis_the_counts_live_in_redis_and_a_refusal_gives_back():
    """Production: the shared cache is Redis, and the daily counts are kept there for every
    replica; none in the database."""
    import redis
    from django.test import override_settings

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {url} is not reachable ({exc}); this test needs it")
    key = f"redis-{DAY}-{threading.get_ident()}-{id(object())}:traces:items"
    with override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    ):
        from django.core.cache import caches

        caches["default"].delete(f"quota:daily:{key}:{DAY:%Y%m%d}")
        assert quotas.add_daily([(key, 6, 10)], day=DAY) is None
        assert quotas.add_daily([(key, 6, 10), ("other:traces:bytes", 1, 10)], day=DAY) == key
        assert quotas.daily_used(key, day=DAY) == 6  # the refused 6 were given back
    assert not DailyCounter.objects.filter(key=key).exists()
