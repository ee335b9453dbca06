"""What the console and the API show about a tenant's usage: daily volume per signal, accepted
against rejected, and how much of today's quotas is used."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from billing import quotas
from billing.limits import limits_for
from billing.usage import ACCEPTED, UsageRow, daily_usage
from vocabulary import Signal

CHART_DAYS = 30
BAR_WIDTH, CHART_HEIGHT = 14, 80


@dataclass(frozen=True)
class Bar:
    x: int
    day: str
    accepted: int
    rejected: int
    accepted_height: int
    rejected_height: int

    @property
    def accepted_y(self) -> int:
        return CHART_HEIGHT - self.accepted_height

    @property
    def rejected_y(self) -> int:
        return self.accepted_y - self.rejected_height


@dataclass(frozen=True)
class SignalChart:
    signal: str
    bars: list[Bar]
    peak: int
    accepted_total: int
    rejected_total: int
    width: int
    height: int = CHART_HEIGHT


def usage_charts(rows: list[UsageRow], *, until: date, days: int = CHART_DAYS) -> list[SignalChart]:
    dates = [(until - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    charts = []
    for signal in Signal:
        accepted = {d: 0 for d in dates}
        rejected = {d: 0 for d in dates}
        for row in rows:
            if row.signal == signal.value and row.day in accepted:
                accepted[row.day] += row.items_accepted
                rejected[row.day] += row.items - row.items_accepted
        peak = max([accepted[d] + rejected[d] for d in dates] + [1])
        bars = []
        for i, day in enumerate(dates):
            a_height = round(accepted[day] / peak * CHART_HEIGHT)
            r_height = round(rejected[day] / peak * CHART_HEIGHT)
            bars.append(Bar(i * (BAR_WIDTH + 2), day, accepted[day], rejected[day], a_height, r_height))
        charts.append(
            SignalChart(
                signal.value, bars, peak, sum(accepted.values()), sum(rejected.values()), width=days * (BAR_WIDTH + 2)
            )
        )
    return charts


@dataclass(frozen=True)
class QuotaUse:
    what: str
    used: int
    limit: int

    @property
    def percent(self) -> int:
        return min(100, round(self.used * 100 / self.limit)) if self.limit else 0


def quota_consumption(tenant) -> list[QuotaUse]:
    """Today's use of each daily limit (from the shared counters the admission step keeps)."""
    limits = limits_for(plan_id=tenant.plan_id, overrides=tenant.limit_overrides or {})
    day = datetime.now(UTC).date()
    uses = []
    for signal in Signal:
        signal_limits = limits.for_signal(signal)
        for what, limit in (("items", signal_limits.items_per_day), ("bytes", signal_limits.bytes_per_day)):
            if limit:
                used = quotas.daily_used(f"{tenant.id}:{signal}:{what}", day=day)
                uses.append(QuotaUse(f"{signal} {what} today", int(used), limit))
    return uses


def tenant_usage(store, tenant, *, days: int = CHART_DAYS) -> list[UsageRow]:
    today = datetime.now(UTC).date()
    since = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC)
    return daily_usage(store, str(tenant.id), since=since, until=since + timedelta(days=days))


__all__ = ["ACCEPTED", "quota_consumption", "tenant_usage", "usage_charts"]
