"""Versioned ClickHouse DDL for telemetry, modelled on the OpenTelemetry Collector's ClickHouse
exporter, with TenantId first in PARTITION BY and ORDER BY and a per-row retention TTL.

Each table is defined once (`Table`); a `Layout` renders it for one server (plain MergeTree) or
for a cluster (ReplicatedMergeTree `<name>_local` tables ON CLUSTER, plus a Distributed table
under the table's own name, sharded by tenant, so inserts and reads use the same names in both).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

MIGRATIONS_TABLE = "gateway_schema_migrations"
ATTRS = "Map(LowCardinality(String), String)"

TRACES_TABLE = "otel_traces"
LOGS_TABLE = "otel_logs"
GAUGE_TABLE = "otel_metrics_gauge"
SUM_TABLE = "otel_metrics_sum"
HISTOGRAM_TABLE = "otel_metrics_histogram"
EXP_HISTOGRAM_TABLE = "otel_metrics_exponential_histogram"
SUMMARY_TABLE = "otel_metrics_summary"
METRIC_TABLES = (GAUGE_TABLE, SUM_TABLE, HISTOGRAM_TABLE, EXP_HISTOGRAM_TABLE, SUMMARY_TABLE)
USAGE_TABLE = "gateway_usage"
# What a usage record holds (billing.metering writes them; so do the views, and the writer's reconcile).
USAGE_COLUMNS = ("TenantId", "Signal", "Hour", "Outcome", "Requests", "Items", "ItemsAccepted", "Bytes")
# The Collector exporter's trace-id lookup (first and last time of each trace), filled from
# otel_traces by a materialized view; Grafana's trace view reads it.
TRACE_ID_TS_TABLE = "otel_traces_trace_id_ts"
TRACE_ID_TS_VIEW = "otel_traces_trace_id_ts_mv"
TELEMETRY_TABLES = (TRACES_TABLE, LOGS_TABLE, *METRIC_TABLES)
# Which blocks of which requests are stored (storage.requests): the writer asks it before an
# INSERT, so that a request sent again, or written late, is not stored twice. Filled by a
# materialized view from each telemetry table, from the rows themselves.
LEDGER_TABLE = "gateway_ingest_ledger"
# Days the ledger remembers a block: how long a request sent again is known as stored.
LEDGER_DAYS = 2
# The signal each telemetry table holds (usage is metered per signal).
TABLE_SIGNALS = {TRACES_TABLE: "traces", LOGS_TABLE: "logs", **{table: "metrics" for table in METRIC_TABLES}}
# Columns the gateway adds to every telemetry table (storage.requests): on the first row of each
# block a request's rows were split into, the block's id and rows; on the first row of the request's
# first block, what metering needs of the request besides its rows (its size as received, the
# items it rejected). Every other row holds '' and 0s, which cost next to nothing on disk.
BLOCK_COLUMN = "GatewayBlock"
BLOCK_ROWS_COLUMN = "GatewayBlockRows"  # the block's rows, for the writer's reconciliation
REQUEST_BYTES_COLUMN = "GatewayRequestBytes"
ITEMS_REJECTED_COLUMN = "GatewayItemsRejected"
GATEWAY_COLUMNS = (BLOCK_COLUMN, BLOCK_ROWS_COLUMN, REQUEST_BYTES_COLUMN, ITEMS_REJECTED_COLUMN)
# The partition a row belongs to, first in PARTITION BY (migration 5, storage.requests): the
# tenant's id for a tenant with partitions of its own (dedicated), "shared-<retention>d" for
# tenants that share them, so that the TTL of a shared partition drops its parts whole.
PARTITION_COLUMN = "GatewayPartition"
# Blocks each table remembers to drop an INSERT that is the same as one it already stored
# (the writer's own retry of an INSERT carries the same insert_deduplication_token).
DEDUPLICATION_WINDOW = 1000
# Every table that holds a tenant's data: reads of these must be tenant-scoped, and deleting a
# tenant drops its partitions of each.
TENANT_DATA_TABLES = (*TELEMETRY_TABLES, TRACE_ID_TS_TABLE)
# Refused requests per tenant, key, signal, reason and minute, with the latest message
# (migration 6): what the console shows an admin of why a tenant's exporters fail. 30 days.
REFUSALS_TABLE = "gateway_refusals"
REFUSALS_DAYS = 30
REFUSAL_COLUMNS = ("TenantId", "Minute", "Signal", "Outcome", "Reason", "KeyPrefix", "Requests", "Items", "Bytes")
REFUSAL_MESSAGE_COLUMNS = ("Message", "LastAt")
TENANT_TABLES = (*TENANT_DATA_TABLES, USAGE_TABLE, REFUSALS_TABLE)


# A cluster name or a `{macro}`; it is quoted into DDL, so nothing else is allowed.
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.{}-]+$")
# One shard per tenant: a tenant's rows, partitions and retention live together, so dropping a
# tenant or reading one tenant's data touches one shard.
SHARDING_KEY = "cityHash64(TenantId)"


@dataclass(frozen=True)
class Layout:
    """Where telemetry tables live: one server (`cluster` None) or a ClickHouse cluster.

    The cluster's servers need the `{shard}` and `{replica}` macros and ClickHouse Keeper."""

    cluster: str | None = None

    def __post_init__(self):
        if self.cluster is not None and not _CLUSTER_NAME.match(self.cluster):
            raise ValueError(f"invalid ClickHouse cluster name {self.cluster!r}")

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER '{self.cluster}'" if self.cluster else ""

    def data_table(self, table: str) -> str:
        """The table that holds the parts (and partitions) of `table`."""
        return f"{table}_local" if self.cluster else table

    def replicated_engine(self, table: str, *, one_shard: bool = False) -> str:
        # {shard}/{replica} are server macros; a table replicated to every server of every
        # shard (one_shard) needs replica names unique across the whole cluster.
        if one_shard:
            return f"ReplicatedMergeTree('/clickhouse/tables/{{database}}/{table}', '{{shard}}-{{replica}}')"
        return f"ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{{database}}/{table}', '{{replica}}')"


