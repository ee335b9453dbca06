"""Selectors over the usage table (always through the tenant-scoped reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import storage
from storage.clickhouse import Store
from storage.reader import TenantReader
from storage.schema import REFUSALS_TABLE, USAGE_TABLE
from vocabulary import Outcome

ACCEPTED = (Outcome.ACCEPTED.value, Outcome.PARTIALLY_ACCEPTED.value)


@dataclass(frozen=True)
class UsageRow:
    day: str
    signal: str
    outcome: str
    requests: int
    items: int
    items_accepted: int
    bytes: int


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def daily_usage(store: Store, tenant_id: str, *, since: datetime, until: datetime) -> list[UsageRow]:
    """Requests, items and bytes per UTC day, signal and outcome in [since, until)."""
    result = TenantReader(store, tenant_id).query(
        f"SELECT toString(toDate(Hour)) AS day, Signal, Outcome, sum(Requests), sum(Items), sum(ItemsAccepted),"
        f" sum(Bytes) FROM {USAGE_TABLE} WHERE TenantId = {{tenant_id:String}}"
        " AND Hour >= {since:DateTime('UTC')} AND Hour < {until:DateTime('UTC')}"
        " GROUP BY day, Signal, Outcome ORDER BY day, Signal, Outcome",
        {"since": _utc(since), "until": _utc(until)},
    )
    return [UsageRow(*row) for row in result.result_rows]


def accepted_volume(store: Store, tenant_id: str, *, since: datetime, until: datetime) -> dict[str, tuple[int, int]]:
    """{signal: (items accepted, bytes of the requests that carried them)} in [since, until)."""
    result = TenantReader(store, tenant_id).query(
        f"SELECT Signal, sum(ItemsAccepted), sum(Bytes) FROM {USAGE_TABLE} WHERE TenantId = {{tenant_id:String}}"
        " AND Hour >= {since:DateTime('UTC')} AND Hour < {until:DateTime('UTC')}"
        " AND Outcome IN {accepted:Array(String)} GROUP BY Signal",
        {"since": _utc(since), "until": _utc(until), "accepted": list(ACCEPTED)},
    )
    return {signal: (int(items), int(size)) for signal, items, size in result.result_rows}


def accepted_volume_fn(store: Store | None = None) -> Callable[[str, datetime, datetime], dict[str, tuple[int, int]]]:
    """`accepted_volume` of `store` (the process's), as invoicing asks for it."""
    store = store or storage.get_store()
    return lambda tenant_id, since, until: accepted_volume(store, tenant_id, since=since, until=until)


@dataclass(frozen=True)
class Refusals:
    """Requests refused for one key, signal and reason in a period: what a tenant's admin needs
    to fix their exporters (the console's exporter health, /api/v1/tenants/<slug>/refusals/)."""

    key_prefix: str  # '' when no key of ours was presented (a client certificate, or none)
    signal: str
    outcome: str
    reason: str
    requests: int
    items: int
    bytes: int
    first_at: datetime
    last_at: datetime
    message: str  # the latest one the sender was given


def refusals(store: Store, tenant_id: str, *, since: datetime, until: datetime) -> list[Refusals]:
    """The tenant's refused requests in [since, until) by key, signal and reason, latest first."""
    result = TenantReader(store, tenant_id).query(
        "SELECT KeyPrefix, Signal, Outcome, Reason, sum(Requests), sum(Items), sum(Bytes), min(Minute),"
        f" max(LastAt) AS last, argMax(Message, LastAt) FROM {REFUSALS_TABLE} WHERE TenantId = {{tenant_id:String}}"
        " AND Minute >= {since:DateTime('UTC')} AND Minute < {until:DateTime('UTC')}"
        " GROUP BY KeyPrefix, Signal, Outcome, Reason ORDER BY last DESC LIMIT 200",
        {"since": _utc(since), "until": _utc(until)},
    )
    return [
        Refusals(key, signal, outcome, reason, int(req), int(items), int(size), _aware(first), _aware(last), message)
        for key, signal, outcome, reason, req, items, size, first, last, message in result.result_rows
    ]


@dataclass
class TenantActivity:
    """One tenant's requests and items in a period, across signals (the console's overview)."""

    tenant_id: str
    requests: dict[str, int]  # by outcome
    items: int = 0
    items_accepted: int = 0
    bytes: int = 0
    last_hour: dict[str, datetime] | None = None  # by signal: the last hour it sent any

    @property
    def requests_total(self) -> int:
        return sum(self.requests.values())

    @property
    def requests_refused(self) -> int:
        return sum(n for outcome, n in self.requests.items() if outcome not in ACCEPTED)

    @property
    def refused_share(self) -> float:
        return self.requests_refused / self.requests_total if self.requests_total else 0.0


def activity_by_tenant(store: Store, *, since: datetime, until: datetime) -> dict[str, TenantActivity]:
    """Every tenant's activity in [since, until), from the usage table: one read across tenants,
    for the operators' overview only (tenant ids; '' holds senders no key identified)."""
    result = store.dangerously_query_unscoped(
        "SELECT TenantId, Signal, Outcome, sum(Requests), sum(Items), sum(ItemsAccepted), sum(Bytes), max(Hour)"
        f" FROM {USAGE_TABLE} WHERE Hour >= {{since:DateTime('UTC')}} AND Hour < {{until:DateTime('UTC')}}"
        " GROUP BY TenantId, Signal, Outcome",
        {"since": _utc(since), "until": _utc(until)},
        reason="console overview: activity per tenant",
    )
    activity: dict[str, TenantActivity] = {}
    for tenant_id, signal, outcome, requests, items, accepted, size, hour in result.result_rows:
        row = activity.setdefault(tenant_id, TenantActivity(tenant_id, {}, last_hour={}))
        row.requests[outcome] = row.requests.get(outcome, 0) + int(requests)
        row.items += int(items)
        row.items_accepted += int(accepted)
        row.bytes += int(size)
        hour = _aware(hour)
        if hour > row.last_hour.get(signal, FIRST_MOMENT):
            row.last_hour[signal] = hour
    return activity


FIRST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
