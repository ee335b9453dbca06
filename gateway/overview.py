"""The console's home page for an on-call admin: every tenant's requests and items for a period,
by outcome, the tenants whose requests fail, when each last sent each signal, and the gateway's
own state (its dependencies, the storage writer's queue and INSERT latency)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.core.paginator import Paginator
from django.db.models import Q

import storage
from billing.usage import OUTCOMES, TenantActivity, activity_by_tenant
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
# Orders by activity need no tenant row but the page's; by name, the database pages.
ORDERS = {
    "items": ("items, most first", lambda a: (-a.items, a.tenant_id)),
    "refused": ("refused requests, most first", lambda a: (-a.requests_refused, a.tenant_id)),
    "share": ("share refused, most first", lambda a: (-a.refused_share, a.tenant_id)),
    "bytes": ("bytes, most first", lambda a: (-a.bytes, a.tenant_id)),
    "last": ("last seen, latest first", lambda a: (-max(a.hours), a.tenant_id)),
    "name": ("name (every tenant, with or without requests)", None),
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
        hours = self.activity.last_hour
        return [
            (signal.value, datetime.fromtimestamp(hours[signal.value], UTC) if signal.value in hours else None)
            for signal in Signal
        ]

    @property
    def refused_by_outcome(self) -> list[tuple[str, int]]:
        counts = [(o.value, self.activity.requests.get(o.value, 0)) for o in REFUSED]
        return [(outcome, n) for outcome, n in counts if n]


_FIELDS = ("id", "name", "slug", "status", "plan__name")


def _row(values, activity: dict[str, TenantActivity], idle: TenantActivity) -> TenantRow:
    tenant_id, name, slug, status, plan = values
    return TenantRow(str(tenant_id), name, slug, status, plan or "-", activity.get(str(tenant_id), idle))


def _rows(activities: list[TenantActivity]) -> list[TenantRow]:
    """The tenants of `activities`, in their order (one query, for a page of them)."""
    tenants = {
        str(values[0]): values
        for values in Tenant.objects.filter(id__in=[a.tenant_id for a in activities]).values_list(*_FIELDS)
    }
    by_id = {a.tenant_id: a for a in activities}
    return [_row(tenants[a.tenant_id], by_id, by_id[a.tenant_id]) for a in activities if a.tenant_id in tenants]


def _first_rows(activities: list[TenantActivity], count: int = 10) -> list[TenantRow]:
    """The first `count` of `activities` whose tenant is in the database (usage outlives a tenant
    row removed from it), read a hundred at a time."""
    rows: list[TenantRow] = []
    for start in range(0, len(activities), 100):
        rows += _rows(activities[start : start + 100])
        if len(rows) >= count:
            break
    return rows[:count]


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
    idle = TenantActivity("")
    unknown = activity.pop("", None)  # senders no key identified
    # Every tenant's, and the unidentified senders'.
    columns = [one.counts for one in activity.values()] + ([unknown.counts] if unknown else [])
    totals = dict(zip(OUTCOMES, [sum(column) for column in zip(*columns)] or [0] * len(OUTCOMES)))
    failing = _first_rows(sorted((a for a in activity.values() if a.requests_refused), key=ORDERS["refused"][1]))
    top = _first_rows(sorted((a for a in activity.values() if a.items), key=ORDERS["items"][1]))

    query = (params.get("q") or "").strip()
    failing_only = bool(params.get("failing"))
    order = params.get("o") if params.get("o") in ORDERS else "items"
    tenants = Tenant.objects.all()
    if query:
        tenants = tenants.filter(Q(name__icontains=query) | Q(slug__icontains=query))
    if order == "name":
        if failing_only:
            tenants = tenants.filter(id__in=[tid for tid, a in activity.items() if a.requests_refused])
        page = Paginator(tenants.order_by("name").values_list(*_FIELDS), PAGE_SIZE).get_page(params.get("p"))
        page_rows = [_row(values, activity, idle) for values in page.object_list]
    else:
        pool = list(activity.values())
        if query:
            matching = {str(tid) for tid in tenants.values_list("id", flat=True)}
            pool = [a for a in pool if a.tenant_id in matching]
        if failing_only:
            pool = [a for a in pool if a.requests_refused]
        pool.sort(key=ORDERS[order][1])
        page = Paginator(pool, PAGE_SIZE).get_page(params.get("p"))
        page_rows = _rows(page.object_list)
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
        "items_accepted": sum(one.items_accepted for one in activity.values()),
        "items_refused": sum(one.items - one.items_accepted for one in activity.values()),
        "unknown_senders": unknown.requests_total if unknown else 0,
        "failing": failing,
        "top": top,
        "page": page,
        "page_rows": page_rows,
        "order": order,
        "orders": [(key, label) for key, (label, _) in ORDERS.items()],
        "query": query,
        "failing_only": failing_only,
        "tenant_count": Tenant.objects.count(),
        "shown_count": page.paginator.count,
        "with_requests": order != "name",
        "checks": health.readiness(),
        "writer": metrics.writer_state(),
    }
