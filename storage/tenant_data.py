"""Removing a tenant's stored telemetry: the partitions of its own are dropped whole; its rows in
partitions shared with other tenants are deleted by a mutation that runs in the background."""

from __future__ import annotations

import re
import uuid

from storage.clickhouse import Store
from storage.schema import PARTITION_COLUMN, TENANT_DATA_TABLES

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
    """Bytes on disk of `tenant_id`'s telemetry: its own partitions, plus its share of shared
    ones (its rows there times their bytes per row)."""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    tables = [store.layout.data_table(t) for t in TENANT_DATA_TABLES]
    result = store.query(
        f"SELECT sum(bytes_on_disk) FROM {_parts_source(store)} WHERE database = currentDatabase() "
        "AND table IN {tables:Array(String)} AND active AND startsWith(partition, {prefix:String})",
        {"tables": tables, "prefix": f"('{tenant_id}',"},
    )
    own = int(result.result_rows[0][0] or 0)
    shared_parts = {
        table: (int(size), int(rows))
        for table, size, rows in store.query(
            f"SELECT table, sum(bytes_on_disk), sum(rows) FROM {_parts_source(store)} WHERE database = "
            "currentDatabase() AND table IN {tables:Array(String)} AND active AND startsWith(partition, '(''shared-') "
            "GROUP BY table",
            {"tables": tables},
        ).result_rows
        if rows
    }
    shared = 0
    for table in TENANT_DATA_TABLES:
        size, rows = shared_parts.get(store.layout.data_table(table), (0, 0))
        if not rows:
            continue
        mine = store.dangerously_query_unscoped(
            f"SELECT count() FROM {table} WHERE TenantId = {{tenant:String}} AND {PARTITION_COLUMN} != TenantId",
            {"tenant": tenant_id},
            reason="a tenant's share of shared partitions, for its stored-data cap",
        ).result_rows[0][0]
        shared += int(mine) * size // rows
    return own + shared


def delete_shared_rows(store: Store, tenant_id: str) -> list[str]:
    """Start deleting `tenant_id`'s rows in shared partitions, in the background (a ClickHouse
    mutation for each shared partition holding its rows, which rewrites those partitions
    only). Returns the tables where it started; `shared_deletion_progress` tells how far it got."""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    started = []
    for table in TENANT_DATA_TABLES:
        partition_ids = store.dangerously_query_unscoped(
            f"SELECT DISTINCT _partition_id FROM {table} WHERE TenantId = {{tenant:String}} "
            f"AND {PARTITION_COLUMN} != TenantId",
            {"tenant": tenant_id},
            reason="deleting a tenant: the shared partitions holding its rows",
        ).result_rows
        data_table = store.layout.data_table(table)
        for (partition_id,) in partition_ids:
            if not _PARTITION_ID.match(partition_id):
                raise ValueError(f"unexpected partition id {partition_id!r} in {table}")
            store.command(
                f"ALTER TABLE {data_table}{store.layout.on_cluster} DELETE IN PARTITION ID '{partition_id}' "
                f"WHERE TenantId = '{tenant_id}' SETTINGS mutations_sync = 0"
            )
        if partition_ids:
            started.append(table)
    return started


def shared_deletion_progress(store: Store, tenant_id: str) -> dict[str, dict]:
    """For each table where a deletion of `tenant_id`'s shared rows was started: its rows still
    there, whether that is none (done), and the mutations' last error. (A mutation's own
    `is_done` comes later: it also walks the parts of partitions it has nothing to do in.)"""
    tenant_id = str(uuid.UUID(str(tenant_id)))
    mutations = store.query(
        "SELECT table, any(latest_fail_reason) FROM system.mutations "
        "WHERE database = currentDatabase() AND position(command, {needle:String}) > 0 GROUP BY table",
        {"needle": f"WHERE TenantId = '{tenant_id}'"},
    ).result_rows
    progress = {}
    for data_table, error in mutations:
        table = data_table.removesuffix("_local")
        left = store.dangerously_query_unscoped(
            f"SELECT count() FROM {table} WHERE TenantId = {{tenant:String}} AND {PARTITION_COLUMN} != TenantId",
            {"tenant": tenant_id},
            reason="how far the deletion of a tenant's shared rows got",
        ).result_rows[0][0]
        progress[table] = {"done": not left, "rows_left": int(left), "error": error}
    return progress
