"""Real OpenTelemetry SDK exporters (OTLP/gRPC and OTLP/HTTP) against the running receivers;
the rows are read back from ClickHouse through the tenant-scoped reader."""

from __future__ import annotations

import pytest
from grpc import Compression as GrpcCompression
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

pytestmark = pytest.mark.django_db(transaction=True)


def _exporters(kind: str, transport: str, endpoint: str, key: str, compression: bool):
    if transport == "grpc":
        cls = {"traces": GrpcSpanExporter, "metrics": GrpcMetricExporter, "logs": GrpcLogExporter}[kind]
        return cls(
            endpoint=endpoint,
            insecure=True,
            headers={"authorization": f"Bearer {key}"},
            compression=GrpcCompression.Gzip if compression else None,
        )
    cls = {"traces": HttpSpanExporter, "metrics": HttpMetricExporter, "logs": HttpLogExporter}[kind]
    return cls(
        endpoint=f"{endpoint}/v1/{kind}",
        headers={"x-api-key": key},
        compression=HttpCompression.Gzip if compression else HttpCompression.NoCompression,
    )


@pytest.fixture(params=["grpc", "http"])
def transport(request, grpc_target, http_url):
    return request.param, (grpc_target if request.param == "grpc" else http_url)


def _resource(transport_name: str) -> Resource:
    return Resource.create({"service.name": f"checkout-{transport_name}", "deployment.environment": "test"})


def test_traces(transport, tenant):
    name, endpoint = transport
    exporter = _exporters("traces", name, endpoint, tenant.key, compression=True)
    provider = TracerProvider(resource=_resource(name))
    finished = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span):
            finished.append(span)
            super().on_end(span)

    provider.add_span_processor(Recording(exporter))
    tracer = provider.get_tracer("shop.cart", "1.2.3")
    with tracer.start_as_current_span("GET /cart", attributes={"http.status_code": 200, "retry": True}) as parent:
        parent.add_event("cache miss", {"key": "cart:42"})
        with tracer.start_as_current_span("SELECT cart", attributes={"db.system": "postgresql"}):
            pass
    provider.shutdown()

    rows = tenant.rows(
        "SELECT SpanName, TraceId, SpanId, ParentSpanId, ServiceName, ScopeName, ScopeVersion, SpanAttributes,"
        " ResourceAttributes, Events.Name, Events.Attributes, toUnixTimestamp64Nano(Timestamp) AS StartNs,"
        " Duration, SpanKind, StatusCode FROM otel_traces WHERE TenantId = {tenant_id:String} ORDER BY SpanName"
    )
    assert [row["SpanName"] for row in rows] == ["GET /cart", "SELECT cart"]
    by_name = {span.name: span for span in finished}
    for row in rows:
        span = by_name[row["SpanName"]]
        assert row["TraceId"] == f"{span.context.trace_id:032x}"
        assert row["SpanId"] == f"{span.context.span_id:016x}"
        assert row["StartNs"] == span.start_time
        assert row["Duration"] == span.end_time - span.start_time
        assert row["ServiceName"] == f"checkout-{name}"
        assert row["ResourceAttributes"]["deployment.environment"] == "test"
        assert (row["ScopeName"], row["ScopeVersion"]) == ("shop.cart", "1.2.3")
        assert row["SpanKind"] == "Internal"
    parent_row, child_row = rows
    assert child_row["ParentSpanId"] == parent_row["SpanId"]
    assert parent_row["ParentSpanId"] == ""
    assert parent_row["SpanAttributes"] == {"http.status_code": "200", "retry": "true"}
    assert parent_row["Events.Name"] == ["cache miss"]
    assert parent_row["Events.Attributes"] == [{"key": "cart:42"}]


