"""Selectors over the usage table (always through the tenant-scoped reader)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import storage
from storage.clickhouse import Store
from storage.reader import TenantReader
from storage.schema import USAGE_TABLE
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
