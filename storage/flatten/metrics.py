"""Metric data points -> the five otel_metrics_* tables, one row per data point."""

from __future__ import annotations

from storage.flatten.common import (
    MAX_TIMESTAMP_NS,
    Flattened,
    Rejections,
    TableBatch,
    TimeWindow,
    attributes,
    optional_id_hex,
    valid_id,
)
from storage.schema import EXP_HISTOGRAM_TABLE, GAUGE_TABLE, HISTOGRAM_TABLE, SUM_TABLE, SUMMARY_TABLE

COMMON = (
    "TenantId",
    "ResourceAttributes",
    "ResourceSchemaUrl",
    "ScopeName",
    "ScopeVersion",
    "ScopeAttributes",
    "ScopeDroppedAttrCount",
    "ScopeSchemaUrl",
    "ServiceName",
    "MetricName",
    "MetricDescription",
    "MetricUnit",
    "Attributes",
    "StartTimeUnix",
    "TimeUnix",
)
EXEMPLARS = (
    "Exemplars.FilteredAttributes",
    "Exemplars.TimeUnix",
    "Exemplars.Value",
    "Exemplars.SpanId",
    "Exemplars.TraceId",
)
TAIL = ("RetentionDays",)

SPECIFIC = {
    GAUGE_TABLE: ("Value", "Flags"),
    SUM_TABLE: ("Value", "Flags", "AggregationTemporality", "IsMonotonic"),
    HISTOGRAM_TABLE: (
        "Count",
        "Sum",
        "BucketCounts",
        "ExplicitBounds",
        "Flags",
        "Min",
        "Max",
        "AggregationTemporality",
    ),
    EXP_HISTOGRAM_TABLE: (
        "Count",
        "Sum",
        "Scale",
        "ZeroCount",
        "PositiveOffset",
        "PositiveBucketCounts",
        "NegativeOffset",
        "NegativeBucketCounts",
        "Flags",
        "Min",
        "Max",
        "AggregationTemporality",
    ),
    SUMMARY_TABLE: ("Count", "Sum", "ValueAtQuantiles.Quantile", "ValueAtQuantiles.Value", "Flags"),
}
KIND_TABLE = {
    "gauge": GAUGE_TABLE,
    "sum": SUM_TABLE,
    "histogram": HISTOGRAM_TABLE,
    "exponential_histogram": EXP_HISTOGRAM_TABLE,
    "summary": SUMMARY_TABLE,
}


def column_names(table: str) -> tuple[str, ...]:
    exemplars = () if table == SUMMARY_TABLE else EXEMPLARS
    return COMMON + SPECIFIC[table] + exemplars + TAIL


def _number(point) -> float:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def _specific(kind: str, metric_body, point) -> tuple:
    if kind == "gauge":
        return (_number(point), point.flags)
    if kind == "sum":
        return (_number(point), point.flags, metric_body.aggregation_temporality, metric_body.is_monotonic)
    if kind == "histogram":
        return (
            point.count,
            point.sum,
            point.bucket_counts[:],
            point.explicit_bounds[:],
            point.flags,
            point.min,
            point.max,
            metric_body.aggregation_temporality,
        )
    if kind == "exponential_histogram":
        return (
            point.count,
            point.sum,
            point.scale,
            point.zero_count,
            point.positive.offset,
            point.positive.bucket_counts[:],
            point.negative.offset,
            point.negative.bucket_counts[:],
            point.flags,
            point.min,
            point.max,
            metric_body.aggregation_temporality,
        )
    quantiles = point.quantile_values[:]  # a list; see common.attributes
    return (point.count, point.sum, [q.quantile for q in quantiles], [q.value for q in quantiles], point.flags)


def _exemplars(point) -> tuple[list, list, list, list, list]:
    exemplars = point.exemplars[:]  # a list; see common.attributes
    return (
        [attributes(e.filtered_attributes) for e in exemplars],
        [e.time_unix_nano for e in exemplars],
        [e.as_int if e.WhichOneof("value") == "as_int" else e.as_double for e in exemplars],
        [optional_id_hex(e.span_id) for e in exemplars],
        [optional_id_hex(e.trace_id) for e in exemplars],
    )


def _point_problem(metric, point, window: TimeWindow) -> str | None:
    if not metric.name:
        return "metric with an empty name"
    if point.time_unix_nano == 0:
        return f"metric {metric.name!r}: data point time_unix_nano is missing"
    if point.time_unix_nano > MAX_TIMESTAMP_NS or point.start_time_unix_nano > MAX_TIMESTAMP_NS:
        return f"metric {metric.name!r}: timestamp is beyond the year 2262"
    problem = window.problem(f"metric {metric.name!r} data point", point.time_unix_nano)
    if problem:
        return problem
    for exemplar in getattr(point, "exemplars", ()):
        if not valid_id(exemplar.trace_id, 16, optional=True) or not valid_id(exemplar.span_id, 8, optional=True):
            return f"metric {metric.name!r}: exemplar ids must be a 16-byte trace_id and 8-byte span_id, or empty"
        if exemplar.time_unix_nano > MAX_TIMESTAMP_NS:
            return f"metric {metric.name!r}: exemplar timestamp is beyond the year 2262"
    if (
        hasattr(point, "bucket_counts")
        and point.explicit_bounds
        and len(point.bucket_counts) != len(point.explicit_bounds) + 1
    ):
        return f"metric {metric.name!r}: histogram needs len(explicit_bounds) + 1 bucket counts"
    return None


def flatten_metrics(request, *, tenant_id: str, retention_days: int, window: TimeWindow | None = None) -> Flattened:
    window = window or TimeWindow.now(retention_days=retention_days)
    tables: dict[str, list[list]] = {}
    rejections = Rejections()
    accepted = 0
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        service_name = resource.get("service.name", "")
        rschema = resource_metrics.schema_url
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            head = (
                tenant_id,
                resource,
                rschema,
                scope.name,
                scope.version,
                attributes(scope.attributes),
                scope.dropped_attributes_count,
                scope_metrics.schema_url,
                service_name,
            )
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue  # a metric without data carries no points to store or reject
                table = KIND_TABLE[kind]
                body = getattr(metric, kind)
                cols = tables.get(table)
                if cols is None:
                    cols = tables[table] = [[] for _ in column_names(table)]
                metric_head = head + (metric.name, metric.description, metric.unit)
                for point in body.data_points[:]:
                    problem = _point_problem(metric, point, window)
                    if problem:
                        rejections.add(problem)
                        continue
                    row = (
                        metric_head
                        + (
                            attributes(point.attributes),
                            point.start_time_unix_nano,
                            point.time_unix_nano,
                        )
                        + _specific(kind, body, point)
                    )
                    if table != SUMMARY_TABLE:
                        row += _exemplars(point)
                    row += (retention_days,)
                    for column, value in zip(cols, row):
                        column.append(value)
                    accepted += 1
    batches = [TableBatch(table, column_names(table), cols) for table, cols in tables.items() if cols[0]]
    return Flattened(batches, accepted=accepted, rejected=rejections.count, rejection_examples=rejections.examples)
