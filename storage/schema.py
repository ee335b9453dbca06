"""Versioned ClickHouse DDL for telemetry, modelled on the OpenTelemetry Collector's ClickHouse
exporter, with TenantId first in PARTITION BY and ORDER BY and a per-row retention TTL."""
from __future__ import annotations

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
# Every table that holds a tenant's telemetry: reads of these must be tenant-scoped.
TELEMETRY_TABLES = (TRACES_TABLE, LOGS_TABLE, *METRIC_TABLES)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def _mergetree(time_column: str, order_by: str) -> str:
    return f"""ENGINE = MergeTree
PARTITION BY (TenantId, toDate({time_column}))
ORDER BY (TenantId, {order_by})
TTL toDateTime({time_column}) + toIntervalDay(RetentionDays)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""


_TRACES = f"""CREATE TABLE IF NOT EXISTS {TRACES_TABLE} (
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
) {_mergetree("Timestamp", "ServiceName, SpanName, toDateTime(Timestamp)")}"""

_LOGS = f"""CREATE TABLE IF NOT EXISTS {LOGS_TABLE} (
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
) {_mergetree("Timestamp", "ServiceName, toDateTime(Timestamp)")}"""

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
) """ + _mergetree("TimeUnix", "ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix)")


def _metric_table(name: str, specific: str, exemplars: bool = True) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {name} ({_METRIC_COMMON}{specific}"
        f"{_EXEMPLARS if exemplars else ''}{_METRIC_TAIL}"
    )


_GAUGE = _metric_table(GAUGE_TABLE, """
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),""")

_SUM = _metric_table(SUM_TABLE, """
    Value Float64 CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),
    IsMonotonic Bool CODEC(Delta, ZSTD(1)),""")

_HISTOGRAM = _metric_table(HISTOGRAM_TABLE, """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    BucketCounts Array(UInt64) CODEC(ZSTD(1)),
    ExplicitBounds Array(Float64) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),
    Min Float64 CODEC(ZSTD(1)),
    Max Float64 CODEC(ZSTD(1)),
    AggregationTemporality Int32 CODEC(ZSTD(1)),""")

_EXP_HISTOGRAM = _metric_table(EXP_HISTOGRAM_TABLE, """
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
    AggregationTemporality Int32 CODEC(ZSTD(1)),""")

_SUMMARY = _metric_table(SUMMARY_TABLE, """
    Count UInt64 CODEC(Delta, ZSTD(1)),
    Sum Float64 CODEC(ZSTD(1)),
    ValueAtQuantiles Nested(
        Quantile Float64,
        Value Float64
    ) CODEC(ZSTD(1)),
    Flags UInt32 CODEC(ZSTD(1)),""", exemplars=False)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "telemetry tables", (_TRACES, _LOGS, _GAUGE, _SUM, _HISTOGRAM, _EXP_HISTOGRAM, _SUMMARY)),
)
