"""OTLP/gRPC admits a call before it reads the call's message: key-less and malformed keys are
refused at once, calls over the in-flight cap get RESOURCE_EXHAUSTED with RetryInfo, and under
a flood of concurrent calls on one channel every call is either stored and metered or told to
retry; none is lost.

A call refused before its message is read is answered while the client may still be sending
it; now and then the client then sees CANCELLED rather than the status (grpc core resets the
stream). OTLP exporters retry CANCELLED, as they retry RESOURCE_EXHAUSTED with RetryInfo."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from django.conf import settings

from gateway.otlp import runtime
from gateway.otlp.grpc_server import build_server
from tests import otlp_requests
from tests.clients import SERVICE, grpc_export, retry_info

pytestmark = pytest.mark.django_db(transaction=True)
BIG = b"\x0a" + b"\xff" * (settings.GATEWAY_MAX_REQUEST_BYTES - 100)  # ~4 MiB, never parsed
SMALL = otlp_requests.traces_request(2).SerializeToString()


def _small(n: int) -> bytes:
    """A request like SMALL, the n-th of distinct ones (each its own trace): the gateway stores a
    request sent again only once, and these calls are meant as different requests."""
    return otlp_requests.traces_request(2, trace_id=(n + 1).to_bytes(16, "big")).SerializeToString()


def _unknown_tenant_usage(store) -> tuple[int, int]:
    assert runtime.get_pipeline().batcher.drain(30)
    (row,) = store.dangerously_query_unscoped(
        "SELECT count(), sum(Requests) FROM gateway_usage WHERE TenantId = '' AND Outcome = 'unauthorized'",
        reason="test",
    ).result_rows
    return row[0], row[1] or 0


def test_a_flood_within_the_cap_is_stored_whole(grpc_channel, tenant):
    """1,000 concurrent calls on one channel, under the default cap of 1,024: all stored (of
    2,000, 2-12% ended CANCELLED before the gateway read messages in its handlers)."""
    call = grpc_channel.unary_unary(SERVICE["traces"], request_serializer=None, response_deserializer=None)
    metadata = [("authorization", f"Bearer {tenant.key}")]
    futures = [call.future(_small(n), metadata=metadata, timeout=120) for n in range(1000)]
    for future in futures:
        future.result()
    assert tenant.count("otel_traces") == 2000


def test_calls_without_a_usable_key_are_refused_before_their_message(grpc_channel, store, tenant):
    before = _unknown_tenant_usage(store)[1]
    with ThreadPoolExecutor(16) as pool:
        errors = list(pool.map(lambda n: _refused(grpc_channel, BIG, None if n % 2 else "otlpgw_not-a-key"), range(40)))
    assert {e.code() for e in errors} == {grpc.StatusCode.UNAUTHENTICATED}
    assert sum("missing API key" in e.details() for e in errors) == 20
    assert sum("not a key issued by this gateway" in e.details() for e in errors) == 20
    assert all(retry_info(e) is None for e in errors)
    assert _unknown_tenant_usage(store)[1] - before == 40  # each metered once, to no tenant
    grpc_export(grpc_channel, "traces", SMALL, key=tenant.key)  # and the server is fine
    assert tenant.count("otel_traces") == 2


def _refused(channel, body: bytes, key: str | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(channel, "traces", body, key=key)
    return caught.value


@pytest.fixture
def small_server(pipeline):
    server, port = build_server(
        runtime.get_pipeline,
        address="127.0.0.1:0",
        max_message_bytes=settings.GATEWAY_MAX_REQUEST_BYTES,
        threads=4,
        max_in_flight=2,
    )
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, channel
    channel.close()
    server.stop(grace=None)


def test_calls_over_the_in_flight_cap_get_retry_info(small_server, tenant):
    server, channel = small_server
    release = threading.Event()

    def held_message(n: int):
        release.wait(30)  # admitted and authenticated; its message comes only when released
        yield _small(n)

    call = channel.stream_unary(SERVICE["traces"], request_serializer=None, response_deserializer=None)
    metadata = [("authorization", f"Bearer {tenant.key}")]
    held = [call.future(held_message(n), metadata=metadata, timeout=60) for n in range(2)]
    deadline = time.monotonic() + 30
    while server.otlp_admission.in_flight < 2 and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert server.otlp_admission.in_flight == 2
    error = _refused(channel, _small(2), tenant.key)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "export calls in flight" in error.details()
    assert retry_info(error).retry_delay.seconds == 1
    release.set()
    for future in held:
        future.result()
    assert server.otlp_admission.in_flight == 0
    grpc_export(channel, "traces", _small(3), key=tenant.key)
    assert tenant.count("otel_traces") == 6


def test_a_flood_on_one_channel_is_stored_or_refused_with_retry_info_never_lost(small_server, tenant):
    """600 concurrent calls against a cap of 2: acknowledged = stored = metered, and every
    other call was told to retry."""
    _server, channel = small_server
    call = channel.unary_unary(SERVICE["traces"], request_serializer=None, response_deserializer=None)
    metadata = [("authorization", f"Bearer {tenant.key}")]
    futures = [call.future(_small(n), metadata=metadata, timeout=120) for n in range(600)]
    ok, retry = 0, 0
    for future in futures:
        try:
            future.result()
            ok += 1
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:  # see the module's docstring
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
                assert retry_info(error) is not None
            retry += 1
    assert ok > 0 and ok + retry == 600
    assert tenant.count("otel_traces") == 2 * ok
    assert runtime.get_pipeline().batcher.drain(30)
    accepted = tenant.rows(
        "SELECT sum(ItemsAccepted) AS items, sum(Requests) AS requests FROM gateway_usage "
        "WHERE TenantId = {tenant_id:String} AND Outcome = 'accepted'"
    )
    assert accepted == [{"items": 2 * ok, "requests": ok}]
