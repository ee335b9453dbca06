"""Realistic OTLP trace export requests for the benchmarks: one service's batch per request,
traces of 10 spans (a server root and its client children), ~10 attributes and one event per span."""

from __future__ import annotations

import random
import time
import uuid

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

SERVICES = ["checkout", "cart", "payments", "catalog", "search", "accounts"]
ROUTES = [
    "/api/v1/orders/{id}",
    "/api/v1/cart",
    "/api/v1/products",
    "/api/v1/search",
    "/healthz",
    "/api/v1/users/{id}/sessions",
]
USER_AGENTS = ["Mozilla/5.0 Chrome/126.0", "okhttp/4.12.0", "python-requests/2.32.3", "Go-http-client/1.1"]
DB_SYSTEMS = ["postgresql", "redis", "mysql", "mongodb"]


def _kv(key: str, value) -> KeyValue:
    field = {bool: "bool_value", int: "int_value", float: "double_value", str: "string_value"}[type(value)]
    return KeyValue(key=key, value=AnyValue(**{field: value}))


def build_request(rng: random.Random, spans: int) -> ExportTraceServiceRequest:
    """One service's batch: traces of ~10 spans (a server root and its children)."""
    service = rng.choice(SERVICES)
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(
        _kv(k, v)
        for k, v in [
            ("service.name", service),
            ("service.version", f"1.{rng.randint(0, 40)}.{rng.randint(0, 9)}"),
            ("service.instance.id", str(uuid.UUID(int=rng.getrandbits(128)))),
            ("deployment.environment", "production"),
            ("host.name", f"ip-10-0-{rng.randint(0, 255)}-{rng.randint(0, 255)}"),
            ("telemetry.sdk.language", "python"),
        ]
    )
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.flask", "0.48b0"
    now = time.time_ns()
    trace_id = root_id = b""
    for i in range(spans):
        span = ss.spans.add()
        if i % 10 == 0:
            trace_id, root_id = rng.randbytes(16), rng.randbytes(8)
            span.span_id, span.kind = root_id, Span.SPAN_KIND_SERVER
        else:
            span.span_id, span.parent_span_id, span.kind = rng.randbytes(8), root_id, Span.SPAN_KIND_CLIENT
        span.trace_id = trace_id
        route = rng.choice(ROUTES)
        status = rng.choice([200] * 17 + [404, 500, 503])
        span.name = f"GET {route}" if span.kind == Span.SPAN_KIND_SERVER else f"SELECT {service}.orders"
        span.start_time_unix_nano = now - rng.randint(0, 5_000_000_000)
        span.end_time_unix_nano = span.start_time_unix_nano + rng.randint(100_000, 200_000_000)
        if status >= 500:
            span.status.code, span.status.message = Status.STATUS_CODE_ERROR, "upstream failed"
        span.attributes.extend(
            _kv(k, v)
            for k, v in [
                ("http.method", rng.choice(["GET", "GET", "POST", "PUT"])),
                ("http.route", route),
                ("http.status_code", status),
                ("net.peer.name", f"{rng.choice(SERVICES)}.svc"),
                ("net.peer.port", rng.choice([80, 443, 5432, 6379])),
                ("http.user_agent", rng.choice(USER_AGENTS)),
                ("db.system", rng.choice(DB_SYSTEMS)),
                ("cache.hit", rng.random() < 0.7),
                ("sampling.ratio", 0.25),
                ("thread.id", rng.randint(1, 64)),
            ]
        )
        event = span.events.add(name="cache.lookup", time_unix_nano=span.start_time_unix_nano + 50_000)
        event.attributes.extend(
            [_kv("cache.key", f"order:{rng.randint(1, 10**6)}"), _kv("cache.size", rng.randint(1, 4096))]
        )
    return request