PLAIN = Layout()


@dataclass(frozen=True)
class Table:
    """One telemetry table: its columns and indexes (`body`, the text between the parentheses
    of CREATE TABLE), the time column that drives partitions and TTL, and the sort key after
    TenantId."""

    name: str
    time_column: str
    order_by: str
    body: str
    # Usage metering sums rows with the same key (SummingMergeTree), partitions by month and
    # keeps rows for billing's sake rather than for the tenant's retention.
    engine: str = "MergeTree"
    partition: str = "toDate({time})"
    ttl: str = "toDateTime({time}) + toIntervalDay(RetentionDays)"
    # Partitions by tenant first (so a tenant's data is dropped whole); False for tables of
    # the gateway's own that many tenants share; "column": by PARTITION_COLUMN first.
    tenant_partitions: bool | str = True

    def storage_clause(self) -> str:
        """PARTITION BY, ORDER BY, TTL and SETTINGS of the table."""
        partition = self.partition.format(time=self.time_column)
        if self.tenant_partitions == "column":
            partition = f"({PARTITION_COLUMN}, {partition})"
        elif self.tenant_partitions:
            partition = f"(TenantId, {partition})"
        return (
            f"PARTITION BY {partition}\nORDER BY (TenantId, {self.order_by})\n"
            f"TTL {self.ttl.format(time=self.time_column)}\nSETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"
        )

    def create_statements(self, layout: Layout) -> tuple[str, ...]:
        engine = self.engine
        if layout.cluster:
            replicated = layout.replicated_engine(layout.data_table(self.name))
            engine = replicated.replace("ReplicatedMergeTree", f"Replicated{self.engine}", 1)
        data_table = (
            f"CREATE TABLE IF NOT EXISTS {layout.data_table(self.name)}{layout.on_cluster} ({self.body}) "
            f"ENGINE = {engine}\n{self.storage_clause()}"
        )
        if not layout.cluster:
            return (data_table,)
        # AS copies the columns; ClickHouse keeps skip indexes off non-MergeTree engines.
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {self.name}{layout.on_cluster} AS {layout.data_table(self.name)}\n"
            f"ENGINE = Distributed('{layout.cluster}', currentDatabase(), '{layout.data_table(self.name)}', "
            f"{SHARDING_KEY})"
        )
        return (data_table, distributed)


