"""Request bytes -> Export*ServiceRequest: media types, decompression with a bomb limit,
protobuf and OTLP/JSON decoding. Every failure is an Refusal with a message to act on."""

from __future__ import annotations

import base64
import enum
import io
import json
import re
import zlib
from typing import Any

import zstandard
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from storage.flatten.raw import RawTraces
from vocabulary import Reason, Refusal, Signal

REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceRequest,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceRequest,
    Signal.LOGS: logs_service_pb2.ExportLogsServiceRequest,
}
# What a protobuf body is parsed into: trace requests straight into their raw view, whose
# attribute lists stay bytes until they are flattened (storage/flatten/raw.py). Its attribute
# strings are checked for UTF-8 there, and a bad one is then an UNDECODABLE request as here.
PROTOBUF_PARSE_TYPES: dict[Signal, type[Message]] = {**REQUEST_TYPES, Signal.TRACES: RawTraces}
RESPONSE_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: trace_service_pb2.ExportTraceServiceResponse,
    Signal.METRICS: metrics_service_pb2.ExportMetricsServiceResponse,
    Signal.LOGS: logs_service_pb2.ExportLogsServiceResponse,
}


class Encoding(enum.StrEnum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


def encoding_for(content_type: str | None) -> Encoding:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == Encoding.PROTOBUF or media == "application/protobuf":
        return Encoding.PROTOBUF
    if media == Encoding.JSON:
        return Encoding.JSON
    raise Refusal(
        Reason.UNSUPPORTED_MEDIA_TYPE,
        f"unsupported Content-Type {content_type or '(none)'!r}: send application/x-protobuf or application/json",
    )


def decompress(body: bytes, content_encoding: str | None, *, limit: int) -> bytes:
    """The body after Content-Encoding, refusing anything that would grow past `limit` bytes.
    Every member of a multi-member body is decoded (RFC 1952 2.2 gzip members, zstd frames,
    concatenated zlib streams): a body is used whole or refused, never in part."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        data = body
    elif coding in ("gzip", "x-gzip"):
        data = _inflate(body, wbits=31, limit=limit, name="gzip")
    elif coding == "deflate":
        # RFC 9110 says zlib; some clients send raw deflate. A zlib stream starts with a header
        # byte whose low nibble is 8 and whose first two bytes are a multiple of 31.
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        data = _inflate(body, wbits=15 if zlib_header else -15, limit=limit, name="deflate")
    elif coding == "zstd":
        data = _unzstd(body, limit=limit)
    else:
        raise Refusal(
            Reason.UNSUPPORTED_ENCODING,
            f"unsupported Content-Encoding {content_encoding!r}: use gzip, deflate, zstd or none",
        )
    if len(data) > limit:
        raise Refusal(Reason.TOO_LARGE, _too_large(limit))
    return data


def _too_large(limit: int) -> str:
    return f"request body exceeds the limit of {limit} bytes after decompression; send smaller batches"


def _inflate(body: bytes, *, wbits: int, limit: int, name: str) -> bytes:
    """gzip or zlib members one after another until the body ends; raw deflate (wbits < 0)
    has no member framing, so anything after its last block is an error."""
    parts: list[bytes] = []
    size, rest = 0, body
    while True:
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            chunk = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise Refusal(Reason.UNDECODABLE, f"body is not valid {name}: {exc}") from exc
        size += len(chunk)
        parts.append(chunk)
        if size > limit or inflater.unconsumed_tail:
            raise Refusal(Reason.TOO_LARGE, _too_large(limit))
        if not inflater.eof:
            raise Refusal(Reason.UNDECODABLE, f"{name} body is truncated")
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)
        if wbits < 0:
            raise Refusal(Reason.UNDECODABLE, f"{name} body has {len(rest)} bytes after its end")


def _unzstd(body: bytes, *, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        # The stream reader bounds the output (a bomb stops at the limit) ...
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
            while True:
                chunk = reader.read(min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                size += len(chunk)
                parts.append(chunk)
                if size > limit:
                    raise Refusal(Reason.TOO_LARGE, _too_large(limit))
        # ... but ends quietly at a cut-off frame, which only a frame-by-frame pass notices. The
        # output is known to be small by now.
        rest = body
        while rest:
            frame = zstandard.ZstdDecompressor().decompressobj()
            frame.decompress(rest)
            if not frame.eof:
                raise Refusal(Reason.UNDECODABLE, "zstd body is truncated")
            rest = frame.unused_data
    except zstandard.ZstdError as exc:
        raise Refusal(Reason.UNDECODABLE, f"body is not valid zstd: {exc}") from exc
    return b"".join(parts)


# What a hostile body can make the JSON parser and protobuf's JSON mapping raise: nesting past
# the recursion limit, numbers past any range (an enum of 1e999), strings protobuf will not take
# (a lone surrogate), values of the wrong type at any depth.
_JSON_ERRORS = (
    ValueError,
    TypeError,
    RecursionError,
    OverflowError,
    UnicodeError,
    KeyError,
    IndexError,
    AttributeError,
    SystemError,
    json_format.ParseError,
)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(document: Any) -> str | None:
    """The first string (key or value) holding a lone UTF-16 surrogate, which JSON's \\u escapes
    can spell but no UTF-8 string can hold; protobuf fails on it deep inside."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return node
    return None


def parse(signal: Signal, data: bytes, encoding: Encoding) -> Message:
    if encoding is Encoding.PROTOBUF:
        message = PROTOBUF_PARSE_TYPES[signal]()
        try:
            message.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
            raise Refusal(Reason.UNDECODABLE, f"body is not a valid {message.DESCRIPTOR.name} protobuf: {exc}") from exc
        return message
    message = REQUEST_TYPES[signal]()
    try:
        document = json.loads(data)
    except RecursionError as exc:
        raise Refusal(Reason.UNDECODABLE, "body is not valid OTLP/JSON: nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(Reason.UNDECODABLE, f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise Refusal(Reason.UNDECODABLE, "OTLP/JSON body must be a JSON object")
    if _SURROGATE_ESCAPE.search(data):
        bad = _lone_surrogate(document)
        if bad is not None:
            raise Refusal(
                Reason.UNDECODABLE,
                f"body is not valid OTLP/JSON: the string {bad[:60]!r} holds a "
                "lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair)",
            )
    _hex_ids_to_base64(signal, document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except RecursionError as exc:
        raise Refusal(
            Reason.UNDECODABLE, f"body is not a valid OTLP/JSON {message.DESCRIPTOR.name}: nested too deeply"
        ) from exc
    except _JSON_ERRORS as exc:
        raise Refusal(
            Reason.UNDECODABLE, f"body is not a valid OTLP/JSON {message.DESCRIPTOR.name}: {str(exc)[:500]}"
        ) from exc
    return message


# OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64.
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")


def _hex_ids_to_base64(signal: Signal, document: dict[str, Any]) -> None:
    if signal is Signal.TRACES:
        for span in _walk(document, ("resourceSpans", "scopeSpans", "spans")):
            _convert_ids(span, "span")
            for link in _list(span, "links"):
                _convert_ids(link, "span link")
    elif signal is Signal.LOGS:
        for record in _walk(document, ("resourceLogs", "scopeLogs", "logRecords")):
            _convert_ids(record, "log record")
    else:
        for metric in _walk(document, ("resourceMetrics", "scopeMetrics", "metrics")):
            for kind in _METRIC_KINDS:
                body = metric.get(kind)
                if isinstance(body, dict):
                    for point in _list(body, "dataPoints"):
                        for exemplar in _list(point, "exemplars"):
                            _convert_ids(exemplar, "exemplar")


def _snake(name: str) -> str:
    return "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)


def _list(node: Any, camel: str) -> list:
    if not isinstance(node, dict):
        return []
    value = node.get(camel, node.get(_snake(camel)))
    return value if isinstance(value, list) else []


def _walk(document: dict[str, Any], path: tuple[str, ...]):
    level = [document]
    for name in path:
        level = [child for node in level for child in _list(node, name)]
    return [node for node in level if isinstance(node, dict)]


def _convert_ids(node: dict[str, Any], what: str) -> None:
    for field in _ID_FIELDS:
        value = node.get(field)
        if not isinstance(value, str) or not value:
            continue
        try:
            raw = bytes.fromhex(value)
        except ValueError as exc:
            raise Refusal(
                Reason.UNDECODABLE, f"{what} {field} {value[:40]!r} is not a hex string (OTLP/JSON ids are hex)"
            ) from exc
        node[field] = base64.b64encode(raw).decode()


def undecodable_attribute(signal: Signal, exc: Exception) -> Refusal:
    """The error for an attribute the flattener could not read (a string that is not UTF-8 in a
    body parsed with its attributes left as bytes): the same as for any undecodable body."""
    name = REQUEST_TYPES[signal].DESCRIPTOR.name
    return Refusal(Reason.UNDECODABLE, f"body is not a valid {name} protobuf: an attribute is not valid: {exc}")


def item_count(signal: Signal, request: Message) -> int:
    """Spans, metric data points or log records in a request (what limits and usage count)."""
    if signal is Signal.TRACES:
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if signal is Signal.LOGS:
        return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total
