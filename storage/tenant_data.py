"""Removing a tenant's stored telemetry: every partition of every table holding its data."""

from __future__ import annotations

import re
import uuid

from storage.clickhouse import Store
from storage.schema import TENANT_DATA_TABLES

_PARTITION_ID = re.compile(r"^[0-9A-Za-z_-]+$")


def drop_tenant_partitions(store: Store, tenant_id: str) -> int:
    """Drop all partitions holding `tenant_id`'s rows (TenantId leads every partition key).
    Returns how many partitions were dropped."""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    prefix = f"('{tenant_id}',"
    dropped = 0
    layout = store.layout
    for table in TENANT_DATA_TABLES:
        # In a cluster the parts live in the `_local` tables, on whichever shard holds the tenant.
        data_table = layout.data_table(table)
        partition_ids = store.query(
            f"SELECT DISTINCT partition_id FROM {_parts_source(store)} WHERE database = currentDatabase() "
            "AND table = {table:String} AND active AND startsWith(partition, {prefix:String})",
            {"table": data_table, "prefix": prefix},
        ).result_rows
        for (partition_id,) in partition_ids:
            if not _PARTITION_ID.match(partition_id):
                raise ValueError(f"unexpected partition id {partition_id!r} in {table}")
            store.command(f"ALTER TABLE {data_table}{layout.on_cluster} DROP PARTITION ID '{partition_id}'")
            dropped += 1
    return dropped


def _parts_source(store: Store) -> str:
    cluster = store.layout.cluster
    return f"clusterAllReplicas('{cluster}', system.parts)" if cluster else "system.parts"


def tenant_stored_bytes(store: Store, tenant_id: str) -> int:
    """Bytes on disk of all `tenant_id`'s telemetry partitions."""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    result = store.query(
        f"SELECT sum(bytes_on_disk) FROM {_parts_source(store)} WHERE database = currentDatabase() "
        "AND table IN {tables:Array(String)} AND active AND startsWith(partition, {prefix:String})",
        {"tables": [store.layout.data_table(t) for t in TENANT_DATA_TABLES], "prefix": f"('{tenant_id}',"},
    )
    return int(result.result_rows[0][0] or 0)