@dataclass(frozen=True)
class Migration:
    """One schema version: tables to create, then `steps`, each rendering its statements for a
    layout (in a cluster, an ALTER goes to the local tables ON CLUSTER and to the Distributed
    table)."""

    version: int
    name: str
    tables: tuple[Table, ...]
    steps: tuple[Callable[[Layout], tuple[str, ...]], ...] = ()

    def statements(self, layout: Layout = PLAIN) -> tuple[str, ...]:
        created = tuple(statement for table in self.tables for statement in table.create_statements(layout))
        return created + tuple(statement for step in self.steps for statement in step(layout))


# In the embedded mode chDB's background merges share the gateway's CPU: at ingest rates they
# took a third of the worker's CPU (docs/BENCHMARKS.md). A larger merge_selector_base lets more
# parts of similar size gather before they are merged, so each row is rewritten fewer times
# (~2.5 instead of ~3.2 times within the first 20 s of a benchmark), at the cost of a few more
# parts per partition. Applied on every start (ALTER ... MODIFY SETTING is idempotent) and only
# to chDB: a ClickHouse server's merges are its operator's to tune.
EMBEDDED_MERGE_SETTINGS = {"merge_selector_base": 20}

# Also embedded only: an INSERT does not build the skip indexes (bloom filters over every
# attribute key and value of every row); the part's first merge builds them, as every merge
# rebuilds them anyway. Until then a new part is read whole by a query that would have used
# them: the same rows, and new parts are small. ~6% less CPU per span (docs/BENCHMARKS.md).
EMBEDDED_INSERT_SETTINGS = {"materialize_skip_indexes_on_insert": 0}


# Also embedded only: a part under 10 MiB (uncompressed; the size under which a part is Compact
# anyway) is written as one file (ClickHouse's "Packed" part storage) instead of ~12, in every
# table an INSERT writes (each telemetry table, the trace-id lookup, the ledger, usage). Every
# INSERT writes four such parts, and on this VM's disk creating the files was most of what an
# INSERT cost: ~57 -> ~28 ms for one of 100 spans (docs/BENCHMARKS.md). Merged parts over the
# size are written as before. A directory written so cannot be read by a chDB or ClickHouse
# from before packed storage was open-sourced (ClickHouse PR 108118, mid-2026; chDB 4.4 reads
# it): docs/OPERATIONS.md.
PACKED_PART_BYTES = 10 * 1024 * 1024
EMBEDDED_PART_SETTINGS = {"min_bytes_for_full_part_storage": PACKED_PART_BYTES}


def embedded_tuning_statements() -> tuple[str, ...]:
    merges = ", ".join(f"{name} = {value}" for name, value in EMBEDDED_MERGE_SETTINGS.items())
    parts = ", ".join(f"{name} = {value}" for name, value in EMBEDDED_PART_SETTINGS.items())
    return tuple(f"ALTER TABLE {table} MODIFY SETTING {merges}, {parts}" for table in TENANT_TABLES) + (
        f"ALTER TABLE {LEDGER_TABLE} MODIFY SETTING {parts}",
    )


def migrations_table_statement(layout: Layout = PLAIN) -> str:
    """The table that records applied versions; in a cluster one copy on every server."""
    engine = layout.replicated_engine(MIGRATIONS_TABLE, one_shard=True) if layout.cluster else "MergeTree"
    return (
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}{layout.on_cluster} "
        "(version UInt32, name String, applied_at DateTime DEFAULT now()) "
        f"ENGINE = {engine} ORDER BY version"
    )


_TRACES = Table(
    name=TRACES_TABLE,
    time_column="Timestamp",
    order_by="ServiceName, SpanName, toDateTime(Timestamp)",
    body=f"""
    TenantId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes {ATTRS} CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes {ATTRS} CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes {ATTRS}
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes {ATTRS}
    ) CODEC(ZSTD(1)),
    RetentionDays UInt16,
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
""",
)

