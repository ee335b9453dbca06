"""The one connection to ClickHouse (chDB embedded, or a server over HTTP), through
clickhouse-connect. Reads of telemetry tables are refused here unless tenant-scoped
(see storage.reader); the only other way is named `dangerously_query_unscoped`."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.compression import get_compressor
from clickhouse_connect.driver.exceptions import ClickHouseError
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.transform import NativeTransform

from storage.schema import (
    EMBEDDED_INSERT_SETTINGS,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    TENANT_TABLES,
    Layout,
    embedded_tuning_statements,
    migrations_table_statement,
)

log = logging.getLogger(__name__)

# The connection every statement uses unless told another (Store._get_client).
MAIN_LANE = "main"
_TELEMETRY_RE = re.compile(r"\b(" + "|".join(TENANT_TABLES) + r")\b", re.IGNORECASE)


class StorageError(Exception):
    """The rows were not stored (all of them: see `partial`). `retryable` says whether the same
    rows can be stored later."""

    retryable = True
    # Some or all of the rows may be stored: an INSERT stored its rows but a materialized view
    # they feed failed (the rows are in the table without what the view derives from them,
    # usage and the ingest ledger, until the same INSERT is sent again), or the write was not
    # confirmed in time. Sending the request again stores nothing twice (storage.requests).
    partial = False


class StorageUnavailable(StorageError):
    """ClickHouse could not be reached, did not answer in time, or is out of room: retrying
    later can succeed."""


class RowsRejected(StorageError):
    """Rows the tables cannot hold (they cannot be encoded in the columns' types, or the server
    refuses them for what they are): the same rows fail the same way every time."""

    retryable = False


# ClickHouse error codes that are about the rows sent, not the server's state.
_ROW_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        33,  # CANNOT_READ_ALL_DATA
        53,  # TYPE_MISMATCH
        70,  # CANNOT_CONVERT_TYPE
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    }
)
_CODE_RE = re.compile(r"\bCode: (\d+)")


def insert_error(table: str, exc: Exception) -> StorageError:
    """What a failed INSERT means for the request: its rows (RowsRejected) or the server."""
    text = str(exc)
    match = _CODE_RE.search(text)
    code = int(match.group(1)) if match else None
    # More partitions than one INSERT block may hold: the same rows are refused every time.
    if code in _ROW_ERROR_CODES or (code == 252 and "partitions for single INSERT block" in text):
        return RowsRejected(f"insert into {table} refused the rows: {text}")
    error = StorageUnavailable(f"insert into {table} failed: {text}")
    error.partial = "while pushing to view" in text
    return error


class UnscopedQueryError(Exception):
    """A read of tenant telemetry that does not go through the tenant-scoped reader."""


def describe_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parsed = urlparse(url)
    if parsed.password:
        netloc = f"{parsed.username}:***@{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        return parsed._replace(netloc=netloc).geturl()
    return url


def encode_native(
    table: str, column_names: Sequence[str], types: Sequence, server_tz, columns: Sequence[list]
) -> bytes:
    """Columns as a ClickHouse Native block (clickhouse-connect's own encoder), given the
    columns' types. Raises RowsRejected for rows the types cannot hold."""
    try:
        context = InsertContext(
            table, list(column_names), list(types), data=columns, column_oriented=True, server_tz=server_tz
        )
        chunks = list(NativeTransform.build_insert(context))
    except Exception as exc:
        raise RowsRejected(f"rows for {table} cannot be encoded: {exc}") from exc
    if context.insert_exception is not None:
        exc = context.insert_exception
        raise RowsRejected(f"rows for {table} cannot be encoded: {exc}") from exc
    if chunks:
        # The first chunk starts with the INSERT statement line an HTTP request body carries.
        chunks[0] = chunks[0][chunks[0].index(b"\n") + 1 :]
    return b"".join(chunks)


def column_types(type_names: dict[str, dict[str, str]], table: str, column_names: Sequence[str]) -> list:
    """The clickhouse-connect types of `column_names` of `table`, from `Store.type_names`."""
    try:
        names = type_names[table]
        return [get_from_name(names[name]) for name in column_names]
    except KeyError as exc:
        raise StorageUnavailable(f"rows for {table} cannot be encoded: no column or table {exc}") from exc


class Store:
    """A lazily connected clickhouse-connect client for one URL; with `cluster`, the telemetry
    tables are Distributed tables over a ClickHouse cluster (see storage.schema.Layout)."""

    def __init__(
        self, url: str, *, cluster: str | None = None, merge_threads: int | None = None, async_insert: bool = False
    ):
        """`merge_threads`: embedded chDB only, the threads of its background merge pool
        (chDB's default otherwise). A ClickHouse server's are its operator's. `async_insert`:
        the server batches the INSERTs of many gateway processes itself; each still returns
        only once its rows are written (wait_for_async_insert), so what is acknowledged is
        stored, as without it."""
        scheme = urlparse(url).scheme
        if scheme not in {"chdb", "http", "https"}:
            raise ValueError(f"GATEWAY_CLICKHOUSE_URL must be chdb:///path or http(s)://..., got {describe_url(url)!r}")
        if cluster and scheme == "chdb":
            raise ValueError("a ClickHouse cluster needs a ClickHouse server URL (http(s)://...), not embedded chDB")
        self.url = url
        self.embedded = scheme == "chdb"
        self.merge_threads = merge_threads if self.embedded else None
        self._engine_options = {"background_pool_size": merge_threads} if self.embedded and merge_threads else None
        self.layout = Layout(cluster or None)
        # An INSERT the writer sends again (the same blocks, the same insert_deduplication_token)
        # stores only what the first one did not, into the tables and into the views they feed
        # (usage, the ingest ledger): a view's rows are written after its source's, so a failed
        # INSERT can have stored the data without them.
        # Not parallel_view_processing, though it makes an INSERT ~35% faster: the table's part
        # must be written before its views' (a ledger row must never exist for rows that are
        # not stored), and in parallel a failed view could leave either one without the other
        # (docs/BENCHMARKS.md, "A noisy neighbour: a fair writer").
        self._insert_settings: dict[str, Any] = {"deduplicate_blocks_in_dependent_materialized_views": 1}
        # A Distributed INSERT is acknowledged once the rows are on their shard, not when they
        # are only queued on the receiving server: the gateway answers only for stored rows.
        if self.layout.cluster:
            self._insert_settings["insert_distributed_sync"] = 1
        if self.embedded:
            self._insert_settings.update(EMBEDDED_INSERT_SETTINGS)
        self.async_insert = async_insert
        if async_insert:
            # async_insert_deduplicate: the token holds for inserts the server batches too.
            self._insert_settings.update(async_insert=1, wait_for_async_insert=1, async_insert_deduplicate=1)
        self._clients: dict[str, Any] = {}  # lane -> client (`_get_client`)
        self._connect_lock = threading.Lock()
        self._type_names: dict[str, dict[str, str]] = {}

    def _get_client(self, lane: str = MAIN_LANE):
        """The client of `lane`: one connection each, so that an INSERT on one lane need not
        wait for a statement on another (the chDB driver runs one statement at a time on a
        connection; chDB itself takes many connections to its one engine)."""
        client = self._clients.get(lane)
        if client is None:
            with self._connect_lock:
                client = self._clients.get(lane)
                if client is None:
                    kwargs: dict[str, Any] = {}
                    if self._engine_options:
                        kwargs = {"chdb_options": self._engine_options}
                    if not self.embedded:
                        kwargs = {"connect_timeout": 5, "send_receive_timeout": 30, "autogenerate_session_id": False}
                    try:
                        client = self._clients[lane] = clickhouse_connect.get_client(dsn=self.url, **kwargs)
                    except Exception as exc:  # the driver raises several kinds for "cannot connect"
                        raise StorageUnavailable(
                            f"cannot connect to ClickHouse at {describe_url(self.url)}: {exc}"
                        ) from exc
        return client

    def close(self) -> None:
        with self._connect_lock:
            clients, self._clients = self._clients, {}
            for client in clients.values():
                client.close()
            self._type_names.clear()

    def command(self, sql: str) -> None:
        """DDL and maintenance statements."""
        self._get_client().command(sql)

    def insert(self, table: str, column_names: Sequence[str], columns: Sequence[list]) -> None:
        """One columnar INSERT. Raises StorageUnavailable when the rows were not stored."""
        self.insert_native(table, column_names, [self.encode(table, column_names, columns)])

    # The batcher's two halves: each request thread encodes its own rows (Python work that needs
    # the GIL), and the one writer thread only joins the blocks of a group and sends them.

    def encode(self, table: str, column_names: Sequence[str], columns: Sequence[list]) -> bytes:
        """Columns as a ClickHouse Native block for `insert_native`. Safe to call from any thread;
        only the first call for a table asks the server for its column types (`type_names`)."""
        types = column_types(self.type_names((table,)), table, column_names)
        return encode_native(table, column_names, types, self.server_tz, columns)

    def type_names(self, tables: Sequence[str]) -> dict[str, dict[str, str]]:
        """Every column's ClickHouse type name, by table: what `encode_native` needs, in a form
        another process can take (gateway.otlp.prepare encodes rows in worker processes)."""
        names = {}
        for table in tables:
            cached = self._type_names.get(table)
            if cached is None:
                try:
                    context = self._get_client().create_insert_context(table)
                except StorageUnavailable:
                    raise
                except Exception as exc:
                    raise StorageUnavailable(f"cannot read the column types of {table}: {exc}") from exc
                cached = self._type_names[table] = {
                    name: column_type.name for name, column_type in zip(context.column_names, context.column_types)
                }
            names[table] = cached
        return names

    @property
    def server_tz(self):
        return self._get_client().server_tz

    def insert_native(
        self,
        table: str,
        column_names: Sequence[str],
        blocks: Sequence[bytes],
        *,
        token: str | None = None,
        lane: str = MAIN_LANE,
    ) -> None:
        """One INSERT of Native blocks from `encode` (same table and columns). Raises
        StorageUnavailable when the rows were not stored. `token`: the INSERT's
        insert_deduplication_token, the same when the same INSERT is sent again. `lane`: the
        connection it is sent on (`_get_client`)."""
        settings = (
            self._insert_settings if token is None else {**self._insert_settings, "insert_deduplication_token": token}
        )
        try:
            client = self._get_client(lane)
            data = b"".join(blocks)
            compression = None if self.embedded else client.write_compression
            if compression:
                compressor = get_compressor(compression)
                data = compressor.compress_block(data) + (compressor.flush() or b"")
            client.raw_insert(table, list(column_names), data, settings=settings, fmt="Native", compression=compression)
        except StorageError:
            raise
        except Exception as exc:
            self._type_names.pop(table, None)  # read them afresh next time
            raise insert_error(table, exc) from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None):
        """Reads that touch no tenant telemetry (schema, migrations, health)."""
        if _TELEMETRY_RE.search(sql):
            raise UnscopedQueryError(
                "refusing to read telemetry tables without a tenant scope: use "
                "storage.reader.TenantReader (or Store.dangerously_query_unscoped for operator tools)"
            )
        return self._get_client().query(sql, parameters=parameters)

    def dangerously_query_unscoped(self, sql: str, parameters: dict[str, Any] | None = None, *, reason: str):
        """Reads across tenants. Only operator tooling may call this; `reason` is logged."""
        if not reason:
            raise ValueError("dangerously_query_unscoped needs a reason")
        log.warning("unscoped ClickHouse read (%s): %s", reason, sql.split("\n", 1)[0][:200])
        return self._get_client().query(sql, parameters=parameters)

    def _scoped_query(self, sql: str, parameters: dict[str, Any], settings: dict[str, Any]):
        return self._get_client().query(sql, parameters=parameters, settings=settings)

    def free_disk_bytes(self) -> int:
        """Free space where the tables are stored: the data directory's file system in the
        embedded mode, the fullest of the server's disks otherwise."""
        if self.embedded:
            path = urlparse(self.url).path
            while path and not os.path.exists(path):
                path = os.path.dirname(path)
            stats = os.statvfs(path or "/")
            return stats.f_bavail * stats.f_frsize
        try:
            rows = self._get_client().query("SELECT min(free_space) FROM system.disks").result_rows
        except (ClickHouseError, OSError) as exc:
            raise StorageUnavailable(f"cannot read ClickHouse's free disk space: {exc}") from exc
        return int(rows[0][0])

    def ping(self) -> bool:
        try:
            return bool(self._get_client().ping())
        except (StorageUnavailable, ClickHouseError, OSError):
            return False

    def migrate(self) -> list[int]:
        """Apply the DDL migrations not yet applied, in order. Returns the versions applied."""
        self.command(migrations_table_statement(self.layout))
        done = {row[0] for row in self.query(f"SELECT version FROM {MIGRATIONS_TABLE}").result_rows}
        applied = []
        for migration in sorted(MIGRATIONS, key=lambda m: m.version):
            if migration.version in done:
                continue
            for statement in migration.statements(self.layout):
                self.command(statement)
            self._get_client().insert(
                MIGRATIONS_TABLE, [[migration.version, migration.name]], column_names=["version", "name"]
            )
            log.info("applied ClickHouse migration %s: %s", migration.version, migration.name)
            applied.append(migration.version)
        if self.embedded:
            for statement in embedded_tuning_statements():
                self.command(statement)
        return applied
