"""Flattening spans through the raw-attribute view (storage.flatten.raw) stores exactly what
reading the parsed request message by message stores: checked against a plain reference
flattener on random requests with every kind of attribute value, duplicates, long values,
and each reason a span is rejected."""

from __future__ import annotations

import math
import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from storage.flatten import raw
from storage.flatten.common import MAX_TIMESTAMP_NS, TimeWindow, attributes, valid_id
from storage.flatten.traces import COLUMNS, flatten_traces

TENANT = "0b6f6c3e-2f4e-4d8e-9a57-1f0c0d6a9e11"
# The reference below knows nothing of retention: compare over every time DateTime64 holds
# (tests/test_time_bounds.py covers the window).
ANY_TIME = TimeWindow(oldest_ns=1, newest_ns=MAX_TIMESTAMP_NS, retention_days=7, future_grace_seconds=0)


# --- the reference: each field read from the parsed message, as the flattener first did --------
def _reference_problem(span) -> str | None:
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


def _reference(request) -> tuple[list[tuple], list[str]]:
    kinds = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
    codes = ("Unset", "Ok", "Error")
    rows, problems = [], []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                problem = _reference_problem(span)
                if problem:
                    problems.append(problem)
                    continue
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                rows.append(
                    (
                        TENANT,
                        start,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.trace_state,
                        span.name,
                        kinds[span.kind] if 0 <= span.kind < 6 else "Unspecified",
                        resource.get("service.name", ""),
                        resource,
                        scope.name,
                        scope.version,
                        attributes(span.attributes),
                        end - start if end > start else 0,
                        codes[span.status.code] if 0 <= span.status.code < 3 else "Unset",
                        span.status.message,
                        [e.time_unix_nano for e in span.events],
                        [e.name for e in span.events],
                        [attributes(e.attributes) for e in span.events],
                        [link.trace_id.hex() for link in span.links],
                        [link.span_id.hex() for link in span.links],
                        [link.trace_state for link in span.links],
                        [attributes(link.attributes) for link in span.links],
                        7,
                    )
                )
    return rows, problems


def _ordered(value):
    """Maps compared with their order (a Map column keeps it); an Array as a list or a tuple."""
    if isinstance(value, dict):
        return [("dict", k, v) for k, v in value.items()]
    if isinstance(value, (list, tuple)):
        return [_ordered(v) for v in value]
    return value


def assert_same_as_reference(request) -> None:
    rows, problems = _reference(request)
    flat = flatten_traces(request, tenant_id=TENANT, retention_days=7, window=ANY_TIME)
    assert (flat.accepted, flat.rejected) == (len(rows), len(problems))
    assert flat.rejection_examples == problems[:3]
    if not rows:
        assert flat.batches == []
        return
    (batch,) = flat.batches
    assert batch.column_names == COLUMNS
    assert all(type(column) is list for column in batch.columns)
    assert _ordered([list(row) for row in zip(*batch.columns)]) == _ordered([list(row) for row in rows])


# --- random requests ----------------------------------------------------------------------------
KEYS = ["http.method", "http.route", "", "é.clé", "k" * 130, "db.statement", "n", "dup"]


def _any_value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.choice(
        ["string", "string", "string", "long string", "bool", "int", "double", "bytes", "unset", "empty string"]
        + (["array", "kvlist"] if depth < 2 else [])
    )
    if kind == "string":
        return AnyValue(
            string_value=rng.choice(
                ["GET", "/api/v1/orders/{id}", "ünïcødé ✓", "x" * 125, "y" * 126, str(rng.random())]
            )
        )
    if kind == "long string":
        return AnyValue(string_value="z" * rng.choice([127, 128, 129, 300, 511, 512, 513, 5000]))
    if kind == "empty string":
        return AnyValue(string_value="")
    if kind == "bool":
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == "int":
        return AnyValue(int_value=rng.choice([0, -1, 200, 2**63 - 1, -(2**63), rng.randint(-(10**6), 10**6)]))
    if kind == "double":
        return AnyValue(double_value=rng.choice([0.0, -0.0, 0.25, 1e300, math.inf, -math.inf, math.nan, rng.random()]))
    if kind == "bytes":
        return AnyValue(bytes_value=rng.randbytes(rng.randint(0, 40)))
    if kind == "array":
        return AnyValue(array_value=ArrayValue(values=[_any_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]))
    if kind == "kvlist":
        return AnyValue(kvlist_value=KeyValueList(values=_key_values(rng, depth + 1, 3)))
    return AnyValue()


def _key_values(rng: random.Random, depth: int = 0, most: int = 8) -> list[KeyValue]:
    result = []
    for _ in range(rng.randint(0, most)):
        key = rng.choice(KEYS) if rng.random() < 0.7 else f"key.{rng.randint(0, 50)}"
        result.append(KeyValue(key=key) if rng.random() < 0.05 else KeyValue(key=key, value=_any_value(rng, depth)))
    return result


