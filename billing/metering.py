"""Usage metering: every request ends in exactly one outcome, counted per tenant, signal, hour
and outcome with items and bytes in the usage table, through the same batcher as the data."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.flatten import TableBatch
from storage.schema import USAGE_COLUMNS, USAGE_TABLE
from vocabulary import Outcome, Signal

COLUMNS = USAGE_COLUMNS
UNKNOWN_TENANT = ""  # requests whose key names no tenant


def usage_batch(
    *,
    tenant_id: str | None,
    signal: Signal,
    outcome: Outcome,
    items: int,
    items_accepted: int,
    body_bytes: int,
    at: datetime | None = None,
) -> TableBatch:
    hour = (at or datetime.now(UTC)).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    row = (tenant_id or UNKNOWN_TENANT, signal.value, hour, outcome.value, 1, items, items_accepted, body_bytes)
    return TableBatch(USAGE_TABLE, COLUMNS, [[value] for value in row])
