"""Spans -> otel_traces rows (events and links as Nested columns)."""

from __future__ import annotations

from storage.flatten.common import (
    MAX_TIMESTAMP_NS,
    Flattened,
    Rejections,
    TableBatch,
    TimeWindow,
    valid_id,
)
from storage.flatten.raw import raw_attributes, raw_traces
from storage.schema import TRACES_TABLE

COLUMNS = (
    "TenantId",
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
    "RetentionDays",
)
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")
_KIND_NAMES = dict(enumerate(SPAN_KINDS))
_STATUS_NAMES = dict(enumerate(STATUS_CODES))
_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)


def _span_problem(span, window: TimeWindow) -> str | None:
    """Why `span` is rejected, or None. The loop below tests the same conditions inline and
    calls this only to word the rejection."""
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
    problem = window.problem(f"span {span.name!r}", span.start_time_unix_nano)
    if problem:
        return problem
    for event in span.events:
        if event.time_unix_nano > MAX_TIMESTAMP_NS:
            return f"span {span.name!r}: event {event.name!r} timestamp is beyond the year 2262"
    for link in span.links:
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            return f"span {span.name!r}: link ids must be 16-byte trace_id and 8-byte span_id"
    return None


def flatten_traces(request, *, tenant_id: str, retention_days: int, window: TimeWindow | None = None) -> Flattened:
    """Rows for the spans of `request` (an ExportTraceServiceRequest), read through its raw view
    (storage.flatten.raw). Events and links become tuples (`()` when there are none): a tuple of
    strings, numbers and maps is one the garbage collector stops tracking, where a list is
    tracked for as long as the rows wait for their INSERT."""
    cols = [[] for _ in COLUMNS]
    (
        _tenant,
        ts,
        trace_id,
        span_id,
        parent_id,
        trace_state,
        name,
        kind,
        service,
        res_attrs,
        scope_name,
        scope_version,
        span_attrs,
        duration,
        status_code,
        status_message,
        ev_ts,
        ev_name,
        ev_attrs,
        ln_trace,
        ln_span,
        ln_state,
        ln_attrs,
        _retention,
    ) = cols
    rejections = Rejections()
    window = window or TimeWindow.now(retention_days=retention_days)
    oldest, newest = window.oldest_ns, window.newest_ns
    for resource_spans in raw_traces(request).resource_spans:
        resource = raw_attributes(resource_spans.resource.attributes)
        service_name = resource.get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            sname, sversion = scope.name, scope.version
            for span in scope_spans.spans[:]:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if (
                    len(tid) != 16
                    or tid == _ZERO_TRACE_ID
                    or len(sid) != 8
                    or sid == _ZERO_SPAN_ID
                    or (pid and len(pid) != 8)
                    or not start
                    or start < oldest
                    or start > newest
                    or end > MAX_TIMESTAMP_NS
                ):
                    rejections.add(_span_problem(span, window))
                    continue
                events, links = span.events, span.links
                if events:
                    e_ts, e_name, e_attrs = [], [], []
                    for event in events[:]:  # a list: see raw_attributes
                        e_ts.append(event.time_unix_nano)
                        e_name.append(event.name)
                        e_attrs.append(raw_attributes(event.attributes))
                    if max(e_ts) > MAX_TIMESTAMP_NS:
                        rejections.add(_span_problem(span, window))
                        continue
                    events = (tuple(e_ts), tuple(e_name), tuple(e_attrs))
                else:
                    events = ((), (), ())
                if links:
                    l_trace, l_span, l_state, l_attrs = [], [], [], []
                    for link in links[:]:
                        l_trace.append(link.trace_id)
                        l_span.append(link.span_id)
                        l_state.append(link.trace_state)
                        l_attrs.append(raw_attributes(link.attributes))
                    if any(len(t) != 16 for t in l_trace) or any(len(s) != 8 for s in l_span):
                        rejections.add(_span_problem(span, window))
                        continue
                    links = (
                        tuple(t.hex() for t in l_trace),
                        tuple(s.hex() for s in l_span),
                        tuple(l_state),
                        tuple(l_attrs),
                    )
                else:
                    links = ((), (), (), ())
                ts.append(start)
                trace_id.append(tid.hex())
                span_id.append(sid.hex())
                parent_id.append(pid.hex())
                trace_state.append(span.trace_state)
                name.append(span.name)
                kind.append(_KIND_NAMES.get(span.kind, "Unspecified"))
                service.append(service_name)
                res_attrs.append(resource)
                scope_name.append(sname)
                scope_version.append(sversion)
                span_attrs.append(raw_attributes(span.attributes))
                duration.append(end - start if end > start else 0)
                status = span.status
                status_code.append(_STATUS_NAMES.get(status.code, "Unset"))
                status_message.append(status.message)
                ev_ts.append(events[0])
                ev_name.append(events[1])
                ev_attrs.append(events[2])
                ln_trace.append(links[0])
                ln_span.append(links[1])
                ln_state.append(links[2])
                ln_attrs.append(links[3])
    rows = len(ts)
    cols[0] = [tenant_id] * rows
    cols[-1] = [retention_days] * rows
    batches = [TableBatch(TRACES_TABLE, COLUMNS, cols)] if rows else []
    return Flattened(batches, accepted=rows, rejected=rejections.count, rejection_examples=rejections.examples)
