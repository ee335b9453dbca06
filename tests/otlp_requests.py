"""Hand-built OTLP requests for tests, as protobuf messages and as OTLP/JSON documents."""

from __future__ import annotations

import json
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

NOW_NS = time.time_ns()
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")


def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def traces_request(spans: int = 1, *, service: str = "svc", trace_id: bytes = TRACE_ID) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", service))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "test.scope"
    for i in range(spans):
        span = scope_spans.spans.add()
        span.trace_id = trace_id
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"span-{i}"
        span.kind = 2
        span.start_time_unix_nano = NOW_NS + i
        span.end_time_unix_nano = NOW_NS + i + 1_000_000
        span.attributes.append(kv("i", i))
    return request


def logs_request(records: int = 1, *, service: str = "svc") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(kv("service.name", service))
    scope_logs = resource_logs.scope_logs.add()
    for i in range(records):
        record = scope_logs.log_records.add()
        record.time_unix_nano = NOW_NS + i
        record.severity_number = 9
        record.severity_text = "INFO"
        record.body.string_value = f"record {i}"
    return request


def gauge_request(points: int = 1, *, service: str = "svc") -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(kv("service.name", service))
    metric = resource_metrics.scope_metrics.add().metrics.add()
    metric.name = "g"
    for i in range(points):
        point = metric.gauge.data_points.add()
        point.time_unix_nano = NOW_NS + i
        point.as_double = float(i)
    return request


# --- OTLP/JSON, written as the specification's examples are ------------------------------------
def traces_json() -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {
                            "name": "my.library",
                            "version": "1.0.0",
                            "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "x"}}],
                        },
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "I'm a server span",
                                "startTimeUnixNano": str(NOW_NS),
                                "endTimeUnixNano": NOW_NS + 1_000_000,  # a number, as some senders write it
                                "kind": 2,
                                "attributes": [
                                    {"key": "my.span.attr", "value": {"stringValue": "some value"}},
                                    {"key": "count", "value": {"intValue": "42"}},
                                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {
                                        "key": "list",
                                        "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 1}]}},
                                    },
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": str(NOW_NS + 10),
                                        "name": "evt",
                                        "attributes": [{"key": "e", "value": {"stringValue": "v"}}],
                                    }
                                ],
                                "links": [
                                    {
                                        "traceId": "0af7651916cd43dd8448eb211c80319c",
                                        "spanId": "b7ad6b7169203331",
                                        "attributes": [{"key": "l", "value": {"intValue": 7}}],
                                    }
                                ],
                                "status": {"code": 2, "message": "boom"},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def metrics_json() -> dict:
    common = {"startTimeUnixNano": str(NOW_NS - 1000), "timeUnixNano": str(NOW_NS)}
    exemplar = {
        "timeUnixNano": str(NOW_NS),
        "asDouble": 1.5,
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
    }
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeMetrics": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "metrics": [
                            {
                                "name": "my.counter",
                                "unit": "1",
                                "description": "I am a Counter",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            **common,
                                            "asDouble": 5,
                                            "attributes": [{"key": "k", "value": {"stringValue": "v"}}],
                                            "exemplars": [exemplar],
                                        }
                                    ],
                                },
                            },
                            {"name": "my.gauge", "gauge": {"dataPoints": [{**common, "asInt": "10"}]}},
                            {
                                "name": "my.histogram",
                                "histogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            **common,
                                            "count": "2",
                                            "sum": 2,
                                            "bucketCounts": ["1", "1"],
                                            "explicitBounds": [1],
                                            "min": 0,
                                            "max": 2,
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "my.exponential.histogram",
                                "exponentialHistogram": {
                                    "aggregationTemporality": 1,
                                    "dataPoints": [
                                        {
                                            **common,
                                            "count": "3",
                                            "sum": 10,
                                            "scale": 0,
                                            "zeroCount": "1",
                                            "positive": {"offset": 1, "bucketCounts": ["0", "2"]},
                                            "min": 0,
                                            "max": 5,
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "my.summary",
                                "summary": {
                                    "dataPoints": [
                                        {
                                            **common,
                                            "count": "4",
                                            "sum": 20,
                                            "quantileValues": [
                                                {"quantile": 0.5, "value": 4},
                                                {"quantile": 0.99, "value": 9},
                                            ],
                                        }
                                    ]
                                },
                            },
                        ],
                    }
                ],
            }
        ]
    }


def logs_json() -> dict:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(NOW_NS),
                                "observedTimeUnixNano": str(NOW_NS + 5),
                                "severityNumber": 10,
                                "severityText": "Information",
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "body": {"stringValue": "Example log record"},
                                "attributes": [
                                    {"key": "string.attribute", "value": {"stringValue": "some string"}},
                                    {
                                        "key": "map.attribute",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {"key": "some.map.key", "value": {"stringValue": "some value"}}
                                                ]
                                            }
                                        },
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }


def dumps(document: dict) -> bytes:
    return json.dumps(document).encode()
