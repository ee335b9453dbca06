"""A tenant's effective limits: its plan's, with the tenant's own overrides on top."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields, replace
from typing import Any

from vocabulary import Signal

CACHE_SECONDS = 5.0  # plan edits reach every process within this long


@dataclass(frozen=True)
class SignalLimits:
    """0 means no limit."""

    items_per_second: int = 0
    burst_items: int = 0
    requests_per_second: int = 0
    items_per_day: int = 0
    bytes_per_day: int = 0
    bytes_per_second: int = 0
    burst_bytes: int = 0

    @property
    def burst(self) -> int:
        return self.burst_items or self.items_per_second

    @property
    def bytes_burst(self) -> int:
        return self.burst_bytes or self.bytes_per_second


@dataclass(frozen=True)
class TenantLimits:
    plan_name: str
    max_request_bytes: int = 0
    stored_bytes: int = 0
    signals: dict[Signal, SignalLimits] | None = None

    def for_signal(self, signal: Signal) -> SignalLimits:
        return (self.signals or {}).get(signal, SignalLimits())


UNLIMITED = TenantLimits(plan_name="no plan")
SIGNAL_FIELDS = tuple(f.name for f in fields(SignalLimits))
TENANT_FIELDS = ("max_request_bytes", "stored_bytes")


MAX_LIMIT = 2**63 - 1  # what the counters (and PostgreSQL's bigint) hold


def _is_limit(value: Any) -> bool:
    # bool is an int in Python: `true` is not a limit.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LIMIT


def validate_overrides(overrides: Any) -> dict:
    """Overrides look like {"max_request_bytes": 1, "traces": {"items_per_second": 5}}."""
    if not isinstance(overrides, dict):
        raise ValueError("limit overrides must be a JSON object")
    for key, value in overrides.items():
        if key in TENANT_FIELDS:
            if not _is_limit(value):
                raise ValueError(f"limit override {key} must be a whole number from 0 to {MAX_LIMIT}, got {value!r}")
        elif key in {s.value for s in Signal}:
            if not isinstance(value, dict):
                raise ValueError(f"limit overrides for {key} must be an object")
            for name, number in value.items():
                if name not in SIGNAL_FIELDS:
                    raise ValueError(f"unknown {key} limit {name!r}; use {list(SIGNAL_FIELDS)}")
                if not _is_limit(number):
                    raise ValueError(
                        f"limit override {key}.{name} must be a whole number from 0 to {MAX_LIMIT}, got {number!r}"
                    )
        else:
            raise ValueError(f"unknown limit {key!r}; use {list(TENANT_FIELDS)} or a signal name")
    return overrides


def _plan_limits(plan_id: int) -> TenantLimits:
    from billing.models import Plan

    plan = Plan.objects.prefetch_related("signals").get(pk=plan_id)
    signals = {
        Signal(row.signal): SignalLimits(**{name: getattr(row, name) for name in SIGNAL_FIELDS})
        for row in plan.signals.all()
    }
    return TenantLimits(
        plan_name=plan.name, max_request_bytes=plan.max_request_bytes, stored_bytes=plan.stored_bytes, signals=signals
    )


def apply_overrides(limits: TenantLimits, overrides: dict) -> TenantLimits:
    if not overrides:
        return limits
    signals = dict(limits.signals or {})
    for signal in Signal:
        if overrides.get(signal.value):
            signals[signal] = replace(signals.get(signal, SignalLimits()), **overrides[signal.value])
    tenant_level = {key: overrides[key] for key in TENANT_FIELDS if key in overrides}
    return replace(limits, signals=signals, plan_name=f"{limits.plan_name} (with overrides)", **tenant_level)


_cache: dict[int, tuple[float, TenantLimits]] = {}
_cache_lock = threading.Lock()


def limits_for(*, plan_id: int | None, overrides: dict) -> TenantLimits:
    if plan_id is None:
        return apply_overrides(UNLIMITED, overrides)
    now = time.monotonic()
    cached = _cache.get(plan_id)
    if cached is None or cached[0] < now:
        cached = (now + CACHE_SECONDS, _plan_limits(plan_id))
        with _cache_lock:
            _cache[plan_id] = cached
    return apply_overrides(cached[1], overrides)


def forget_cached_plans() -> None:
    with _cache_lock:
        _cache.clear()
