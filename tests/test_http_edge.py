"""The HTTP edge (gateway/edge.py) with real clients: chunked bodies from curl and raw sockets,
multi-member compressed bodies, and clients that are slow, idle, oversized or too many; rows
and usage read back."""

from __future__ import annotations

import gzip
import http.client
import shutil
import socket
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import zstandard
from django.conf import settings
from django.core.wsgi import get_wsgi_application

from gateway.edge import EdgeLimits, ServerThread
from storage.flatten import TABLES
from tests import otlp_requests
from tests.clients import HttpReply, http_post
from vocabulary import Signal

pytestmark = pytest.mark.django_db(transaction=True)


def _request(signal: str, items: int):
    return {
        "traces": otlp_requests.traces_request,
        "metrics": otlp_requests.gauge_request,
        "logs": otlp_requests.logs_request,
    }[signal](items)


def _chunked_post(
    port: int, path: str, body: bytes, *, key: str, content_type: str, headers: dict | None = None, chunk: int = 1000
) -> HttpReply:
    """POST with Transfer-Encoding: chunked and no Content-Length, as Node's exporters send."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    pieces = (body[i : i + chunk] for i in range(0, len(body), chunk))
    connection.request(
        "POST",
        path,
        body=pieces,
        encode_chunked=True,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {key}", **(headers or {})},
    )
    response = connection.getresponse()
    reply = HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    connection.close()
    return reply


def _usage(tenant) -> list[tuple]:
    """The tenant's usage rows, once the batcher has written what was queued (refusals are
    metered without waiting)."""
    from gateway.otlp import runtime

    assert runtime.get_pipeline().batcher.drain(30)
    return [
        (r["Outcome"], r["Items"], r["ItemsAccepted"])
        for r in tenant.rows(
            "SELECT Outcome, sum(Items) AS Items, sum(ItemsAccepted) AS ItemsAccepted FROM gateway_usage "
            "WHERE TenantId = {tenant_id:String} GROUP BY Outcome ORDER BY Outcome"
        )
    ]


@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
@pytest.mark.parametrize("form", ["protobuf", "json", "gzip"])
def test_chunked_bodies_are_read_whole(signal, form, tenant, http_server, http_url):
    if form == "json":
        body = otlp_requests.dumps(getattr(otlp_requests, f"{signal}_json")())
        content_type, headers = "application/json", {}
    else:
        body = _request(signal, 5).SerializeToString()
        content_type, headers = "application/x-protobuf", {}
        if form == "gzip":
            body, headers = gzip.compress(body), {"Content-Encoding": "gzip"}
    reply = _chunked_post(
        http_server.port, f"/v1/{signal}", body, key=tenant.key, content_type=content_type, headers=headers, chunk=7
    )
    assert reply.status == 200, reply.body
    stored = sum(tenant.count(table) for table in TABLES[Signal(signal)])
    expected = 5 if form != "json" else len(otlp_requests.dumps(getattr(otlp_requests, f"{signal}_json")()))
    assert stored == 5 or (form == "json" and 0 < stored < expected)
    assert _usage(tenant) == [("accepted", stored, stored)]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_chunked_and_expect_continue(tenant, http_server, tmp_path):
    small = tmp_path / "spans.pb"
    small.write_bytes(otlp_requests.traces_request(4).SerializeToString())
    # A body over 1 MB makes curl send `Expect: 100-continue` and wait for it.
    big = tmp_path / "big.pb"
    request = otlp_requests.traces_request(6)
    request.resource_spans[0].scope_spans[0].spans[0].attributes.append(otlp_requests.kv("pad", "x" * 1_500_000))
    big.write_bytes(request.SerializeToString())
    for path, extra in ((small, ["-H", "Transfer-Encoding: chunked"]), (big, [])):
        result = subprocess.run(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                *extra,
                "-H",
                f"Authorization: Bearer {tenant.key}",
                "-H",
                "Content-Type: application/x-protobuf",
                "--data-binary",
                f"@{path}",
                f"http://127.0.0.1:{http_server.port}/v1/traces",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout == "200", result.stderr
    assert tenant.count("otel_traces") == 10


def _gzip_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


def _zstd_frames(data: bytes) -> bytes:
    half, compressor = len(data) // 2, zstandard.ZstdCompressor()
    return compressor.compress(data[:half]) + compressor.compress(data[half:])


def _zlib_streams(data: bytes) -> bytes:
    half = len(data) // 2
    return zlib.compress(data[:half]) + zlib.compress(data[half:])


@pytest.mark.parametrize(
    "coding, compress",
    [
        ("gzip", _gzip_members),
        ("zstd", _zstd_frames),
        ("deflate", _zlib_streams),
    ],
    ids=["gzip-members", "zstd-frames", "zlib-streams"],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_every_member_of_a_compressed_body_is_stored(coding, compress, chunked, tenant, http_server, http_url):
    body = compress(otlp_requests.traces_request(10).SerializeToString())
    if chunked:
        reply = _chunked_post(
            http_server.port,
            "/v1/traces",
            body,
            key=tenant.key,
            content_type="application/x-protobuf",
            headers={"Content-Encoding": coding},
        )
    else:
        reply = http_post(http_url, "traces", body, key=tenant.key, headers={"Content-Encoding": coding})
    assert reply.status == 200
    assert tenant.count("otel_traces") == 10
    assert _usage(tenant) == [("accepted", 10, 10)]


@pytest.mark.parametrize(
    "coding, body",
    [
        ("gzip", gzip.compress(b"\x0a\x00") + b"not a member"),
        ("zstd", zstandard.ZstdCompressor().compress(otlp_requests.traces_request(2).SerializeToString())[:-3]),
        ("deflate", zlib.compress(b"x", wbits=-15) + b"trailing"),
    ],
)
def test_a_body_with_a_bad_member_is_refused_whole(coding, body, tenant, http_url):
    reply = http_post(http_url, "traces", body, key=tenant.key, headers={"Content-Encoding": coding})
    assert reply.status == 400
    assert tenant.count("otel_traces") == 0
    assert _usage(tenant) == [("invalid", 0, 0)]


def test_a_chunked_body_over_the_limit_is_refused_and_metered(tenant, http_server):
    body = b"\0" * (settings.GATEWAY_MAX_REQUEST_BYTES + 10)
    reply = _chunked_post(
        http_server.port, "/v1/traces", body, key=tenant.key, content_type="application/x-protobuf", chunk=65536
    )
    assert reply.status == 413
    assert "exceeds the limit" in reply.status_message().message
    assert _usage(tenant) == [("invalid", 0, 0)]


# --- clients that are slow, idle or too many ------------------------------------------------------
def _edge(refusals: list | None = None, **limits) -> ServerThread:
    defaults = dict(
        max_body_bytes=settings.GATEWAY_MAX_REQUEST_BYTES, header_timeout=10, body_timeout=10, idle_timeout=10
    )
    return ServerThread(
        get_wsgi_application(),
        limits=EdgeLimits(**{**defaults, **limits}),
        threads=4,
        on_refused=refusals.append if refusals is not None else None,
    ).start()


def _read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            return data
        data += part


def _slow_socket(port: int, partial: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(partial)
    return sock


HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"


def test_slow_and_idle_clients_do_not_starve_the_others(tenant, http_url):
    """200 sockets stuck in their headers or their body and 50 idle ones, against 4 threads:
    OTLP/HTTP, the console and the health checks are all still served."""
    server = _edge()
    port = server.port
    body = otlp_requests.traces_request(2).SerializeToString()
    held = []
    try:
        held += [_slow_socket(port, HEAD[: 20 + i % 40]) for i in range(100)]
        held += [_slow_socket(port, HEAD + b"Content-Length: 1000\r\n\r\n" + body[:10]) for _ in range(100)]
        held += [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]

        def normal(n: int) -> int:
            if n % 3 == 0:  # each its own trace: distinct requests, each stored (a repeated body is stored once)
                trace = otlp_requests.traces_request(2, trace_id=(n + 1).to_bytes(16, "big")).SerializeToString()
                return http_post(f"http://127.0.0.1:{port}", "traces", trace, key=tenant.key).status
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz" if n % 3 == 1 else "/admin/login/")
            status = connection.getresponse().status
            connection.close()
            return status

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(normal, range(30)))
        assert statuses == [200] * 30
        assert tenant.count("otel_traces") == 20
        assert server.server.open_connections >= 250
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_deadlines_for_the_head_the_body_and_idleness(tenant, http_url):
    refusals = []
    server = _edge(refusals, header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5)
    try:
        slow_head = _slow_socket(server.port, HEAD[:30])
        assert _read_until_closed(slow_head).startswith(b"HTTP/1.1 408 ")
        slow_body = _slow_socket(
            server.port,
            HEAD + f"Authorization: Bearer {tenant.key}\r\n".encode() + b"Content-Length: 100\r\n\r\n" + b"\x0a",
        )
        reply = _read_until_closed(slow_body)
        assert reply.startswith(b"HTTP/1.1 408 ") and b"body not received" in reply
        idle = socket.create_connection(("127.0.0.1", server.port))
        assert _read_until_closed(idle) == b""  # closed without a word
        assert tenant.count("otel_traces") == 0
        assert refusals == ["head_timeout", "body_timeout"]  # what the gateway's metrics count
    finally:
        server.stop()


def test_connections_over_the_cap_are_refused_clearly(http_url):
    refusals = []
    server = _edge(refusals, max_connections=3)
    try:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        for sock in held:  # each is being served (idle) before the next arrives
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        extra = socket.create_connection(("127.0.0.1", server.port))
        reply = _read_until_closed(extra)
        assert reply.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in reply and b"too many open" in reply
        assert refusals == ["too_many_connections"]
        held.pop().close()
        for _ in range(100):  # the server notices the close on its own schedule
            with socket.create_connection(("127.0.0.1", server.port)) as again:
                again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if _read_until_closed(again).startswith(b"HTTP/1.1 200"):
                    break
        else:
            pytest.fail("a freed connection slot was never reused")
        for sock in held:
            sock.close()
    finally:
        server.stop()


def test_keep_alive_serves_several_requests_then_closes(http_url):
    server = _edge(max_requests_per_connection=2)
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3)  # pipelined
        replies = _read_until_closed(sock)
        assert replies.count(b"HTTP/1.1 200") == 2
    finally:
        server.stop()


def test_malformed_requests_get_400(http_url):
    refusals = []
    server = _edge(refusals)
    try:
        for garbage in (b"\x16\x03\x01 not http\r\n\r\n", b"POST /v1/traces HTTP/1.1\r\nContent-Length: x\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(garbage)
                assert _read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
        assert refusals == ["malformed", "malformed"]
    finally:
        server.stop()


def test_a_large_response_is_streamed_whole():
    """Replies larger than one write reach the client whole, in order (the edge sends them in
    parts, waiting for the client to read)."""
    parts = [bytes([n]) * 100_000 for n in range(30)]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter(parts)

    server = ServerThread(app, limits=EdgeLimits(max_body_bytes=1000), threads=1).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/export")
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"".join(parts)
    finally:
        server.stop()


def test_headers_with_underscores_are_dropped():
    """A client's X_Forwarded_Proto must not pass for the proxy's X-Forwarded-Proto."""
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    server = ServerThread(app, limits=EdgeLimits(max_body_bytes=1000), threads=1).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/", headers={"X_Forwarded_Proto": "https", "X-Api-Key": "k"})
        assert connection.getresponse().status == 200
    finally:
        server.stop()
    assert "HTTP_X_FORWARDED_PROTO" not in seen and seen["HTTP_X_API_KEY"] == "k"
