"""Counting items through the skeleton schema finds what a full parse finds, for every signal,
for the metric data oneof, and for damaged bodies the full parse still accepts."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, Sum

from gateway.otlp import decode
from gateway.otlp.count import count_items
from tests import otlp_requests
from vocabulary import Refusal, Signal


def _full_count(signal: Signal, data: bytes) -> int:
    return decode.item_count(signal, decode.parse(signal, data, decode.Encoding.PROTOBUF))


def _metrics() -> bytes:
    request = decode.parse(Signal.METRICS, otlp_requests.dumps(otlp_requests.metrics_json()), decode.Encoding.JSON)
    return request.SerializeToString()


def _bodies() -> dict[Signal, bytes]:
    return {
        Signal.TRACES: otlp_requests.traces_request(37).SerializeToString(),
        Signal.LOGS: otlp_requests.logs_request(11).SerializeToString(),
        Signal.METRICS: _metrics(),
    }


@pytest.mark.parametrize("signal", list(Signal))
def test_counts_what_a_full_parse_counts(signal):
    body = _bodies()[signal]
    assert count_items(signal, body) == _full_count(signal, body) > 0


def test_a_metric_with_two_kinds_on_the_wire_counts_the_last_as_protobuf_does():
    gauge = Metric(name="m", gauge=Gauge(data_points=[NumberDataPoint(as_int=1)] * 3)).SerializeToString()
    total = Metric(name="m", sum=Sum(data_points=[NumberDataPoint(as_int=1)] * 2)).SerializeToString()
    request = decode.parse(Signal.METRICS, _metrics(), decode.Encoding.PROTOBUF)
    scope = request.resource_metrics[0].scope_metrics[0]
    del scope.metrics[:]
    scope.metrics.add().MergeFromString(gauge + total)  # one message holding both: the sum wins
    body = request.SerializeToString()
    assert count_items(Signal.METRICS, body) == _full_count(Signal.METRICS, body) == 2


def test_a_body_that_is_not_protobuf_is_refused():
    with pytest.raises(Refusal, match="not a valid ExportTraceServiceRequest protobuf"):
        count_items(Signal.TRACES, b"\xff\xff\xff\xff not protobuf")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signal=st.sampled_from(list(Signal)), data=st.data())
def test_damaged_bodies_a_full_parse_accepts_count_the_same(signal, data):
    body = bytearray(_bodies()[signal])
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    body = bytes(body[: data.draw(st.integers(1, len(body)))])
    try:
        expected = _full_count(signal, body)
    except Refusal:
        return  # refused by the full parse; the skeleton may accept it, and prepare refuses it
    assert count_items(signal, body) == expected
