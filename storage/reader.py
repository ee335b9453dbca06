"""The only way code reads telemetry back: every query is bound to one tenant.

The tenant id is bound as a server-side parameter `{tenant_id:String}` that the SQL must use,
and ClickHouse's `additional_table_filters` adds `TenantId = <tenant>` to every telemetry table
the query touches, so a query that forgets a filter still sees only this tenant's rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from storage.clickhouse import Store, UnscopedQueryError
from storage.schema import TENANT_TABLES

TENANT_PARAMETER = "{tenant_id:String}"


# (attribute key, stored value) -> plain value, for the tenant's encrypted attribute values.
Decrypt = Callable[[str, str], str]
ENCRYPTED_PREFIX = "enc:v"


class TenantReader:
    """`decrypt` (tenants.encryption.reader_for supplies the tenant's) turns protected attribute
    values back into plain text in `rows()`; without it they stay ciphertext."""

    def __init__(self, store: Store, tenant_id: str, decrypt: Decrypt | None = None):
        self._decrypt = decrypt
        # Tenant ids are UUIDs; parsing one here keeps anything else out of the filter text.
        self.tenant_id = str(uuid.UUID(str(tenant_id)))
        self._store = store
        condition = f"TenantId = '{self.tenant_id}'"
        self._settings = {"additional_table_filters": {table: condition for table in TENANT_TABLES}}

    def query(self, sql: str, parameters: dict[str, Any] | None = None):
        if TENANT_PARAMETER not in sql:
            raise UnscopedQueryError(f"tenant-scoped queries must filter on TenantId = {TENANT_PARAMETER}")
        params = dict(parameters or {})
        if "tenant_id" in params:
            raise UnscopedQueryError("the tenant_id parameter is bound by TenantReader, not the caller")
        params["tenant_id"] = self.tenant_id
        return self._store._scoped_query(sql, params, self._settings)

    def query_for_tool(self, sql: str):
        """A query written by a tool that knows nothing of tenants (the SQL Grafana's ClickHouse
        data source generates): every tenant table it reads is filtered to this tenant by
        `additional_table_filters` alone."""
        return self._store._scoped_query(sql, {}, self._settings)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result = self.query(sql, parameters)
        rows = [dict(zip(result.column_names, row)) for row in result.result_rows]
        if self._decrypt is not None:
            for row in rows:
                for column, value in row.items():
                    row[column] = self._open(value)
        return rows

    def _open(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: self._decrypt(key, item) if isinstance(item, str) and item.startswith(ENCRYPTED_PREFIX) else item
                for key, item in value.items()
            }
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return [self._open(item) for item in value]
        return value
