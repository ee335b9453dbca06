"""Counting a protobuf request's items (spans, metric data points, log records) without
parsing them: the request is read through a skeleton of its schema in which each item is
`bytes`, so protobuf's C parser only slices the two or three levels above the items. The one
full parse of a request happens where its rows are made (gateway.otlp.prepare).

The skeleton keeps the field numbers, wire types and the metric data oneof of the OTLP
schema, so it counts what a full parse would find (tests/test_count.py checks both agree).
"""

from __future__ import annotations

import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from gateway.otlp import decode
from vocabulary import Reason, Refusal, Signal

_PACKAGE = "otlp_gateway.count"
_Field = descriptor_pb2.FieldDescriptorProto


def _message(
    file: descriptor_pb2.FileDescriptorProto,
    name: str,
    fields: list[tuple[str, int, str | None]],
    oneof: str | None = None,
) -> None:
    """(field name, number, message type name or None for bytes), all repeated unless `oneof`
    names the oneof they form (then each is an optional message)."""
    proto = file.message_type.add(name=name)
    if oneof:
        proto.oneof_decl.add(name=oneof)
    for field_name, number, type_name in fields:
        field = proto.field.add(name=field_name, number=number)
        field.label = _Field.LABEL_OPTIONAL if oneof else _Field.LABEL_REPEATED
        if oneof:
            field.oneof_index = 0
        if type_name is None:
            field.type = _Field.TYPE_BYTES
        else:
            field.type, field.type_name = _Field.TYPE_MESSAGE, f".{_PACKAGE}.{type_name}"


def _skeletons() -> dict[Signal, type]:
    file = descriptor_pb2.FileDescriptorProto(name="otlp_gateway/count.proto", package=_PACKAGE, syntax="proto3")
    _message(file, "Traces", [("resource_spans", 1, "ResourceSpans")])
    _message(file, "ResourceSpans", [("scope_spans", 2, "ScopeSpans")])
    _message(file, "ScopeSpans", [("spans", 2, None)])
    _message(file, "Logs", [("resource_logs", 1, "ResourceLogs")])
    _message(file, "ResourceLogs", [("scope_logs", 2, "ScopeLogs")])
    _message(file, "ScopeLogs", [("log_records", 2, None)])
    _message(file, "Metrics", [("resource_metrics", 1, "ResourceMetrics")])
    _message(file, "ResourceMetrics", [("scope_metrics", 2, "ScopeMetrics")])
    _message(file, "ScopeMetrics", [("metrics", 2, "Metric")])
    # Metric.data: gauge 5, sum 7, histogram 9, exponential_histogram 10, summary 11; each holds
    # `repeated ... data_points = 1`.
    _message(
        file,
        "Metric",
        [
            ("gauge", 5, "Points"),
            ("sum", 7, "Points"),
            ("histogram", 9, "Points"),
            ("exponential_histogram", 10, "Points"),
            ("summary", 11, "Points"),
        ],
        oneof="data",
    )
    _message(file, "Points", [("data_points", 1, None)])
    pool = descriptor_pool.DescriptorPool()
    built = pool.Add(file)
    return {
        signal: message_factory.GetMessageClass(built.message_types_by_name[name])
        for signal, name in ((Signal.TRACES, "Traces"), (Signal.LOGS, "Logs"), (Signal.METRICS, "Metrics"))
    }


_SKELETONS = _skeletons()
_PARSER_PREFIX = re.compile(r"^Error parsing message with type '[^']*'(: )?")


def count_items(signal: Signal, data: bytes) -> int:
    """The items in a protobuf Export request for `signal`. Raises Refusal for a body that is
    not one (a full parse would fail on it too)."""
    skeleton = _SKELETONS[signal]()
    try:
        skeleton.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        # Without the parser's "Error parsing message with type '<our skeleton>'": the sender
        # knows no such type.
        why = _PARSER_PREFIX.sub("", str(exc)) or "it cannot be parsed"
        raise Refusal(Reason.UNDECODABLE, f"body is not a valid {_NAMES[signal]} protobuf: {why}") from exc
    return decode.item_count(signal, skeleton)  # the skeleton has the same field names


_NAMES = {
    Signal.TRACES: "ExportTraceServiceRequest",
    Signal.METRICS: "ExportMetricsServiceRequest",
    Signal.LOGS: "ExportLogsServiceRequest",
}
