"""Selectors over the usage table (always through the tenant-scoped reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import storage
from storage.clickhouse import Store
from storage.reader import TenantReader
from storage.schema import REFUSALS_TABLE, USAGE_TABLE
from vocabulary import Outcome, Signal

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


OUTCOMES = tuple(outcome.value for outcome in Outcome)
SIGNALS = tuple(signal.value for signal in Signal)
NO_REQUESTS, NEVER = (0,) * len(OUTCOMES), (0,) * len(SIGNALS)


class TenantActivity:
    """One tenant's requests and items in a period, across signals (the console's overview).
    Built for each of 10,000 tenants per page view, so it keeps the numbers as read."""

    __slots__ = (
        "tenant_id",
        "counts",
        "requests_total",
        "requests_refused",
        "items",
        "items_accepted",
        "bytes",
        "hours",
    )

    def __init__(
        self,
        tenant_id: str,
        counts=NO_REQUESTS,
        total=0,
        refused=0,
        items=0,
        accepted=0,
        size=0,
        hours=NEVER,
    ):
        self.tenant_id, self.counts, self.requests_total, self.requests_refused = tenant_id, counts, total, refused
        self.items, self.items_accepted, self.bytes, self.hours = items, accepted, size, hours

    @property
    def requests(self) -> dict[str, int]:
        """Requests by outcome (those with any)."""
        return {outcome: n for outcome, n in zip(OUTCOMES, self.counts) if n}

    @property
    def last_hour(self) -> dict[str, int]:
        """By signal, the last hour (Unix seconds) in which the tenant sent any."""
        return {signal: hour for signal, hour in zip(SIGNALS, self.hours) if hour}

    @property
    def refused_share(self) -> float:
        return self.requests_refused / self.requests_total if self.requests_total else 0.0


def activity_by_tenant(store: Store, *, since: datetime, until: datetime) -> dict[str, TenantActivity]:
    """Every tenant's activity in [since, until), from the usage table: one read across tenants,
    for the operators' overview only (tenant ids; '' holds senders no key identified). Summed in
    ClickHouse to one row per tenant: 10,000 tenants are 10,000 rows, not one per outcome and
    signal; hours come as seconds and ids as plain strings, which decode in half the time."""
    per_outcome = ", ".join(f"sumIf(Requests, Outcome = '{o}')" for o in OUTCOMES)
    per_signal = ", ".join(f"toUInt32(maxIf(Hour, Signal = '{s}' AND Requests > 0))" for s in SIGNALS)
    result = store.dangerously_query_unscoped(
        f"SELECT toString(TenantId), [{per_outcome}], sum(Requests), sumIf(Requests, Outcome NOT IN"
        f" {{accepted:Array(String)}}), sum(Items), sum(ItemsAccepted), sum(Bytes), [{per_signal}]"
        f" FROM {USAGE_TABLE} WHERE Hour >= {{since:DateTime('UTC')}} AND Hour < {{until:DateTime('UTC')}}"
        " GROUP BY TenantId",
        {"since": _utc(since), "until": _utc(until), "accepted": list(ACCEPTED)},
        reason="console overview: activity per tenant",
    )
    return {row[0]: TenantActivity(*row) for row in result.result_rows}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
