"""Seeded, bounded fuzzing of both transports with hypothesis: mutated and made-up protobuf
bodies, and OTLP-shaped JSON with hostile values. No input may make a 500 (or INTERNAL); every
reply is a valid OTLP reply; and what was acknowledged is what was stored is what was metered."""

from __future__ import annotations

import json
import os

import grpc
import pytest
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.otlp import runtime
from gateway.otlp.decode import RESPONSE_TYPES
from storage.flatten import TABLES
from tests import otlp_requests
from tests.clients import grpc_export, http_post
from vocabulary import Signal

pytestmark = pytest.mark.django_db(transaction=True)

# FUZZ_EXAMPLES=5000 FUZZ_SEEDED=0 ./dev test tests/test_fuzz.py: a longer, unseeded run by hand.
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "80")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_SEEDED", "1") == "1",
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SEEDS = {
    "traces": otlp_requests.traces_request(3).SerializeToString(),
    "metrics": otlp_requests.gauge_request(3).SerializeToString(),
    "logs": otlp_requests.logs_request(3).SerializeToString(),
}
SIGNALS = st.sampled_from(sorted(SEEDS))


@st.composite
def protobuf_bodies(draw):
    signal = draw(SIGNALS)
    body = bytearray(SEEDS[signal])
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "random"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if kind == "flip" and body:
            body[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and body:
            del body[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del body[at:]
        elif kind == "random":
            body = bytearray(draw(st.binary(max_size=200)))
    return signal, bytes(body)


_KEYS = [
    "resourceSpans",
    "resourceMetrics",
    "resourceLogs",
    "resource",
    "attributes",
    "scopeSpans",
    "scopeMetrics",
    "scopeLogs",
    "spans",
    "metrics",
    "logRecords",
    "traceId",
    "spanId",
    "name",
    "kind",
    "startTimeUnixNano",
    "timeUnixNano",
    "value",
    "stringValue",
    "intValue",
    "kvlistValue",
    "arrayValue",
    "values",
    "key",
    "gauge",
    "sum",
    "dataPoints",
    "asDouble",
    "body",
    "severityNumber",
    "\ud800",
    "",
    "x",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "zz", "\ud800", "1e999", "-1", str(2**64), ""]
    ),
    st.text(max_size=20),
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.sampled_from(_KEYS), children, max_size=5)
    ),
    max_leaves=40,
)


def _dumps(document) -> bytes:
    # allow_nan: NaN and Infinity are not JSON, which is what a hostile sender would send anyway.
    return json.dumps(document, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def json_bodies(draw):
    signal = draw(SIGNALS)
    top = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}[signal]
    document = draw(st.one_of(_JSON, st.dictionaries(st.just(top), _JSON, min_size=1)))
    return signal, _dumps(document)


def _check_http_reply(reply, signal: str, content_type: str) -> None:
    assert reply.status in (200, 400, 413, 415), (reply.status, reply.body[:300])
    assert reply.headers["content-type"] == content_type
    if reply.status == 200:
        response = RESPONSE_TYPES[Signal(signal)]()
        if content_type == "application/json":
            from google.protobuf import json_format

            json_format.Parse(reply.body, response)
        else:
            response.ParseFromString(reply.body)
    else:
        assert reply.status_message().message  # a google.rpc.Status that says why


def _stored_and_metered(tenant) -> tuple[int, int, int]:
    assert runtime.get_pipeline().batcher.drain(30)
    stored = sum(tenant.count(table) for signal in Signal for table in TABLES[signal])
    (usage,) = tenant.rows(
        "SELECT sum(Requests) AS requests, sum(ItemsAccepted) AS accepted FROM gateway_usage "
        "WHERE TenantId = {tenant_id:String}"
    )
    return stored, usage["requests"] or 0, usage["accepted"] or 0


def _distinct(body: bytes, n: int) -> bytes:
    """`body` led by an unknown field (number 15, length-delimited) holding `n`: a parser skips
    it whole, so the body reads as before (valid or not alike), but each send is a distinct
    request; the gateway stores and meters a body it was sent before only once, and the same
    mutation can come up in several examples."""
    tag = n.to_bytes(8, "big")
    return b"\x7a" + bytes([len(tag)]) + tag + body


def test_fuzzed_protobuf_over_http_and_grpc(tenant, http_url, grpc_channel):
    sent = []

    @FUZZ
    @given(protobuf_bodies())
    def check(case):
        signal, body = case
        http_body, grpc_body = _distinct(body, 2 * len(sent)), _distinct(body, 2 * len(sent) + 1)
        _check_http_reply(http_post(http_url, signal, http_body, key=tenant.key), signal, "application/x-protobuf")
        try:
            RESPONSE_TYPES[Signal(signal)].FromString(grpc_export(grpc_channel, signal, grpc_body, key=tenant.key))
        except grpc.RpcError as error:
            assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
                error.code(),
                error.details(),
            )
        except DecodeError:
            pytest.fail("the gateway answered OK with a body that is not an Export*ServiceResponse")
        sent.append(2)

    check()
    stored, requests, accepted = _stored_and_metered(tenant)
    assert requests == sum(sent)  # every request metered once
    assert accepted == stored  # and what was acknowledged is exactly what is stored


def test_fuzzed_json_over_http(tenant, http_url):
    sent = []

    @FUZZ
    @given(json_bodies())
    def check(case):
        signal, body = case
        _check_http_reply(
            http_post(http_url, signal, body, key=tenant.key, content_type="application/json"),
            signal,
            "application/json",
        )
        sent.append(1)

    check()
    stored, requests, accepted = _stored_and_metered(tenant)
    assert requests == len(sent) and accepted == stored


def test_status_bodies_parse(tenant, http_url):
    """The fuzz tests read error bodies as google.rpc.Status; make sure a plain refusal does."""
    reply = http_post(http_url, "traces", b"\xff", key=tenant.key)
    assert reply.status == 400
    assert status_pb2.Status.FromString(reply.body).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