_LOGS = Table(
    name=LOGS_TABLE,
    time_column="Timestamp",
    order_by="ServiceName, toDateTime(Timestamp)",
    body=f"""
    TenantId LowCardinality(String) CODEC(ZSTD(1)),
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    ObservedTimestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    TraceFlags UInt8,
    SeverityText LowCardinality(String) CODEC(ZSTD(1)),
    SeverityNumber UInt8,
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Body String CODEC(ZSTD(1)),
    EventName String CODEC(ZSTD(1)),
    ResourceSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes {ATTRS} CODEC(ZSTD(1)),
    ScopeSchemaUrl LowCardinality(String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion LowCardinality(String) CODEC(ZSTD(1)),
    ScopeAttributes {ATTRS} CODEC(ZSTD(1)),
    LogAttributes {ATTRS} CODEC(ZSTD(1)),
    RetentionDays UInt16,
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
""",
)

_METRIC_COMMON = f"""
    TenantId LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes {ATTRS} CODEC(ZSTD(1)),
    ResourceSchemaUrl String CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    ScopeAttributes {ATTRS} CODEC(ZSTD(1)),
    ScopeDroppedAttrCount UInt32 CODEC(ZSTD(1)),
    ScopeSchemaUrl String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    MetricName String CODEC(ZSTD(1)),
    MetricDescription String CODEC(ZSTD(1)),
    MetricUnit String CODEC(ZSTD(1)),
    Attributes {ATTRS} CODEC(ZSTD(1)),
    StartTimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),
    TimeUnix DateTime64(9) CODEC(Delta, ZSTD(1)),"""

_EXEMPLARS = f"""
    Exemplars Nested (
        FilteredAttributes {ATTRS},
        TimeUnix DateTime64(9),
        Value Float64,
        SpanId String,
        TraceId String
    ) CODEC(ZSTD(1)),"""

_METRIC_TAIL = """
    RetentionDays UInt16,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1
"""


def _metric_table(name: str, specific: str, exemplars: bool = True) -> Table:
    return Table(
        name=name,
        time_column="TimeUnix",
        order_by="ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix)",
        body=f"{_METRIC_COMMON}{specific}{_EXEMPLARS if exemplars else ''}{_METRIC_TAIL}",
    )


_GAUGE = _metric_table(
    GAUGE_TABLE,
    """
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),""",
)

_SUM = _metric_table(
    SUM_TABLE,
    """
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    IsMonotonic Bool CODEC(Delta, ZSTD(1)),""",
)

_HISTOGRAM = _metric_table(
    HISTOGRAM_TABLE,
    """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    BucketCounts Array(UInt64) CODEC(ZSTD(1)),
    ExplicitBounds Array(Float64) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    Min Float64 CODEC(ZSTD(1)),
    Max Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),""",
)

_EXP_HISTOGRAM = _metric_table(
    EXP_HISTOGRAM_TABLE,
    """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    Scale Int32 CODEC(ZSTD(1)),
    ZeroCount UInt64 CODEC(ZSTD(1)),
    PositiveOffset Int32 CODEC(ZSTD(1)),
    PositiveBucketCounts Array(UInt64) CODEC(ZSTD(1)),
    NegativeOffset Int32 CODEC(ZSTD(1)),
    NegativeBucketCounts Array(UInt64) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    Min Float64 CODEC(ZSTD(1)),
    Max Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),""",
)

_SUMMARY = _metric_table(
    SUMMARY_TABLE,
    """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    ValueAtQuantiles Nested(
        Quantile Float64,
        Value Float64
    ) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),""",
    exemplars=False,
)

# One row per tenant, signal, hour and outcome; rows with the same key are summed on merge,
# so readers always aggregate with sum().
_USAGE = Table(
    name=USAGE_TABLE,
    time_column="Hour",
    order_by="Signal, Hour, Outcome",
    engine="SummingMergeTree",
    partition="toYYYYMM({time})",
    ttl="toDateTime({time}) + toIntervalDay(800)",
    body="""
    TenantId LowCardinality(String),
    Signal LowCardinality(String),
    Hour DateTime,
    Outcome LowCardinality(String),
    Requests UInt64,
    Items UInt64,
    ItemsAccepted UInt64,
    Bytes UInt64""",
)