def test_metrics_all_sdk_kinds(transport, tenant):
    name, endpoint = transport
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=_resource(name),
        metric_readers=[reader],
        views=[View(instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("shop.metrics", "0.1")
    meter.create_counter("orders", unit="1", description="orders placed").add(3, {"region": "eu"})
    meter.create_up_down_counter("queue.depth").add(-2, {"queue": "a"})
    meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/cart"})
    meter.create_histogram("payload.size", unit="By").record(1500)
    meter.create_observable_gauge("temperature", callbacks=[lambda options: [Observation(21.5, {"room": "lab"})]])
    data = reader.get_metrics_data()
    exporter = _exporters("metrics", name, endpoint, tenant.key, compression=False)
    assert exporter.export(data).name == "SUCCESS"
    exporter.shutdown()
    provider.shutdown()

    sums = tenant.rows(
        "SELECT MetricName, MetricDescription, MetricUnit, Value, IsMonotonic, AggregationTemporality, Attributes,"
        " ServiceName, ScopeName FROM otel_metrics_sum WHERE TenantId = {tenant_id:String} ORDER BY MetricName"
    )
    assert [(r["MetricName"], r["Value"], r["IsMonotonic"]) for r in sums] == [
        ("orders", 3.0, True),
        ("queue.depth", -2.0, False),
    ]
    assert sums[0]["MetricDescription"] == "orders placed" and sums[0]["MetricUnit"] == "1"
    assert sums[0]["Attributes"] == {"region": "eu"} and sums[0]["ServiceName"] == f"checkout-{name}"
    assert sums[0]["AggregationTemporality"] == 2  # cumulative
    gauges = tenant.rows(
        "SELECT MetricName, Value, Attributes FROM otel_metrics_gauge WHERE TenantId = {tenant_id:String}"
    )
    assert gauges == [{"MetricName": "temperature", "Value": 21.5, "Attributes": {"room": "lab"}}]
    hist = tenant.rows(
        "SELECT MetricName, Count, Sum, Min, Max, BucketCounts, ExplicitBounds FROM otel_metrics_histogram"
        " WHERE TenantId = {tenant_id:String}"
    )
    assert len(hist) == 1 and hist[0]["MetricName"] == "latency"
    assert (hist[0]["Count"], hist[0]["Sum"], hist[0]["Min"], hist[0]["Max"]) == (1, 12.5, 12.5, 12.5)
    assert sum(hist[0]["BucketCounts"]) == 1 and len(hist[0]["BucketCounts"]) == len(hist[0]["ExplicitBounds"]) + 1
    exp = tenant.rows(
        "SELECT MetricName, Count, Sum, Scale, PositiveBucketCounts FROM otel_metrics_exponential_histogram"
        " WHERE TenantId = {tenant_id:String}"
    )
    assert len(exp) == 1 and exp[0]["MetricName"] == "payload.size"
    assert (exp[0]["Count"], exp[0]["Sum"]) == (1, 1500.0) and sum(exp[0]["PositiveBucketCounts"]) == 1


def test_logs(transport, tenant):
    name, endpoint = transport
    provider = LoggerProvider(resource=_resource(name))
    provider.add_log_record_processor(SimpleLogRecordProcessor(_exporters("logs", name, endpoint, tenant.key, True)))
    logger = provider.get_logger(f"test.sdk.{name}")
    with TracerProvider().get_tracer("t").start_as_current_span("work") as span:
        logger.emit(
            body="payment declined for order 42",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"order.id": 42},
        )
    provider.shutdown()

    rows = tenant.rows(
        "SELECT Body, SeverityText, SeverityNumber, TraceId, SpanId, LogAttributes, ServiceName, ScopeName,"
        " toUnixTimestamp64Nano(Timestamp) AS Ns FROM otel_logs WHERE TenantId = {tenant_id:String}"
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["Body"] == "payment declined for order 42"
    assert (row["SeverityText"], row["SeverityNumber"]) == ("WARN", 13)
    assert row["TraceId"] == f"{span.context.trace_id:032x}" and row["SpanId"] == f"{span.context.span_id:016x}"
    assert row["LogAttributes"]["order.id"] == "42"
    assert row["ServiceName"] == f"checkout-{name}" and row["ScopeName"] == f"test.sdk.{name}"
    assert row["Ns"] > 0


def test_unknown_key_is_refused_by_sdk_exporter(transport, tenant):
    name, endpoint = transport
    exporter = _exporters("traces", name, endpoint, "otlpgw_" + "0" * 36, compression=False)
    provider = TracerProvider(resource=_resource(name))
    with provider.get_tracer("t").start_as_current_span("refused") as span:
        pass
    assert exporter.export([span]) == SpanExportResult.FAILURE
    provider.shutdown()
    assert tenant.count("otel_traces") == 0


def test_summary_points(transport, tenant, grpc_channel):
    """The Python SDK has no Summary instrument, so this kind is sent hand-built on each transport."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from tests.clients import grpc_export, http_post
    from tests.otlp_requests import NOW_NS, kv

    name, endpoint = transport
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(kv("service.name", "summary-svc"))
    metric = resource_metrics.scope_metrics.add().metrics.add(name="rpc.duration", unit="s")
    point = metric.summary.data_points.add(time_unix_nano=NOW_NS, count=10, sum=2.5)
    point.quantile_values.add(quantile=0.5, value=0.2)
    point.quantile_values.add(quantile=1.0, value=0.9)
    body = request.SerializeToString()
    if name == "grpc":
        grpc_export(grpc_channel, "metrics", body, key=tenant.key)
    else:
        assert http_post(endpoint, "metrics", body, key=tenant.key).status == 200
    rows = tenant.rows(
        "SELECT MetricName, MetricUnit, Count, Sum, ValueAtQuantiles.Quantile AS Q, ValueAtQuantiles.Value AS V,"
        " ServiceName FROM otel_metrics_summary WHERE TenantId = {tenant_id:String}"
    )
    assert rows == [
        {
            "MetricName": "rpc.duration",
            "MetricUnit": "s",
            "Count": 10,
            "Sum": 2.5,
            "Q": [0.5, 1.0],
            "V": [0.2, 0.9],
            "ServiceName": "summary-svc",
        }
    ]
