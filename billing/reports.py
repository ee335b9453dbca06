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
BAR_WIDTH, BAR_GAP, CHART_HEIGHT = 14, 2, 80
# Room for the y axis' labels on the left, the dates below and the top label above the bars.
AXIS_LEFT, AXIS_BOTTOM, AXIS_TOP = 52, 18, 8
AXIS_RIGHT = 20  # room for the last date, centred under the last bar
DATE_EVERY = 7  # a date under every 7th bar (each bar's own date is in its tooltip)


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
        return AXIS_TOP + CHART_HEIGHT - self.accepted_height

    @property
    def rejected_y(self) -> int:
        return self.accepted_y - self.rejected_height


@dataclass(frozen=True)
class Tick:
    y: int
    label: str


@dataclass(frozen=True)
class DateLabel:
    x: int
    label: str


@dataclass(frozen=True)
class SignalChart:
    """One signal's items per day for the tenant page: bars (accepted below, refused on top)
    with a y axis (0, half the peak, the peak) and a date under every DATE_EVERY-th day."""

    signal: str
    bars: list[Bar]
    peak: int
    accepted_total: int
    rejected_total: int
    width: int
    ticks: list[Tick]
    dates: list[DateLabel]
    requests: dict[str, int]  # by outcome, over the chart's days
    height: int = AXIS_TOP + CHART_HEIGHT + AXIS_BOTTOM
    axis_x: int = AXIS_LEFT
    axis_y: int = AXIS_TOP + CHART_HEIGHT
    date_y: int = AXIS_TOP + CHART_HEIGHT + 14


def _short(number: int) -> str:
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if number >= size:
            return f"{number / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(number)


def usage_charts(rows: list[UsageRow], *, until: date, days: int = CHART_DAYS) -> list[SignalChart]:
    dates = [(until - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    charts = []
    for signal in Signal:
        accepted = {d: 0 for d in dates}
        rejected = {d: 0 for d in dates}
        requests: dict[str, int] = {}
        for row in rows:
            if row.signal == signal.value and row.day in accepted:
                accepted[row.day] += row.items_accepted
                rejected[row.day] += row.items - row.items_accepted
                requests[row.outcome] = requests.get(row.outcome, 0) + row.requests
        peak = max([accepted[d] + rejected[d] for d in dates] + [1])
        bars, labels = [], []
        for i, day in enumerate(dates):
            x = AXIS_LEFT + 2 + i * (BAR_WIDTH + BAR_GAP)
            a_height = round(accepted[day] / peak * CHART_HEIGHT)
            r_height = round(rejected[day] / peak * CHART_HEIGHT)
            bars.append(Bar(x, day, accepted[day], rejected[day], a_height, r_height))
            if (days - 1 - i) % DATE_EVERY == 0:
                labels.append(DateLabel(x + BAR_WIDTH // 2, day[5:]))  # MM-DD
        # 0 and the peak, and half the peak where that is a different whole number; no data: 0 only.
        shares = (0, 0.5, 1) if peak >= 2 else (0, 1) if any(accepted.values()) or any(rejected.values()) else (0,)
        ticks = [
            Tick(AXIS_TOP + CHART_HEIGHT - round(CHART_HEIGHT * share), _short(round(peak * share))) for share in shares
        ]
        charts.append(
            SignalChart(
                signal.value,
                bars,
                peak,
                sum(accepted.values()),
                sum(rejected.values()),
                width=AXIS_LEFT + 4 + days * (BAR_WIDTH + BAR_GAP) + AXIS_RIGHT,
                ticks=ticks,
                dates=labels,
                requests=requests,
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