# Columns of the Collector's clickhouseexporter (up to v0.150, the schema Grafana's ClickHouse
# data source detects as OTel 1.2.9) that tools read: otel_logs.TimestampTime (Grafana filters
# logs on it) and the trace-id lookup with its materialized view (Grafana's trace view reads
# min(Start) / max(End) of a trace from it). Here both carry TenantId first, as every table.
_TRACE_ID_TS = Table(
    name=TRACE_ID_TS_TABLE,
    time_column="Start",
    order_by="TraceId, Start",
    body="""
    TenantId LowCardinality(String) CODEC(ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    Start DateTime CODEC(Delta, ZSTD(1)),
    End DateTime CODEC(Delta, ZSTD(1)),
    RetentionDays UInt16,
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1""",
)


def _logs_timestamp_time(layout: Layout) -> tuple[str, ...]:
    column = "ADD COLUMN IF NOT EXISTS TimestampTime DateTime DEFAULT toDateTime(Timestamp) AFTER Timestamp"
    statements = [f"ALTER TABLE {layout.data_table(LOGS_TABLE)}{layout.on_cluster} {column}"]
    if layout.cluster:
        statements.append(f"ALTER TABLE {LOGS_TABLE}{layout.on_cluster} {column}")
    return tuple(statements)


_TRACE_ID_TS_SELECT = (
    "SELECT TenantId, TraceId, toDateTime(min(Timestamp)) AS Start, toDateTime(max(Timestamp)) AS End, "
    "max(RetentionDays) AS RetentionDays FROM {source} WHERE TraceId != '' GROUP BY TenantId, TraceId"
)


def _trace_id_ts_view(layout: Layout) -> tuple[str, ...]:
    # In a cluster the view runs on each shard's local tables: a tenant's traces and its lookup
    # rows are on the same shard.
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {TRACE_ID_TS_VIEW}{layout.on_cluster} "
        f"TO {layout.data_table(TRACE_ID_TS_TABLE)} AS "
        + _TRACE_ID_TS_SELECT.format(source=layout.data_table(TRACES_TABLE))
    )
    # The traces stored before this version, once: the view sees only new INSERTs. A trace
    # written meanwhile may be counted twice, which min(Start) / max(End) do not notice.
    backfill = (
        f"INSERT INTO {TRACE_ID_TS_TABLE} "
        + _TRACE_ID_TS_SELECT.format(source=TRACES_TABLE)
        # One INSERT over every tenant and day already stored; the partition limit guards
        # ingest, not this one-off copy.
        + " SETTINGS max_partitions_per_insert_block = 0"
    )
    return (view, backfill)


_LEDGER = Table(
    name=LEDGER_TABLE,
    time_column="At",
    order_by="Block",
    partition="toDate({time})",
    ttl="{time} + toIntervalDay(" + str(LEDGER_DAYS) + ")",
    tenant_partitions=False,
    body="""
    TenantId LowCardinality(String),
    Block String,
    At DateTime DEFAULT now()""",
)


# One row per tenant, minute, signal, outcome, reason and key; merges sum the counts and keep
# the latest message (readers aggregate with sum(), max(LastAt), argMax(Message, LastAt)).
# A flood of refused requests costs one row per request until merged, as usage does.
_REFUSALS = Table(
    name=REFUSALS_TABLE,
    time_column="Minute",
    order_by="Minute, Signal, Outcome, Reason, KeyPrefix",
    engine="AggregatingMergeTree",
    partition="toYYYYMM({time})",
    ttl="{time} + toIntervalDay(" + str(REFUSALS_DAYS) + ")",
    tenant_partitions=False,
    body="""
    TenantId LowCardinality(String),
    Minute DateTime,
    Signal LowCardinality(String),
    Outcome LowCardinality(String),
    Reason LowCardinality(String),
    KeyPrefix String,
    Requests SimpleAggregateFunction(sum, UInt64),
    Items SimpleAggregateFunction(sum, UInt64),
    Bytes SimpleAggregateFunction(sum, UInt64),
    Message SimpleAggregateFunction(anyLast, String),
    LastAt SimpleAggregateFunction(max, DateTime64(3))""",
)


