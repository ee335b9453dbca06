"""A request's rows as the blocks the writer stores exactly once.

ClickHouse writes one INSERT into several parts (a part per partition and table), and a
materialized view's rows after its source's, so an INSERT that fails may have stored some of
its rows. What makes that safe is that every block of a request is known by an id derived
from the tenant and the request itself (its body, as decompressed):

- the first row of each block carries the block's id and rows (`GatewayBlock`,
  `GatewayBlockRows`); a materialized view
  copies the ids of the rows stored into the ingest ledger, with the rows, in the same INSERT;
- before an INSERT the writer asks the ledger which of its blocks are stored already, and
  leaves them out: an exporter that sends a request again (its reply was lost, or it was told
  to retry after a write that stored part of it) stores nothing twice;
- every row carries the partition it belongs to (`GatewayPartition`: the tenant's own, or a
  shared one, by its isolation tier);
- the first row of the request's first block carries what metering needs besides the rows
  (`GatewayRequestBytes`, `GatewayItemsRejected`), so the ledger's row of each block carries
  its usage (each request once, each stored row one accepted item), and the ledger's own view
  sums them into usage: accepted usage is what was stored, by construction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import tzinfo

from storage.flatten.common import TableBatch
from storage.partitions import split_by_partition
from storage.schema import BLOCK_COLUMN, GATEWAY_COLUMNS, PARTITION_COLUMN, TELEMETRY_TABLES


def request_key(tenant_id: str, signal: str, data: bytes) -> str:
    """The request's identity: the same body from the same tenant is the same request."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(tenant_id.encode())
    digest.update(b"\0")
    digest.update(signal.encode())
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


def partition_key(tenant_id: str, isolation: str, retention_days: int) -> str:
    """The GatewayPartition of a tenant's new rows: its own partitions when dedicated; when
    shared, those of every tenant with the same retention (so the TTL drops whole parts)."""
    if isolation == "shared":
        return f"shared-{retention_days}d"
    return tenant_id


@dataclass(frozen=True)
class RequestMark:
    """What a request's blocks carry: its key, its size as received, the items it rejected,
    and the partition its rows go to (`partition_key`)."""

    key: str
    body_bytes: int
    items_rejected: int
    partition: str


@dataclass(frozen=True)
class MarkedBlock:
    batch: TableBatch
    partitions: frozenset  # (GatewayPartition, day) pairs its rows go to (storage.partitions)
    block_id: str  # "" for rows that are not a request's (usage records)


def request_blocks(
    batches: list[TableBatch], *, mark: RequestMark | None, server_tz: tzinfo | None = None
) -> list[MarkedBlock]:
    """`batches` split so that no block exceeds the partition limit, each telemetry block with
    the gateway's columns added (its id on its first row; the request's size and rejections on
    the first row of the first block). Without `mark` (usage records), only split."""
    blocks: list[MarkedBlock] = []
    lead = True
    for batch in batches:
        if mark is None or batch.table not in TELEMETRY_TABLES or BLOCK_COLUMN in batch.column_names:
            parts = split_by_partition(batch, server_tz=server_tz)
            blocks.extend(MarkedBlock(part, partitions, "") for part, partitions in parts)
            continue
        parts = split_by_partition(batch, server_tz=server_tz, key=mark.partition)
        for index, (part, partitions) in enumerate(parts):
            if not part.rows:
                continue
            block_id = f"{mark.key}-{part.table}-{index}"
            rest = part.rows - 1
            columns = [
                *part.columns,
                [block_id] + [""] * rest,
                [part.rows] + [0] * rest,
                [mark.body_bytes if lead else 0] + [0] * rest,
                [mark.items_rejected if lead else 0] + [0] * rest,
                [mark.partition] * part.rows,
            ]
            lead = False
            marked = TableBatch(part.table, (*part.column_names, *GATEWAY_COLUMNS, PARTITION_COLUMN), columns)
            blocks.append(MarkedBlock(marked, partitions, block_id))
    return blocks
