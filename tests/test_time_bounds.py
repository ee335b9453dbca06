"""Items the tenant's tables would never show are not acknowledged: older than its retention, or
further in the future than the grace, each is rejected in partial_success with the reason and
metered as rejected, over both transports."""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from gateway.otlp import runtime
from storage.flatten.common import TimeWindow
from storage.flatten.logs import flatten_logs
from storage.flatten.metrics import flatten_metrics
from storage.flatten.traces import flatten_traces
from tests import otlp_requests
from tests.clients import grpc_export, http_post

DAY_NS = 86_400 * 10**9
NOW = 1_800_000_000 * 10**9  # an injected "now" for the flatteners: 2027-01-15
WINDOW = TimeWindow.at(NOW, retention_days=30, future_grace_seconds=600)


def _stamp_traces(request, stamps):
    for span, stamp in zip(request.resource_spans[0].scope_spans[0].spans, stamps):
        span.start_time_unix_nano, span.end_time_unix_nano = stamp, stamp + 1000
    return request


def test_traces_outside_the_window_are_rejected_by_item():
    stamps = [NOW - 31 * DAY_NS, NOW - 29 * DAY_NS, NOW + 9 * 60 * 10**9, NOW + 11 * 60 * 10**9]
    request = _stamp_traces(otlp_requests.traces_request(4), stamps)
    flat = flatten_traces(request, tenant_id="t", retention_days=30, window=WINDOW)
    assert (flat.accepted, flat.rejected) == (2, 2)
    assert "older than the tenant's retention of 30 days" in flat.rejection_message
    assert "more than 10 minutes in the future" in flat.rejection_message
    assert "check the sender's clock" in flat.rejection_message


def test_logs_are_judged_by_the_time_they_are_stored_under():
    request = otlp_requests.logs_request(3)
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].time_unix_nano = NOW - 40 * DAY_NS
    records[1].time_unix_nano, records[1].observed_time_unix_nano = 0, NOW - DAY_NS  # observed stands in
    records[2].time_unix_nano = NOW + DAY_NS
    flat = flatten_logs(request, tenant_id="t", retention_days=30, window=WINDOW)
    assert (flat.accepted, flat.rejected) == (1, 2)


def test_metric_points_outside_the_window_are_rejected():
    request = otlp_requests.gauge_request(3)
    points = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    points[0].time_unix_nano = NOW - 365 * DAY_NS
    points[1].time_unix_nano = NOW
    points[2].time_unix_nano = NOW + 3600 * 10**9
    flat = flatten_metrics(request, tenant_id="t", retention_days=30, window=WINDOW)
    assert (flat.accepted, flat.rejected) == (1, 2)
    assert "data point: timestamp 2026-01-15" in flat.rejection_message


def test_an_all_zero_trace_id_on_a_log_record_means_none():
    request = otlp_requests.logs_request(1)
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.trace_id, record.span_id = bytes(16), bytes(8)
    flat = flatten_logs(request, tenant_id="t", retention_days=30)
    assert (flat.accepted, flat.rejected) == (1, 0)
    columns = dict(zip(flat.batches[0].column_names, flat.batches[0].columns))
    assert columns["TraceId"] == [""] and columns["SpanId"] == [""]


@pytest.mark.django_db(transaction=True)
def test_old_and_future_items_are_not_acknowledged_on_either_transport(tenant, http_url, grpc_channel):
    now = time.time_ns()
    old, future = now - 31 * DAY_NS, now + 3600 * 10**9  # the default retention is 30 days
    traces = _stamp_traces(otlp_requests.traces_request(3), [old, now, future]).SerializeToString()
    reply = http_post(http_url, "traces", traces, key=tenant.key)
    assert reply.status == 200
    partial = ExportTraceServiceResponse.FromString(reply.body).partial_success
    assert partial.rejected_spans == 2 and "retention" in partial.error_message and "future" in partial.error_message
    # The same spans in another trace: another request (the same body again would be stored once).
    other = _stamp_traces(otlp_requests.traces_request(3, trace_id=b"\x09" * 16), [old, now, future])
    response = ExportTraceServiceResponse.FromString(
        grpc_export(grpc_channel, "traces", other.SerializeToString(), key=tenant.key)
    )
    assert response.partial_success.rejected_spans == 2

    logs = otlp_requests.logs_request(2)
    logs.resource_logs[0].scope_logs[0].log_records[0].time_unix_nano = old
    reply = http_post(http_url, "logs", logs.SerializeToString(), key=tenant.key)
    assert ExportLogsServiceResponse.FromString(reply.body).partial_success.rejected_log_records == 1
    metrics = otlp_requests.gauge_request(2)
    metrics.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[1].time_unix_nano = future
    response = ExportMetricsServiceResponse.FromString(
        grpc_export(grpc_channel, "metrics", metrics.SerializeToString(), key=tenant.key)
    )
    assert response.partial_success.rejected_data_points == 1

    assert tenant.count("otel_traces") == 2 and tenant.count("otel_logs") == 1
    assert tenant.count("otel_metrics_gauge") == 1
    assert runtime.get_pipeline().batcher.drain(30)
    usage = {
        (r["Signal"], r["Outcome"]): (r["Items"], r["ItemsAccepted"])
        for r in tenant.rows(
            "SELECT Signal, Outcome, sum(Items) AS Items, sum(ItemsAccepted) AS ItemsAccepted FROM gateway_usage "
            "WHERE TenantId = {tenant_id:String} GROUP BY Signal, Outcome"
        )
    }
    assert usage == {
        ("traces", "partially_accepted"): (6, 2),
        ("logs", "partially_accepted"): (2, 1),
        ("metrics", "partially_accepted"): (2, 1),
    }