def _gateway_columns(layout: Layout) -> tuple[str, ...]:
    columns = (
        f"ADD COLUMN IF NOT EXISTS {BLOCK_COLUMN} String DEFAULT '' CODEC(ZSTD(1)), "
        f"ADD COLUMN IF NOT EXISTS {BLOCK_ROWS_COLUMN} UInt32 DEFAULT 0 CODEC(ZSTD(1)), "
        f"ADD COLUMN IF NOT EXISTS {REQUEST_BYTES_COLUMN} UInt64 DEFAULT 0 CODEC(ZSTD(1)), "
        f"ADD COLUMN IF NOT EXISTS {ITEMS_REJECTED_COLUMN} UInt32 DEFAULT 0 CODEC(ZSTD(1))"
    )
    statements = []
    for table in TELEMETRY_TABLES:
        statements.append(f"ALTER TABLE {layout.data_table(table)}{layout.on_cluster} {columns}")
        if layout.cluster:
            statements.append(f"ALTER TABLE {table}{layout.on_cluster} {columns}")
    return tuple(statements)


def usage_view_name(table: str) -> str:
    return f"{USAGE_TABLE}_from_{table}"


def ledger_view_name(table: str) -> str:
    return f"{LEDGER_TABLE}_from_{table}"


def _usage_and_ledger_views(layout: Layout) -> tuple[str, ...]:
    """Accepted usage from the stored rows: every row is an accepted item, and the first row of
    a request carries its size and the items it rejected (a request that rejected some is
    partially accepted). The usage rows are written by the same INSERT as the data, so they
    count what was stored, no more and no less. In a cluster each shard's views read its local
    tables and write its local usage and ledger (a tenant's rows all live on one shard)."""
    statements = []
    for table in TELEMETRY_TABLES:
        source = layout.data_table(table)
        statements.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {usage_view_name(table)}{layout.on_cluster} "
            f"TO {layout.data_table(USAGE_TABLE)} AS SELECT TenantId, '{TABLE_SIGNALS[table]}' AS Signal, "
            "toStartOfHour(now()) AS Hour, "
            f"if({ITEMS_REJECTED_COLUMN} > 0, 'partially_accepted', 'accepted') AS Outcome, "
            f"countIf({REQUEST_BYTES_COLUMN} > 0) AS Requests, count() + sum({ITEMS_REJECTED_COLUMN}) AS Items, "
            f"count() AS ItemsAccepted, sum({REQUEST_BYTES_COLUMN}) AS Bytes FROM {source} GROUP BY TenantId, Outcome"
        )
        statements.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {ledger_view_name(table)}{layout.on_cluster} "
            f"TO {layout.data_table(LEDGER_TABLE)} AS SELECT TenantId, {BLOCK_COLUMN} AS Block "
            f"FROM {source} WHERE {BLOCK_COLUMN} != ''"
        )
    return tuple(statements)


def _deduplication_window(layout: Layout) -> tuple[str, ...]:
    # A ReplicatedMergeTree keeps its own window (replicated_deduplication_window, 1000 blocks
    # by default); a plain MergeTree keeps none unless told.
    if layout.cluster:
        return ()
    return tuple(
        f"ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        # The tables that exist by migration 5. The refusals table (6) needs none: nothing
        # written to it is ever sent twice on purpose.
        for table in (*TENANT_DATA_TABLES, USAGE_TABLE, LEDGER_TABLE)
    )


def _repartition(table: Table, layout: Layout) -> tuple[str, ...]:
    """Rewrite `table` with a new PARTITION BY (ClickHouse cannot alter one): a copy in the new
    layout, data included, takes its name. Safe to run again after a crash at any statement
    (the views that read or fill it follow its name). One server only: in a cluster every
    shard would have to copy its own parts (docs/OPERATIONS.md)."""
    if layout.cluster:
        return ()
    copy = f"{table.name}__repartitioned"
    return (
        f"DROP TABLE IF EXISTS {copy}",
        f"CREATE TABLE {copy} AS {table.name} ENGINE = {table.engine}\n{table.storage_clause()}",
        f"INSERT INTO {copy} SELECT * FROM {table.name} SETTINGS max_partitions_per_insert_block = 0",
        f"EXCHANGE TABLES {table.name} AND {copy}",
        f"DROP TABLE {copy}",
    )


