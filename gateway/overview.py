"""The console's home page for an on-call admin: every tenant's requests and items for a period,
by outcome, the tenants whose requests fail, when each last sent each signal, and the gateway's
own state (its dependencies, the storage writer's queue and INSERT latency)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.paginator import Paginator

import storage
from billing.usage import TenantActivity, activity_by_tenant
from gateway import health, metrics
from storage.clickhouse import StorageUnavailable
from tenants.models import Tenant
from vocabulary import Outcome, Signal

PERIODS = {
    "24h": ("last 24 hours", timedelta(hours=24)),
    "7d": ("last 7 days", timedelta(days=7)),
    "30d": ("last 30 days", timedelta(days=30)),
}
REFUSED = tuple(o for o in Outcome if o not in (Outcome.ACCEPTED, Outcome.PARTIALLY_ACCEPTED))
ORDERS = {
    "items": ("items, most first", lambda row: (-row.activity.items, row.name)),
    "refused": ("refused requests, most first", lambda row: (-row.activity.requests_refused, row.name)),
    "share": ("share refused, most first", lambda row: (-row.activity.refused_share, row.name)),
    "bytes": ("bytes, most first", lambda row: (-row.activity.bytes, row.name)),
    "last": ("last seen, latest first", lambda row: (-row.last_seen_ts, row.name)),
    "name": ("name", lambda row: (row.name.lower(),)),
}
PAGE_SIZE = 100


@dataclass
class TenantRow:
    id: str
    name: str
    slug: str
    status: str
    plan: str
    activity: TenantActivity

    @property
    def last_seen(self) -> list[tuple[str, datetime | None]]:
        hours = self.activity.last_hour or {}
        return [(signal.value, hours.get(signal.value)) for signal in Signal]

    @property
    def last_seen_ts(self) -> float:
        hours = (self.activity.last_hour or {}).values()
        return max((hour.timestamp() for hour in hours), default=0.0)

    @property
    def refused_by_outcome(self) -> list[tuple[str, int]]:
        counts = [(o.value, self.activity.requests.get(o.value, 0)) for o in REFUSED]
        return [(outcome, n) for outcome, n in counts if n]


def _period(params) -> tuple[str, datetime, datetime]:
    key = params.get("period") if params.get("period") in PERIODS else "24h"
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return key, until - PERIODS[key][1], until


def context(params) -> dict:
    period, since, until = _period(params)
    error = ""
    try:
        activity = activity_by_tenant(storage.get_store(), since=since, until=until)
    except StorageUnavailable as exc:
        activity, error = {}, f"usage is not available right now: {exc}"
    rows = [
        TenantRow(
            str(t["id"]),
            t["name"],
            t["slug"],
            t["status"],
            t["plan__name"] or "-",
            activity.get(str(t["id"])) or TenantActivity(str(t["id"]), {}, last_hour={}),
        )
        for t in Tenant.objects.values("id", "name", "slug", "status", "plan__name")
    ]
    unknown = activity.get("")  # senders no key identified
    totals = {o.value: sum(row.activity.requests.get(o.value, 0) for row in rows) for o in Outcome}
    if unknown:
        for outcome, count in unknown.requests.items():
            totals[outcome] = totals.get(outcome, 0) + count
    failing = sorted((r for r in rows if r.activity.requests_refused), key=ORDERS["refused"][1])[:10]
    top = sorted((r for r in rows if r.activity.items), key=ORDERS["items"][1])[:10]

    query = (params.get("q") or "").strip().lower()
    shown = [r for r in rows if query in r.name.lower() or query in r.slug] if query else rows
    if params.get("failing"):
        shown = [r for r in shown if r.activity.requests_refused]
    order = params.get("o") if params.get("o") in ORDERS else "items"
    shown.sort(key=ORDERS[order][1])
    page = Paginator(shown, PAGE_SIZE).get_page(params.get("p"))
    return {
        "period": period,
        "periods": [(key, label) for key, (label, _) in PERIODS.items()],
        "since": since,
        "until": until,
        "usage_error": error,
        "totals": totals,
        "outcomes": [o.value for o in Outcome],
        "refused_outcomes": [o.value for o in REFUSED],
        "requests_total": sum(totals.values()),
        "items_accepted": sum(r.activity.items_accepted for r in rows),
        "items_refused": sum(r.activity.items - r.activity.items_accepted for r in rows),
        "unknown_senders": unknown.requests_total if unknown else 0,
        "failing": failing,
        "top": top,
        "page": page,
        "order": order,
        "orders": [(key, label) for key, (label, _) in ORDERS.items()],
        "query": params.get("q") or "",
        "failing_only": bool(params.get("failing")),
        "tenant_count": len(rows),
        "shown_count": len(shown),
        "checks": health.readiness(),
        "writer": metrics.writer_state(),
    }
