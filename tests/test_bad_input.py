"""Every class of bad input, over both transports: the status, the message, nothing stored,
and a good request succeeding right after."""

from __future__ import annotations

import gzip
import zlib

import grpc
import pytest
import zstandard
from django.conf import settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from gateway.otlp import runtime
from storage.clickhouse import Store
from tests import otlp_requests
from tests.clients import grpc_export, http_post, retry_info

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = otlp_requests.traces_request(3).SerializeToString()
# Another request (the same body again is the same request, stored once: storage.requests).
GOOD_OTHER = otlp_requests.traces_request(3, trace_id=b"\x02" * 16).SerializeToString()


def _not_utf8(where: str) -> bytes:
    """A trace request with one attribute string that is not UTF-8 (protobuf's Python API
    refuses to build one, so a marker of the same length is replaced in the bytes)."""
    request = otlp_requests.traces_request(3)
    span = request.resource_spans[0].scope_spans[0].spans[1]
    marker = "MARKER-NOT-UTF8"
    if where == "span value":
        span.attributes.append(otlp_requests.kv("http.route", marker))
    elif where == "span key":
        span.attributes.append(otlp_requests.kv(marker, "v"))
    elif where == "event value":
        span.events.add(name="e", time_unix_nano=span.start_time_unix_nano).attributes.append(
            otlp_requests.kv("k", marker)
        )
    elif where == "resource value":
        request.resource_spans[0].resource.attributes.append(otlp_requests.kv("host.name", marker))
    body = request.SerializeToString()
    assert body.count(marker.encode()) == 1
    return body.replace(marker.encode(), b"\xff\xfe" + marker.encode()[2:])


NOT_UTF8 = ("span value", "span key", "event value", "resource value")
BOMB = gzip.compress(b"\0" * (settings.GATEWAY_MAX_DECOMPRESSED_BYTES + 1024))


def assert_good_request_works(tenant, http_url, grpc_channel):
    assert http_post(http_url, "traces", GOOD, key=tenant.key).status == 200
    ExportTraceServiceResponse.FromString(grpc_export(grpc_channel, "traces", GOOD_OTHER, key=tenant.key))
    assert tenant.count("otel_traces") == 6