# Migration 5: telemetry partitioned by PARTITION_COLUMN (a tenant's own id, or a shared
# partition), usage by month alone (it outlives tenants, for billing, and is never dropped by
# tenant): partitions per table stay few with many tenants.
_REPARTITIONED = tuple(
    dataclasses.replace(table, tenant_partitions="column")
    for table in (_TRACES, _LOGS, _GAUGE, _SUM, _HISTOGRAM, _EXP_HISTOGRAM, _SUMMARY, _TRACE_ID_TS)
) + (dataclasses.replace(_USAGE, tenant_partitions=False),)


def _partition_column(layout: Layout) -> tuple[str, ...]:
    column = f"ADD COLUMN IF NOT EXISTS {PARTITION_COLUMN} LowCardinality(String) DEFAULT TenantId CODEC(ZSTD(1))"
    statements = []
    for table in (*TELEMETRY_TABLES, TRACE_ID_TS_TABLE):
        statements.append(f"ALTER TABLE {layout.data_table(table)}{layout.on_cluster} {column}")
        if layout.cluster:
            statements.append(f"ALTER TABLE {table}{layout.on_cluster} {column}")
    return tuple(statements)


def _repartition_all(layout: Layout) -> tuple[str, ...]:
    return tuple(statement for table in _REPARTITIONED for statement in _repartition(table, layout))


def _trace_id_ts_view_with_partition(layout: Layout) -> tuple[str, ...]:
    # The lookup's rows go to the partition of the spans they come from.
    view = (
        f"CREATE MATERIALIZED VIEW {TRACE_ID_TS_VIEW}{layout.on_cluster} TO {layout.data_table(TRACE_ID_TS_TABLE)} "
        f"AS SELECT TenantId, {PARTITION_COLUMN}, TraceId, toDateTime(min(Timestamp)) AS Start, "
        "toDateTime(max(Timestamp)) AS End, max(RetentionDays) AS RetentionDays "
        f"FROM {layout.data_table(TRACES_TABLE)} WHERE TraceId != '' GROUP BY TenantId, {PARTITION_COLUMN}, TraceId"
    )
    return (f"DROP VIEW IF EXISTS {TRACE_ID_TS_VIEW}{layout.on_cluster}", view)


# Migration 7: the ledger carries each block's usage, and accepted usage is summed from the
# ledger (telemetry -> ledger -> usage, one chain per INSERT) in place of a view of its own on
# each telemetry table. Two independent views could leave a block in the ledger without its
# usage (a view failed, the process died) with nothing to tell it from a metered one; now usage
# is the sum of the ledger's rows, which `Batcher.check_usage` compares and completes.
LEDGER_USAGE_COLUMNS = ("Signal", "Hour", "Outcome", "Requests", "Items", "ItemsAccepted", "Bytes")
USAGE_FROM_LEDGER_VIEW = f"{USAGE_TABLE}_from_{LEDGER_TABLE}"


def _ledger_usage_columns(layout: Layout) -> tuple[str, ...]:
    # Rows written before this migration keep Signal '': they carry no usage of their own.
    columns = (
        "ADD COLUMN IF NOT EXISTS Signal LowCardinality(String) DEFAULT '', "
        "ADD COLUMN IF NOT EXISTS Hour DateTime DEFAULT toStartOfHour(At), "
        "ADD COLUMN IF NOT EXISTS Outcome LowCardinality(String) DEFAULT '', "
        "ADD COLUMN IF NOT EXISTS Requests UInt64 DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS Items UInt64 DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS ItemsAccepted UInt64 DEFAULT 0, "
        "ADD COLUMN IF NOT EXISTS Bytes UInt64 DEFAULT 0"
    )
    statements = [f"ALTER TABLE {layout.data_table(LEDGER_TABLE)}{layout.on_cluster} {columns}"]
    if layout.cluster:
        statements.append(f"ALTER TABLE {LEDGER_TABLE}{layout.on_cluster} {columns}")
    return tuple(statements)


