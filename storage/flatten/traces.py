"""Spans -> otel_traces rows (events and links as Nested columns)."""
from __future__ import annotations

from storage.flatten.common import (
    MAX_TIMESTAMP_NS,
    Flattened,
    Rejections,
    TableBatch,
    attributes,
    valid_id,
)
from storage.schema import TRACES_TABLE

COLUMNS = (
    "TenantId", "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName",
    "SpanKind", "ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes",
    "Duration", "StatusCode", "StatusMessage", "Events.Timestamp", "Events.Name",
    "Events.Attributes", "Links.TraceId", "Links.SpanId", "Links.TraceState", "Links.Attributes",
    "RetentionDays",
)
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")


def _span_problem(span) -> str | None:
    if not valid_id(span.trace_id, 16, optional=False):
        return f"span {span.name!r}: trace_id must be 16 bytes and not all zero, got {len(span.trace_id)} bytes"
    if not valid_id(span.span_id, 8, optional=False):
        return f"span {span.name!r}: span_id must be 8 bytes and not all zero, got {len(span.span_id)} bytes"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return f"span {span.name!r}: parent_span_id must be 8 bytes or empty, got {len(span.parent_span_id)} bytes"
    if span.start_time_unix_nano == 0:
        return f"span {span.name!r}: start_time_unix_nano is missing"
    if span.start_time_unix_nano > MAX_TIMESTAMP_NS or span.end_time_unix_nano > MAX_TIMESTAMP_NS:
        return f"span {span.name!r}: timestamp is beyond the year 2262"
    for event in span.events:
        if event.time_unix_nano > MAX_TIMESTAMP_NS:
            return f"span {span.name!r}: event {event.name!r} timestamp is beyond the year 2262"
    for link in span.links:
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            return f"span {span.name!r}: link ids must be 16-byte trace_id and 8-byte span_id"
    return None


def flatten_traces(request, *, tenant_id: str, retention_days: int) -> Flattened:
    cols = [[] for _ in COLUMNS]
    (_tenant, ts, trace_id, span_id, parent_id, trace_state, name, kind, service, res_attrs,
     scope_name, scope_version, span_attrs, duration, status_code, status_message, ev_ts, ev_name,
     ev_attrs, ln_trace, ln_span, ln_state, ln_attrs, _retention) = cols
    rejections = Rejections()
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service_name = resource.get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            sname, sversion = scope.name, scope.version
            for span in scope_spans.spans:
                problem = _span_problem(span)
                if problem:
                    rejections.add(problem)
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                ts.append(start)
                trace_id.append(span.trace_id.hex())
                span_id.append(span.span_id.hex())
                parent_id.append(span.parent_span_id.hex())
                trace_state.append(span.trace_state)
                name.append(span.name)
                k = span.kind
                kind.append(SPAN_KINDS[k] if 0 <= k < len(SPAN_KINDS) else "Unspecified")
                service.append(service_name)
                res_attrs.append(resource)
                scope_name.append(sname)
                scope_version.append(sversion)
                span_attrs.append(attributes(span.attributes))
                duration.append(end - start if end > start else 0)
                status = span.status
                code = status.code
                status_code.append(STATUS_CODES[code] if 0 <= code < len(STATUS_CODES) else "Unset")
                status_message.append(status.message)
                events = span.events
                if events:
                    ev_ts.append([e.time_unix_nano for e in events])
                    ev_name.append([e.name for e in events])
                    ev_attrs.append([attributes(e.attributes) for e in events])
                else:
                    ev_ts.append([]); ev_name.append([]); ev_attrs.append([])
                links = span.links
                if links:
                    ln_trace.append([link.trace_id.hex() for link in links])
                    ln_span.append([link.span_id.hex() for link in links])
                    ln_state.append([link.trace_state for link in links])
                    ln_attrs.append([attributes(link.attributes) for link in links])
                else:
                    ln_trace.append([]); ln_span.append([]); ln_state.append([]); ln_attrs.append([])
    rows = len(ts)
    cols[0] = [tenant_id] * rows
    cols[-1] = [retention_days] * rows
    batches = [TableBatch(TRACES_TABLE, COLUMNS, cols)] if rows else []
    return Flattened(batches, accepted=rows, rejected=rejections.count, rejection_examples=rejections.examples)
