"""Log records -> otel_logs rows."""

from __future__ import annotations

import time

from storage.flatten.common import (
    MAX_TIMESTAMP_NS,
    Flattened,
    Rejections,
    TableBatch,
    TimeWindow,
    any_value_str,
    attributes,
    optional_id_hex,
    valid_id,
)
from storage.schema import LOGS_TABLE

COLUMNS = (
    "TenantId",
    "Timestamp",
    "ObservedTimestamp",
    "TraceId",
    "SpanId",
    "TraceFlags",
    "SeverityText",
    "SeverityNumber",
    "ServiceName",
    "Body",
    "EventName",
    "ResourceSchemaUrl",
    "ResourceAttributes",
    "ScopeSchemaUrl",
    "ScopeName",
    "ScopeVersion",
    "ScopeAttributes",
    "LogAttributes",
    "RetentionDays",
)


def _record_problem(record, timestamp_ns: int, window: TimeWindow) -> str | None:
    if not valid_id(record.trace_id, 16, optional=True):
        return f"log record: trace_id must be 16 bytes or empty, got {len(record.trace_id)} bytes"
    if not valid_id(record.span_id, 8, optional=True):
        return f"log record: span_id must be 8 bytes or empty, got {len(record.span_id)} bytes"
    if record.time_unix_nano > MAX_TIMESTAMP_NS or record.observed_time_unix_nano > MAX_TIMESTAMP_NS:
        return "log record: timestamp is beyond the year 2262"
    if not 0 <= record.severity_number <= 24:
        return f"log record: severity_number {record.severity_number} is outside 0..24"
    return window.problem("log record", timestamp_ns)


def flatten_logs(request, *, tenant_id: str, retention_days: int, window: TimeWindow | None = None) -> Flattened:
    cols = [[] for _ in COLUMNS]
    (
        _tenant,
        ts,
        observed,
        trace_id,
        span_id,
        flags,
        sev_text,
        sev_num,
        service,
        body,
        event_name,
        res_schema,
        res_attrs,
        scope_schema,
        scope_name,
        scope_version,
        scope_attrs,
        log_attrs,
        _retention,
    ) = cols
    received_ns = time.time_ns()
    window = window or TimeWindow.at(received_ns, retention_days=retention_days)
    rejections = Rejections()
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        service_name = resource.get("service.name", "")
        rschema = resource_logs.schema_url
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            sattrs = attributes(scope.attributes)
            for record in scope_logs.log_records[:]:  # a list; see common.attributes
                # As the Collector does: the observed time stands in for a missing event time,
                # and the receive time for both.
                obs = record.observed_time_unix_nano or received_ns
                timestamp = record.time_unix_nano or obs
                problem = _record_problem(record, timestamp, window)
                if problem:
                    rejections.add(problem)
                    continue
                ts.append(timestamp)
                observed.append(obs)
                trace_id.append(optional_id_hex(record.trace_id))
                span_id.append(optional_id_hex(record.span_id))
                flags.append(record.flags & 0xFF)
                sev_text.append(record.severity_text)
                sev_num.append(record.severity_number)
                service.append(service_name)
                body.append(any_value_str(record.body))
                event_name.append(record.event_name)
                res_schema.append(rschema)
                res_attrs.append(resource)
                scope_schema.append(scope_logs.schema_url)
                scope_name.append(scope.name)
                scope_version.append(scope.version)
                scope_attrs.append(sattrs)
                log_attrs.append(attributes(record.attributes))
    rows = len(ts)
    cols[0] = [tenant_id] * rows
    cols[-1] = [retention_days] * rows
    batches = [TableBatch(LOGS_TABLE, COLUMNS, cols)] if rows else []
    return Flattened(batches, accepted=rows, rejected=rejections.count, rejection_examples=rejections.examples)