def _random_request(rng: random.Random) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(rng.randint(1, 3)):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(_key_values(rng))
        if rng.random() < 0.7:
            resource_spans.resource.attributes.add(
                key="service.name", value=AnyValue(string_value=rng.choice(["a", "b"]))
            )
        for _ in range(rng.randint(0, 3)):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = rng.choice([("", ""), ("lib", "1.0")])
            for i in range(rng.randint(0, 12)):
                span = scope_spans.spans.add(name=f"span-{i}", trace_state=rng.choice(["", "k=v"]))
                span.trace_id, span.span_id = rng.randbytes(16), rng.randbytes(8)
                span.parent_span_id = rng.choice([b"", rng.randbytes(8)])
                span.start_time_unix_nano = rng.randint(1, 2**62)
                span.end_time_unix_nano = span.start_time_unix_nano + rng.randint(-5, 10**9)
                span.kind = rng.choice([0, 1, 2, 3, 4, 5, 6, 17])
                span.status.code = rng.choice([0, 1, 2, 3])
                span.status.message = rng.choice(["", "boom"])
                span.attributes.extend(_key_values(rng))
                for _ in range(rng.choice([0, 0, 1, 2])):
                    span.events.add(
                        time_unix_nano=span.start_time_unix_nano + 1,
                        name=rng.choice(["e", "exception"]),
                        attributes=_key_values(rng, most=3),
                    )
                for _ in range(rng.choice([0, 0, 0, 1, 2])):
                    span.links.add(
                        trace_id=rng.randbytes(16),
                        span_id=rng.randbytes(8),
                        trace_state=rng.choice(["", "a=b"]),
                        attributes=_key_values(rng, most=3),
                    )
                _break(span, rng.randint(0, 40), rng)  # a span in four gets a fault
    return request


FAULTS = 11


def _break(span, fault: int, rng: random.Random) -> None:
    """Fault number `fault` (< FAULTS) rejects the span; others change nothing."""
    if fault == 0:
        span.trace_id = bytes(16)
    elif fault == 1:
        span.trace_id = rng.randbytes(15)
    elif fault == 2:
        span.span_id = bytes(8)
    elif fault == 3:
        span.span_id = b""
    elif fault == 4:
        span.parent_span_id = rng.randbytes(3)
    elif fault == 5:
        span.start_time_unix_nano = 0
    elif fault == 6:
        span.end_time_unix_nano = 2**64 - 1
    elif fault == 7:
        span.start_time_unix_nano = MAX_TIMESTAMP_NS + 1
    elif fault == 8:
        span.events.add(time_unix_nano=2**63, name="late")
    elif fault == 9:
        span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(7))
    elif fault == 10:
        span.links.add(trace_id=b"", span_id=rng.randbytes(8))


@pytest.mark.parametrize("seed", range(40))
def test_random_requests_store_what_the_reference_stores(seed):
    request = _random_request(random.Random(seed))
    raw._cache.clear()
    assert_same_as_reference(request)  # every attribute decoded
    assert_same_as_reference(request)  # every attribute from the cache


def test_a_full_cache_starts_again(monkeypatch):
    monkeypatch.setattr(raw, "MAX_CACHED_ATTRIBUTES", 5)
    raw._cache.clear()
    for seed in range(5):
        assert_same_as_reference(_random_request(random.Random(seed)))
        assert len(raw._cache) <= 5


def test_long_attributes_are_not_cached():
    raw._cache.clear()
    long_value = KeyValue(key="db.statement", value=AnyValue(string_value="s" * raw.MAX_CACHED_ATTRIBUTE_BYTES))
    short_value = KeyValue(key="db.system", value=AnyValue(string_value="postgresql"))
    assert raw.raw_attributes([long_value.SerializeToString(), short_value.SerializeToString()]) == {
        "db.statement": "s" * raw.MAX_CACHED_ATTRIBUTE_BYTES,
        "db.system": "postgresql",
    }
    assert list(raw._cache) == [short_value.SerializeToString()]


def test_a_later_duplicate_key_wins_in_the_first_place():
    key_values = [
        KeyValue(key="a", value=AnyValue(int_value=1)),
        KeyValue(key="b", value=AnyValue(bool_value=True)),
        KeyValue(key="a", value=AnyValue(string_value="again")),
    ]
    result = raw.raw_attributes([kv.SerializeToString() for kv in key_values])
    assert list(result.items()) == list(attributes(key_values).items()) == [("a", "again"), ("b", "true")]


def test_each_rejection_reason_is_worded_as_before():
    rng = random.Random(7)
    for fault in range(FAULTS):
        request = ExportTraceServiceRequest()
        scope_spans = request.resource_spans.add().scope_spans.add()
        for i in range(2):
            span = scope_spans.spans.add(
                name=f"s{i}",
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                start_time_unix_nano=1,
                end_time_unix_nano=2,
            )
            span.events.add(time_unix_nano=3, name="e")
            span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8))
        _break(scope_spans.spans[0], fault, rng)
        flat = flatten_traces(request, tenant_id=TENANT, retention_days=7, window=ANY_TIME)
        assert (flat.accepted, flat.rejected) == (1, 1)
        assert_same_as_reference(request)


def test_a_request_parsed_as_the_raw_view_flattens_the_same():
    for seed in range(5):
        request = _random_request(random.Random(seed))
        direct = flatten_traces(
            raw.RawTraces.FromString(request.SerializeToString()), tenant_id=TENANT, retention_days=7, window=ANY_TIME
        )
        usual = flatten_traces(request, tenant_id=TENANT, retention_days=7, window=ANY_TIME)
        assert (direct.accepted, direct.rejected, direct.rejection_examples) == (
            usual.accepted,
            usual.rejected,
            usual.rejection_examples,
        )
        assert _ordered([b.columns for b in direct.batches]) == _ordered([b.columns for b in usual.batches])
