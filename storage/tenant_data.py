"""Removing a tenant's stored telemetry: every partition of every telemetry table."""
from __future__ import annotations

import re
import uuid

from storage.clickhouse import Store
from storage.schema import TELEMETRY_TABLES

_PARTITION_ID = re.compile(r"^[0-9A-Za-z_-]+$")


def drop_tenant_partitions(store: Store, tenant_id: str) -> int:
    """Drop all partitions holding `tenant_id`'s rows (TenantId leads every partition key).
    Returns how many partitions were dropped."""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    prefix = f"('{tenant_id}',"
    dropped = 0
    for table in TELEMETRY_TABLES:
        partition_ids = store.query(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = currentDatabase() "
            "AND table = {table:String} AND active AND startsWith(partition, {prefix:String})",
            {"table": table, "prefix": prefix},
        ).result_rows
        for (partition_id,) in partition_ids:
            if not _PARTITION_ID.match(partition_id):
                raise ValueError(f"unexpected partition id {partition_id!r} in {table}")
            store.command(f"ALTER TABLE {table} DROP PARTITION ID '{partition_id}'")
            dropped += 1
    return dropped


def tenant_stored_bytes(store: Store, tenant_id: str) -> int:
    """Bytes on disk of all `tenant_id`'s telemetry partitions."""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    result = store.query(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = currentDatabase() "
        "AND table IN {tables:Array(String)} AND active AND startsWith(partition, {prefix:String})",
        {"tables": list(TELEMETRY_TABLES), "prefix": f"('{tenant_id}',"},
    )
    return int(result.result_rows[0][0] or 0)
