"""The pipeline's admission step: a request is admitted whole or refused whole, before
anything is flattened or stored. Each refusal names the limit and the plan's value."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from billing import quotas
from billing.limits import TenantLimits, limits_for
from tenants.authentication import Principal
from vocabulary import Reason, Refusal, Signal

STORED_BYTES_CACHE_SECONDS = 60.0


class LimitExceeded(Refusal):
    """A request over one of its tenant's limits: throttled (retry later), over a daily quota
    (retry after midnight UTC) or beyond what the plan accepts at all (too large, the stored-data
    cap)."""


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((tomorrow - now).total_seconds()))


class Admission:
    """Checks one request against its tenant's limits. `stored_bytes(tenant_id)` tells how
    much the tenant has stored (looked up at most once a minute per tenant); `clock` tells the
    time the daily quotas count in (UTC)."""

    def __init__(self, stored_bytes: Callable[[str], int], *, clock: Callable[[], datetime] | None = None):
        self._stored_bytes = stored_bytes
        self.clock = clock or (lambda: datetime.now(UTC))
        self._stored: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def limits(self, principal: Principal) -> TenantLimits:
        return limits_for(plan_id=principal.plan_id, overrides=principal.limit_overrides or {})

    def check_size(self, principal: Principal, body_bytes: int) -> None:
        limits = self.limits(principal)
        if limits.max_request_bytes and body_bytes > limits.max_request_bytes:
            raise LimitExceeded(
                Reason.TOO_LARGE,
                f"request body of {body_bytes} bytes exceeds the limit of "
                f"{limits.max_request_bytes} bytes of plan {limits.plan_name}; send smaller batches",
            )

    def admit_bytes(self, principal: Principal, signal: Signal, body_bytes: int) -> None:
        """The bandwidth limit (bytes per second with a burst, as Tempo's rate_limit_bytes),
        before the body is decompressed: what it bounds is what the tenant sends."""
        limits = self.limits(principal)
        signal_limits = limits.for_signal(signal)
        if not signal_limits.bytes_per_second:
            return
        burst = signal_limits.bytes_burst
        if body_bytes > burst:
            raise LimitExceeded(
                Reason.TOO_LARGE,
                f"request of {body_bytes} bytes is more than plan {limits.plan_name} accepts at once for {signal} "
                f"({burst} bytes); send smaller batches",
            )
        wait = quotas.take_bytes(
            f"{principal.tenant_id}:{signal}", rate=signal_limits.bytes_per_second, burst=burst, cost=body_bytes
        )
        if wait:
            raise LimitExceeded(
                Reason.THROTTLED,
                f"{signal} bandwidth limit: plan {limits.plan_name} allows {signal_limits.bytes_per_second} bytes "
                f"per second; this request has {body_bytes}",
                retry_after_seconds=max(1, math.ceil(wait)),
            )

    def admit(self, principal: Principal, signal: Signal, *, items: int, body_bytes: int) -> None:
        """Rate limits and quotas for a decoded request (its size was checked before decoding)."""
        limits = self.limits(principal)
        if limits.stored_bytes and self._current_stored(principal.tenant_id) >= limits.stored_bytes:
            raise LimitExceeded(
                Reason.QUOTA_EXHAUSTED,
                f"tenant {principal.tenant_slug} has reached the stored-data "
                f"cap of {limits.stored_bytes} bytes of plan {limits.plan_name}; "
                "delete data or move to a larger plan",
            )
        signal_limits = limits.for_signal(signal)
        key = f"{principal.tenant_id}:{signal}"
        if signal_limits.requests_per_second:
            allowed, wait = quotas.request_allowed(key, per_second=signal_limits.requests_per_second)
            if not allowed:
                raise LimitExceeded(
                    Reason.THROTTLED,
                    f"too many {signal} requests: plan {limits.plan_name} allows "
                    f"{signal_limits.requests_per_second} per second",
                    retry_after_seconds=wait,
                )
        if signal_limits.items_per_second and items:
            if items > signal_limits.burst:
                raise LimitExceeded(
                    Reason.TOO_LARGE,
                    f"request holds {items} {signal} items, more than plan "
                    f"{limits.plan_name} accepts at once ({signal_limits.burst}); split it",
                )
            wait = quotas.take_items(key, rate=signal_limits.items_per_second, burst=signal_limits.burst, cost=items)
            if wait:
                raise LimitExceeded(
                    Reason.THROTTLED,
                    f"{signal} rate limit: plan {limits.plan_name} allows "
                    f"{signal_limits.items_per_second} items per second; this request has {items}",
                    retry_after_seconds=max(1, math.ceil(wait)),
                )
        self._daily(principal, signal, limits, items=items, body_bytes=body_bytes)

    def _daily(self, principal: Principal, signal: Signal, limits: TenantLimits, *, items: int, body_bytes: int):
        signal_limits = limits.for_signal(signal)
        now = self.clock()
        counters = []
        if signal_limits.items_per_day:
            counters.append((f"{principal.tenant_id}:{signal}:items", items, signal_limits.items_per_day))
        if signal_limits.bytes_per_day:
            counters.append((f"{principal.tenant_id}:{signal}:bytes", body_bytes, signal_limits.bytes_per_day))
        over = quotas.add_daily(counters, day=now.date()) if counters else None
        if over is not None:
            what, limit = (
                ("items", signal_limits.items_per_day)
                if over.endswith(":items")
                else ("bytes", signal_limits.bytes_per_day)
            )
            raise LimitExceeded(
                Reason.DAILY_QUOTA,
                f"daily {signal} quota reached: plan {limits.plan_name} allows "
                f"{limit} {what} per day (UTC); it resets at midnight UTC",
                retry_after_seconds=_seconds_to_midnight(now),
            )

    def _current_stored(self, tenant_id: str) -> int:
        now = time.monotonic()
        cached = self._stored.get(tenant_id)
        if cached is None or cached[0] < now:
            cached = (now + STORED_BYTES_CACHE_SECONDS, self._stored_bytes(tenant_id))
            with self._lock:
                self._stored[tenant_id] = cached
        return cached[1]
