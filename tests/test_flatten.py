"""Flattening: attribute values as the Collector's exporter stores them, and which items are
rejected on their own (the rest of the request is kept)."""

from __future__ import annotations

import time
import uuid

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from storage.flatten.common import any_value_str
from storage.flatten.logs import flatten_logs
from storage.flatten.metrics import flatten_metrics
from storage.flatten.traces import flatten_traces
from tests import otlp_requests

TENANT = str(uuid.uuid4())


def _column(batch, name):
    return batch.columns[batch.column_names.index(name)]


def test_any_value_strings():
    assert any_value_str(AnyValue(string_value="x")) == "x"
    assert any_value_str(AnyValue(bool_value=False)) == "false"
    assert any_value_str(AnyValue(int_value=-7)) == "-7"
    assert any_value_str(AnyValue(double_value=2.5)) == "2.5"
    assert any_value_str(AnyValue(bytes_value=b"\x00\x01")) == "AAE="
    assert any_value_str(AnyValue()) == ""
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(
                    key="a",
                    value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="é")])),
                )
            ]
        )
    )
    assert any_value_str(nested) == '{"a":[1,"é"]}'


def test_every_row_carries_the_tenant_and_retention():
    flat = flatten_traces(otlp_requests.traces_request(5), tenant_id=TENANT, retention_days=9)
    (batch,) = flat.batches
    assert _column(batch, "TenantId") == [TENANT] * 5
    assert _column(batch, "RetentionDays") == [9] * 5
    assert all(len(column) == 5 for column in batch.columns)


def test_invalid_spans_are_rejected_alone():
    request = otlp_requests.traces_request(6)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[1].span_id = b"\x01" * 7
    spans[2].parent_span_id = b"\x01" * 3
    spans[3].start_time_unix_nano = 0
    spans[4].end_time_unix_nano = 2**64 - 1
    flat = flatten_traces(request, tenant_id=TENANT, retention_days=1)
    assert (flat.accepted, flat.rejected) == (1, 5)
    assert _column(flat.batches[0], "SpanName") == ["span-5"]
    assert "trace_id must be 16 bytes" in flat.rejection_message
    assert "(and 2 more)" in flat.rejection_message


def test_span_with_end_before_start_has_zero_duration():
    request = otlp_requests.traces_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.end_time_unix_nano = span.start_time_unix_nano - 5
    (batch,) = flatten_traces(request, tenant_id=TENANT, retention_days=1).batches
    assert _column(batch, "Duration") == [0]


def test_log_without_timestamps_gets_the_receive_time():
    request = otlp_requests.logs_request(2)
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].time_unix_nano = 0
    records[1].time_unix_nano = 0
    an_hour_ago = time.time_ns() - 3600 * 10**9
    records[1].observed_time_unix_nano = an_hour_ago
    before = time.time_ns()
    (batch,) = flatten_logs(request, tenant_id=TENANT, retention_days=1).batches
    first, second = _column(batch, "Timestamp")
    assert first >= before
    assert second == an_hour_ago


def test_invalid_log_records_are_rejected_alone():
    request = otlp_requests.logs_request(3)
    records = request.resource_logs[0].scope_logs[0].log_records
    records[0].trace_id = b"\x01" * 8
    records[1].severity_number = 99
    flat = flatten_logs(request, tenant_id=TENANT, retention_days=1)
    assert (flat.accepted, flat.rejected) == (1, 2)


def test_invalid_metric_points_are_rejected_alone():
    request = otlp_requests.gauge_request(3)
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    metric.gauge.data_points[0].time_unix_nano = 0
    unnamed = request.resource_metrics[0].scope_metrics[0].metrics.add()
    unnamed.gauge.data_points.add(time_unix_nano=1, as_int=1)
    bad_histogram = request.resource_metrics[0].scope_metrics[0].metrics.add(name="h")
    bad_histogram.histogram.data_points.add(time_unix_nano=1, bucket_counts=[1], explicit_bounds=[1.0, 2.0])
    request.resource_metrics[0].scope_metrics[0].metrics.add(name="no data")
    flat = flatten_metrics(request, tenant_id=TENANT, retention_days=1)
    assert (flat.accepted, flat.rejected) == (2, 3)
    assert [b.table for b in flat.batches] == ["otel_metrics_gauge"]
