"""No INSERT may write more partitions than ClickHouse allows in one block
(`max_partitions_per_insert_block`, 100 by default): such an INSERT is refused whole, and
would be on every retry. A telemetry table is partitioned by (TenantId, day), so a request
whose items fall on many days (a backfill, a replayed queue) is split here into batches of at
most `limit` days each, and the batcher joins blocks into one INSERT only while their
partitions together stay within the limit."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo

from storage.flatten.common import TableBatch
from storage.schema import DAY_PARTITIONED_TIME_COLUMNS

# ClickHouse's default max_partitions_per_insert_block.
MAX_PARTITIONS_PER_INSERT = 100
_NS_PER_DAY = 86_400 * 10**9


def batch_tenant(batch: TableBatch) -> str:
    """The tenant of a batch's rows ("" for a batch without TenantId or rows)."""
    if "TenantId" not in batch.column_names:
        return ""
    column = batch.columns[batch.column_names.index("TenantId")]
    return column[0] if column else ""


def _day(nanoseconds: int, server_tz: tzinfo | None) -> date:
    """The day `toDate(DateTime64 column)` gives on the server: in its time zone."""
    return datetime.fromtimestamp(nanoseconds / 1e9, server_tz or UTC).date()


def split_by_partition(
    batch: TableBatch,
    *,
    limit: int = MAX_PARTITIONS_PER_INSERT,
    server_tz: tzinfo | None = None,
    key: str | None = None,
) -> list[tuple[TableBatch, frozenset]]:
    """`batch` as batches of at most `limit` partitions each, with the partitions each holds
    ((key, day) pairs, `key` the rows' GatewayPartition, their tenant by default; empty when
    the table is not partitioned by day)."""
    time_column = DAY_PARTITIONED_TIME_COLUMNS.get(batch.table)
    if time_column is None or not batch.rows:
        return [(batch, frozenset())]
    tenant = key if key is not None else batch_tenant(batch)
    times = batch.columns[batch.column_names.index(time_column)]
    low, high = min(times), max(times)
    if (high - low) // _NS_PER_DAY + 2 <= limit:  # the usual case: a few days at most, whatever the zone
        first, last = _day(low, server_tz), _day(high, server_tz)
        days = (date.fromordinal(ordinal) for ordinal in range(first.toordinal(), last.toordinal() + 1))
        return [(batch, frozenset((tenant, day) for day in days))]  # every day between: a bound
    rows_by_day: dict[date, list[int]] = {}
    for row, nanoseconds in enumerate(times):
        rows_by_day.setdefault(_day(nanoseconds, server_tz), []).append(row)
    days = sorted(rows_by_day)
    if len(days) <= limit:
        return [(batch, frozenset((tenant, day) for day in days))]
    split = []
    for start in range(0, len(days), limit):
        chunk = days[start : start + limit]
        rows = sorted(row for day in chunk for row in rows_by_day[day])
        columns = [[column[row] for row in rows] for column in batch.columns]
        split.append((TableBatch(batch.table, batch.column_names, columns), frozenset((tenant, day) for day in chunk)))
    return split
