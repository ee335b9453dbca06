"""Usage metering: every request ends in exactly one outcome, counted per tenant, signal, hour
and outcome with items and bytes in the usage table, through the same batcher as the data."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.flatten import TableBatch
from storage.schema import REFUSAL_COLUMNS, REFUSAL_MESSAGE_COLUMNS, REFUSALS_TABLE, USAGE_COLUMNS, USAGE_TABLE
from vocabulary import Outcome, Refusal, Signal

COLUMNS = USAGE_COLUMNS
UNKNOWN_TENANT = ""  # requests whose key names no tenant
MESSAGE_CHARS = 500  # of a refusal's message, kept for the console


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


def refusal_batch(
    *,
    tenant_id: str | None,
    signal: Signal,
    refusal: Refusal,
    key_prefix: str,
    items: int,
    body_bytes: int,
    at: datetime | None = None,
) -> TableBatch:
    """A refused request as the console shows it: which key, signal and reason, when, with
    the message its sender got (the refusals table sums these per minute)."""
    moment = (at or datetime.now(UTC)).replace(tzinfo=None)
    row = (
        tenant_id or UNKNOWN_TENANT,
        moment.replace(second=0, microsecond=0),
        signal.value,
        refusal.reason.outcome.value,
        refusal.reason.value,
        key_prefix,
        1,
        items,
        body_bytes,
        refusal.message[:MESSAGE_CHARS],
        moment,
    )
    return TableBatch(REFUSALS_TABLE, (*REFUSAL_COLUMNS, *REFUSAL_MESSAGE_COLUMNS), [[value] for value in row])