PROTOBUF, JSON = "application/x-protobuf", "application/json"
GOOD_BODY = {PROTOBUF: GOOD, JSON: otlp_requests.dumps(otlp_requests.traces_json())}
LIMIT = settings.GATEWAY_MAX_REQUEST_BYTES
# case: (content types, request given the good body, status, message)
HTTP_CASES = {
    "garbage protobuf": (
        (PROTOBUF,),
        lambda good: dict(body=b"\xff\xff\xff\xff not protobuf"),
        400,
        "not a valid ExportTraceServiceRequest",
    ),
    "truncated protobuf": (
        (PROTOBUF,),
        lambda good: dict(body=good[: len(good) // 2]),
        400,
        "not a valid ExportTraceServiceRequest",
    ),
    **{
        f"attribute {where} not utf-8": (
            (PROTOBUF,),
            lambda good, where=where: dict(body=_not_utf8(where)),
            400,
            "not a valid ExportTraceServiceRequest",
        )
        for where in NOT_UTF8
    },
    "malformed json": ((JSON,), lambda good: dict(body=good[:-7]), 400, "not valid JSON"),
    "json not utf-8": ((JSON,), lambda good: dict(body=b"\xff\xfe{}"), 400, "not valid JSON"),
    "json of wrong shape": ((JSON,), lambda good: dict(body=b'{"resourceSpans": 7}'), 400, "OTLP/JSON"),
    "json bad hex id": (
        (JSON,),
        lambda good: dict(body=good.replace(b"5b8efff7", b"zzzzzzzz")),
        400,
        "not a hex string",
    ),
    "missing key": ((PROTOBUF, JSON), lambda good: dict(body=good, key=None), 401, "missing API key"),
    "unknown key": ((PROTOBUF, JSON), lambda good: dict(body=good, key="otlpgw_" + "A" * 36), 401, "invalid API key"),
    "unsupported content type": (
        (PROTOBUF,),
        lambda good: dict(body=good, content_type="text/plain"),
        415,
        "unsupported Content-Type",
    ),
    "unsupported encoding": (
        (PROTOBUF, JSON),
        lambda good: dict(body=good, headers={"Content-Encoding": "br"}),
        415,
        "unsupported Content-Encoding",
    ),
    "body over limit": ((PROTOBUF, JSON), lambda good: dict(body=good + b" " * LIMIT), 413, "exceeds the limit"),
    "gzip bomb": (
        (PROTOBUF, JSON),
        lambda good: dict(body=BOMB, headers={"Content-Encoding": "gzip"}),
        413,
        "after decompression",
    ),
    "zstd bomb": (
        (PROTOBUF, JSON),
        lambda good: dict(
            body=zstandard.ZstdCompressor().compress(b" " * (settings.GATEWAY_MAX_DECOMPRESSED_BYTES + 1)),
            headers={"Content-Encoding": "zstd"},
        ),
        413,
        "after decompression",
    ),
    "corrupt gzip": (
        (PROTOBUF, JSON),
        lambda good: dict(body=b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}),
        400,
        "not valid gzip",
    ),
    "truncated gzip": (
        (PROTOBUF, JSON),
        lambda good: dict(body=gzip.compress(good)[:-12], headers={"Content-Encoding": "gzip"}),
        400,
        "truncated",
    ),
}
HTTP_PARAMS = [(case, ct) for case, (types, *_rest) in HTTP_CASES.items() for ct in types]


@pytest.mark.parametrize("case, content_type", HTTP_PARAMS, ids=[f"{c}-{t.split('/')[1]}" for c, t in HTTP_PARAMS])
def test_http_bad_input(case, content_type, tenant, http_url, grpc_channel):
    _types, build, status, message = HTTP_CASES[case]
    request = build(GOOD_BODY[content_type])
    key = request.pop("key", tenant.key)
    content_type = request.pop("content_type", content_type)
    reply = http_post(http_url, "traces", request.pop("body"), key=key, content_type=content_type, **request)
    assert reply.status == status
    # The error comes back in the request's content type (protobuf when that is what is wrong).
    assert reply.headers["content-type"] == (content_type if status != 415 or "Encoding" in message else PROTOBUF)
    error = reply.status_message()
    assert message in error.message
    assert error.code != 0
    assert "retry-after" not in reply.headers
    assert tenant.count("otel_traces") == 0
    assert_good_request_works(tenant, http_url, grpc_channel)


GRPC_CASES = {
    "garbage protobuf": (dict(body=b"\xff\xff\xff\xff not protobuf"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid"),
    "truncated protobuf": (dict(body=GOOD[: len(GOOD) // 2]), grpc.StatusCode.INVALID_ARGUMENT, "not a valid"),
    **{
        f"attribute {where} not utf-8": (
            dict(body=_not_utf8(where)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a valid ExportTraceServiceRequest",
        )
        for where in NOT_UTF8
    },
    "missing key": (dict(body=GOOD, key=None), grpc.StatusCode.UNAUTHENTICATED, "missing API key"),
    "unknown key": (dict(body=GOOD, key="otlpgw_" + "A" * 36), grpc.StatusCode.UNAUTHENTICATED, "invalid API key"),
    "message over limit": (
        dict(body=b"\0" * (settings.GATEWAY_MAX_REQUEST_BYTES + 1)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
    "gzip bomb": (
        dict(body=b"\0" * (settings.GATEWAY_MAX_DECOMPRESSED_BYTES + 1024), compression=grpc.Compression.Gzip),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_bad_input(case, tenant, http_url, grpc_channel):
    kwargs, code, message = GRPC_CASES[case]
    kwargs = dict(kwargs)
    key = kwargs.pop("key", tenant.key)
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", kwargs.pop("body"), key=key, **kwargs)
    assert caught.value.code() == code
    assert message in caught.value.details()
    assert retry_info(caught.value) is None
    assert tenant.count("otel_traces") == 0
    assert_good_request_works(tenant, http_url, grpc_channel)


def test_x_api_key_header_and_metadata(tenant, http_url, grpc_channel):
    assert http_post(http_url, "traces", GOOD, key=None, headers={"x-api-key": tenant.key}).status == 200
    grpc_export(grpc_channel, "traces", GOOD_OTHER, key=None, metadata=[("x-api-key", tenant.key)])
    assert tenant.count("otel_traces") == 6


@pytest.mark.parametrize(
    "coding, compress",
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("zstd", zstandard.ZstdCompressor().compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),
    ],
    ids=["gzip", "deflate", "zstd", "raw-deflate"],
)
def test_http_compressed_bodies(coding, compress, tenant, http_url):
    reply = http_post(http_url, "traces", compress(GOOD), key=tenant.key, headers={"Content-Encoding": coding})
    assert reply.status == 200
    assert tenant.count("otel_traces") == 3


def test_key_scope_is_enforced(tenant, http_url, grpc_channel):
    from tenants.audit import Actor
    from tenants.services import issue_key

    logs_only = issue_key(actor=Actor.system("tests"), tenant=tenant.tenant, name="logs", scopes=["logs"]).secret
    reply = http_post(http_url, "traces", GOOD, key=logs_only)
    assert reply.status == 403 and "may not write traces" in reply.status_message().message
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", GOOD, key=logs_only)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert http_post(http_url, "logs", otlp_requests.logs_request(1).SerializeToString(), key=logs_only).status == 200
    assert tenant.count("otel_traces") == 0 and tenant.count("otel_logs") == 1


def test_http_get_is_405(tenant, http_url):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{http_url}/v1/traces")
    assert caught.value.code == 405


def test_partial_success_drops_only_invalid_items(tenant, http_url, grpc_channel):
    request = otlp_requests.traces_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = b"\x01" * 15  # not 16 bytes
    reply = http_post(http_url, "traces", request.SerializeToString(), key=tenant.key)
    assert reply.status == 200
    partial = ExportTraceServiceResponse.FromString(reply.body).partial_success
    assert partial.rejected_spans == 1 and "trace_id must be 16 bytes" in partial.error_message
    # The same request again (its reply was lost): the same reply, nothing stored twice.
    response = ExportTraceServiceResponse.FromString(
        grpc_export(grpc_channel, "traces", request.SerializeToString(), key=tenant.key)
    )
    assert response.partial_success.rejected_spans == 1
    names = [
        r["SpanName"]
        for r in tenant.rows("SELECT SpanName FROM otel_traces WHERE TenantId = {tenant_id:String} ORDER BY SpanName")
    ]
    assert names == ["span-0", "span-2"]


def test_partial_success_json_reply(tenant, http_url):
    document = otlp_requests.traces_json()
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "abcd"
    reply = http_post(
        http_url, "traces", otlp_requests.dumps(document), key=tenant.key, content_type="application/json"
    )
    assert reply.status == 200
    import json

    body = json.loads(reply.body)
    assert body["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert "span_id must be 8 bytes" in body["partialSuccess"]["errorMessage"]
    assert tenant.count("otel_traces") == 0


@pytest.fixture
def storage_down(pipeline):
    """ClickHouse unreachable: the process's pipeline writes to a server that is not there."""
    dead = runtime.build_pipeline(store=Store("http://127.0.0.1:9/default"), migrate=False)
    previous = runtime.install_pipeline(dead)
    yield
    runtime.install_pipeline(previous)
    dead.stop()


def test_storage_unavailable(tenant, http_url, grpc_channel, storage_down):
    reply = http_post(http_url, "traces", GOOD, key=tenant.key)
    assert reply.status == 503
    assert reply.headers["retry-after"] == str(settings.GATEWAY_RETRY_AFTER_SECONDS)
    assert "nothing from this request was stored" in reply.status_message().message
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", GOOD, key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert retry_info(caught.value).retry_delay.seconds == settings.GATEWAY_RETRY_AFTER_SECONDS
    assert tenant.count("otel_traces") == 0


def test_the_same_pipeline_recovers_from_an_outage(tenant, http_url, grpc_channel, store, pipeline):
    """The process's own pipeline loses its table, then gets it back: while it is gone every
    request is refused for a retry and nothing is stored; once back, the exporters' retries of
    the same request store it once."""
    store.command("DETACH TABLE otel_traces")
    try:
        reply = http_post(http_url, "traces", GOOD, key=tenant.key)
        assert reply.status == 503 and "nothing from this request was stored" in reply.status_message().message
        assert reply.headers["retry-after"] == str(settings.GATEWAY_RETRY_AFTER_SECONDS)
        with pytest.raises(grpc.RpcError) as caught:
            grpc_export(grpc_channel, "traces", GOOD, key=tenant.key)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and retry_info(caught.value) is not None
    finally:
        store.command("ATTACH TABLE otel_traces")
    assert tenant.count("otel_traces") == 0
    assert http_post(http_url, "traces", GOOD, key=tenant.key).status == 200  # the exporters' retries
    ExportTraceServiceResponse.FromString(grpc_export(grpc_channel, "traces", GOOD, key=tenant.key))
    assert tenant.count("otel_traces") == 3
    # Metered as what happened: two refusals with nothing accepted, then the request, once.
    assert pipeline.batcher.drain(30)
    usage = tenant.rows(
        "SELECT Outcome, sum(Requests) AS requests, sum(ItemsAccepted) AS accepted FROM gateway_usage "
        "WHERE TenantId = {tenant_id:String} GROUP BY Outcome ORDER BY Outcome"
    )
    assert usage == [
        {"Outcome": "accepted", "requests": 1, "accepted": 3},
        {"Outcome": "storage_unavailable", "requests": 2, "accepted": 0},
    ]