def _usage_from_the_ledger(layout: Layout) -> tuple[str, ...]:
    """A block's first row carries its rows and, on the request's first block, the request's
    size and the items it rejected (storage.requests): the ledger's row of each block holds its
    accepted usage, and usage is their sum. Safe to run again after a crash at any statement;
    with a server, stop the writers first (docs/OPERATIONS.md): between the old views' drop and
    the new ones' creation, rows stored are not metered."""
    ledger = layout.data_table(LEDGER_TABLE)
    statements = [
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {USAGE_FROM_LEDGER_VIEW}{layout.on_cluster} "
        f"TO {layout.data_table(USAGE_TABLE)} AS SELECT TenantId, Signal, Hour, Outcome, sum(Requests) AS Requests, "
        "sum(Items) AS Items, sum(ItemsAccepted) AS ItemsAccepted, sum(Bytes) AS Bytes "
        f"FROM {ledger} WHERE Signal != '' GROUP BY TenantId, Signal, Hour, Outcome"
    ]
    for table in TELEMETRY_TABLES:
        statements += [
            f"DROP VIEW IF EXISTS {usage_view_name(table)}{layout.on_cluster}",
            f"DROP VIEW IF EXISTS {ledger_view_name(table)}{layout.on_cluster}",
            f"CREATE MATERIALIZED VIEW {ledger_view_name(table)}{layout.on_cluster} TO {ledger} AS SELECT "
            f"TenantId, {BLOCK_COLUMN} AS Block, '{TABLE_SIGNALS[table]}' AS Signal, toStartOfHour(now()) AS Hour, "
            f"if({ITEMS_REJECTED_COLUMN} > 0, 'partially_accepted', 'accepted') AS Outcome, "
            f"toUInt64({REQUEST_BYTES_COLUMN} > 0) AS Requests, "
            f"toUInt64({BLOCK_ROWS_COLUMN}) + {ITEMS_REJECTED_COLUMN} AS Items, "
            f"toUInt64({BLOCK_ROWS_COLUMN}) AS ItemsAccepted, {REQUEST_BYTES_COLUMN} AS Bytes "
            f"FROM {layout.data_table(table)} WHERE {BLOCK_COLUMN} != ''",
        ]
    return tuple(statements)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "telemetry tables", (_TRACES, _LOGS, _GAUGE, _SUM, _HISTOGRAM, _EXP_HISTOGRAM, _SUMMARY)),
    Migration(2, "usage metering", (_USAGE,)),
    Migration(
        3,
        "clickhouseexporter compatibility: otel_logs.TimestampTime, the trace-id lookup",
        (_TRACE_ID_TS,),
        (_logs_timestamp_time, _trace_id_ts_view),
    ),
    Migration(
        4,
        "exactly once: accepted usage from the stored rows, the ingest ledger, deduplication",
        (_LEDGER,),
        (_gateway_columns, _usage_and_ledger_views, _deduplication_window),
    ),
    Migration(
        5,
        "isolation tiers: telemetry partitioned by GatewayPartition, usage by month",
        (),
        (_partition_column, _trace_id_ts_view_with_partition, _repartition_all, _deduplication_window),
    ),
    Migration(6, "refused requests by key and reason, with their latest message", (_REFUSALS,)),
    Migration(
        7,
        "usage summed from the ledger, which carries each block's usage",
        (),
        (_ledger_usage_columns, _usage_from_the_ledger),
    ),
)

# The day-partitioned telemetry tables' time columns: a block of rows for one of them spans one
# partition per (tenant, day) it holds (storage.partitions keeps each INSERT under the limit).
DAY_PARTITIONED_TIME_COLUMNS = {
    table.name: table.time_column
    for table in (_TRACES, _LOGS, _GAUGE, _SUM, _HISTOGRAM, _EXP_HISTOGRAM, _SUMMARY)
    if table.partition == "toDate({time})"
}
