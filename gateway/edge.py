"""The HTTP edge: an asyncio HTTP/1.1 server (h11) in front of the WSGI application, run by
gunicorn as the worker class `gateway.edge.EdgeWorker`.

gunicorn's thread worker gives each connection a thread as soon as its first byte arrives, so
a few clients sending headers a byte a second hold every thread and nothing else is served.
Here the event loop reads a request's head and its whole body (chunked or not) under deadlines
and size limits, and only a complete request takes one of the application's threads. Slow,
idle and oversized clients cost a coroutine and a buffer, never a thread. docs/OPERATIONS.md
says why this and not another worker.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

import h11

log = logging.getLogger("gateway.edge")

# Requests whose body is over the limit still reach these paths (without the body), so the OTLP
# receiver can answer in the request's content type and meter the refusal to the tenant.
OTLP_PATH_PREFIX = "/v1/"
BODY_TOO_LARGE = "gateway.body_too_large"
PEER_CERTIFICATE = "gateway.peer_certificate_der"
_RESPONSE_CHUNK = 256 * 1024
LINGER_SECONDS = 5.0
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class EdgeLimits:
    max_body_bytes: int
    header_timeout: float = 10.0  # from a request's first byte to the end of its head
    body_timeout: float = 60.0  # from the end of the head to the end of the body
    idle_timeout: float = 30.0  # a kept-alive connection with no request in progress
    write_timeout: float = 60.0  # a reply the client does not read
    max_connections: int = 1000
    max_requests_per_connection: int = 1000
    max_header_bytes: int = 64 * 1024


class _Refused(Exception):
    """Answer with `status` and `message`, then close the connection. `reason` names it for the
    gateway's metrics."""

    def __init__(self, status: int, message: str, headers: Iterable[tuple[str, str]] = (), *, reason: str):
        super().__init__(message)
        self.status, self.message, self.headers, self.reason = status, message, list(headers), reason


class EdgeServer:
    """Serves `app` (WSGI) on listening sockets. The application runs in `threads` threads;
    everything that waits on a client runs in the event loop."""

    def __init__(
        self,
        app: Callable,
        *,
        limits: EdgeLimits,
        threads: int,
        ssl_context: ssl.SSLContext | None = None,
        multiprocess: bool = False,
        on_refused: Callable[[str], None] | None = None,
    ):
        self.on_refused = on_refused or (lambda reason: None)
        self.app, self.limits, self.ssl_context = app, limits, ssl_context
        self.multiprocess = multiprocess
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="http")
        self.open_connections = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._idle: set[asyncio.Task] = set()
        self._tasks: set[asyncio.Task] = set()
        self.closing = False

    async def start(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            sock.setblocking(False)
            server = await asyncio.start_server(self._on_connection, sock=sock, limit=_READ_SIZE, backlog=2048)
            self._servers.append(server)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle connections, let requests in progress finish for `grace`
        seconds, then close the rest."""
        self.closing = True
        for server in self._servers:
            server.close()
        for task in list(self._idle):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- one connection ---------------------------------------------------------------------
    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        if self.open_connections >= self.limits.max_connections or self.closing:
            self.on_refused("too_many_connections")
            self._tasks.discard(task)
            writer.write(
                _plain_reply(
                    503, "the gateway has too many open connections; retry in a second\n", [("Retry-After", "1")]
                )
            )
            try:
                await self._linger(reader, seconds=1.0)  # so the reply is read, not reset
            finally:
                writer.close()
            return
        self.open_connections += 1
        try:
            if self.ssl_context is not None:
                tls = _TlsStream(reader, writer, self.ssl_context)
                try:
                    await asyncio.wait_for(tls.handshake(), self.limits.header_timeout)
                except (ssl.SSLError, TimeoutError, ConnectionError):
                    self.on_refused("tls_handshake")
                    return  # the client has the TLS alert that says why (a plaintext client, a bad certificate)
                reader = writer = tls  # type: ignore[assignment]
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug here must not take the server down with it
            log.exception("HTTP connection failed")
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            self._idle.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        loop = asyncio.get_running_loop()
        peer = writer.get_extra_info("peername") or ("", 0)
        local = writer.get_extra_info("sockname") or ("", 0)
        ssl_object = writer.get_extra_info("ssl_object")
        peer_der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        for _ in range(self.limits.max_requests_per_connection):
            try:
                request = await self._read_head(connection, reader)
                if request is None:
                    return
                body, too_large = await self._read_body(connection, reader, writer, request)
            except _Refused as refused:
                self.on_refused(refused.reason)
                await self._refuse(connection, writer, refused)
                # A client sending a body that is too large gets time to finish (and read the
                # reply); a slow one gets a second.
                await self._linger(reader, seconds=LINGER_SECONDS if refused.status == 413 else 1.0)
                return
            except h11.RemoteProtocolError as exc:
                self.on_refused("malformed")
                await self._refuse(
                    connection,
                    writer,
                    _Refused(exc.error_status_hint or 400, f"malformed HTTP request: {exc}", reason="malformed"),
                )
                return
            environ = self._environ(request, body, too_large, peer, local, peer_der)
            try:
                await loop.run_in_executor(self.pool, self._call_app, environ, connection, writer, loop)
            except (ConnectionError, TimeoutError):
                return
            except Exception:
                log.exception("the application failed on %s %s", request.method, request.target[:200])
                self.on_refused("internal")
                await self._refuse(
                    connection, writer, _Refused(500, "internal error; it has been logged", reason="internal")
                )
                return
            try:
                await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
            except (ConnectionError, TimeoutError):
                return
            if too_large:
                await self._linger(reader)
                return
            if self.closing or connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()
        return

    async def _next_event(
        self, connection: h11.Connection, reader: asyncio.StreamReader, deadline: float, expect: int = 0
    ):
        """The next h11 event, reading as needed until `deadline`. `expect`: body bytes known to
        be on their way (Content-Length), read in one wait: each wake-up of this coroutine
        waits for the GIL, and a body read 64 KiB at a time paid that a few times over."""
        loop = asyncio.get_running_loop()
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            if expect > 0:
                try:
                    data = await asyncio.wait_for(reader.readexactly(expect), remaining)
                except asyncio.IncompleteReadError as exc:
                    data = exc.partial  # the client closed early: h11 says so next
                expect = 0
            else:
                data = await asyncio.wait_for(reader.read(_READ_SIZE), remaining)
            connection.receive_data(data)

    async def _read_head(self, connection: h11.Connection, reader: asyncio.StreamReader):
        """The next request's head, or None when the client closes or stays idle too long."""
        loop = asyncio.get_running_loop()
        event = connection.next_event()
        if event is h11.NEED_DATA:
            if not connection.trailing_data[0]:
                # Idle until the request's first byte: a kept-alive connection may wait long,
                # and holds nothing but this coroutine meanwhile.
                task = asyncio.current_task()
                self._idle.add(task)
                try:
                    data = await asyncio.wait_for(reader.read(_READ_SIZE), self.limits.idle_timeout)
                except TimeoutError:
                    return None
                finally:
                    self._idle.discard(task)
                if self.closing and not data:
                    return None
                connection.receive_data(data)
            try:
                event = await self._next_event(connection, reader, loop.time() + self.limits.header_timeout)
            except TimeoutError:
                raise _Refused(
                    408, f"request head not received within {self.limits.header_timeout:g}s", reason="head_timeout"
                ) from None
        if isinstance(event, h11.ConnectionClosed):
            return None
        return event

    async def _read_body(
        self,
        connection: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
    ) -> tuple[bytes, bool]:
        """The whole body, or (b"", True) once it grows past the limit."""
        limit = self.limits.max_body_bytes
        path = request.target.split(b"?", 1)[0]
        otlp = path.startswith(OTLP_PATH_PREFIX.encode())
        declared = _header(request, b"content-length")
        if declared is not None and int(declared) > limit:
            if otlp:
                return b"", True
            raise _Refused(413, f"request body over the limit of {limit} bytes", reason="too_large")
        if connection.they_are_waiting_for_100_continue:
            await self._send(connection, writer, [h11.InformationalResponse(status_code=100, headers=[])])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout
        parts, size = [], 0
        declared_length = int(declared) if declared is not None else 0
        while True:
            try:
                # h11 hands over every body byte it holds before it asks for more, so what is
                # still to come is the declared length less what it has handed over.
                event = await self._next_event(connection, reader, deadline, expect=declared_length - size)
            except TimeoutError:
                raise _Refused(
                    408, f"request body not received within {self.limits.body_timeout:g}s", reason="body_timeout"
                ) from None
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    if otlp:
                        return b"", True
                    raise _Refused(413, f"request body over the limit of {limit} bytes", reason="too_large")
                parts.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts), False
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("client closed the connection mid-body")

    def _environ(self, request: h11.Request, body: bytes, too_large: bool, peer, local, peer_der) -> dict:
        target = request.target
        path, _, query = target.partition(b"?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query.decode("latin-1"),
            "SERVER_PROTOCOL": f"HTTP/{request.http_version.decode('ascii')}",
            "SERVER_NAME": str(local[0]),
            "SERVER_PORT": str(local[1]),
            "REMOTE_ADDR": str(peer[0]),
            "REMOTE_PORT": str(peer[1]),
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if self.ssl_context is not None else "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": self.multiprocess,
            "wsgi.run_once": False,
            BODY_TOO_LARGE: too_large,
            PEER_CERTIFICATE: peer_der,
        }
        for name, value in request.headers:
            if b"_" in name:
                # X_Forwarded_Proto would land where X-Forwarded-Proto does (HTTP_X_FORWARDED_PROTO),
                # past a proxy that sets only the latter: dropped, as gunicorn and Django's
                # runserver drop them.
                continue
            key = name.decode("latin-1").upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue  # the body is read whole: its length is known
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        return environ

    # --- in an application thread -------------------------------------------------------------
    def _call_app(
        self, environ: dict, connection: h11.Connection, writer: asyncio.StreamWriter, loop: asyncio.AbstractEventLoop
    ) -> None:
        head: list = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            if exc_info and head and head[0] is True:
                raise exc_info[1].with_traceback(exc_info[2])
            head[:] = [status, headers]
            return lambda data: pending.append(data)  # WSGI's write(): buffered with the body

        pending: list[bytes] = []
        buffered = 0

        def flush(final: bool) -> None:
            nonlocal buffered
            events: list = []
            if head and head[0] is not True:
                status, headers = head
                events.append(
                    h11.Response(
                        status_code=int(status.split(" ", 1)[0]),
                        headers=_reply_headers(headers, closing=self.closing),
                        reason=status.split(" ", 1)[1].encode("latin-1") if " " in status else b"",
                    )
                )
                head[0] = True
            events += [h11.Data(data=bytes(part)) for part in pending if part]
            if final:
                events.append(h11.EndOfMessage())
            pending.clear()
            buffered = 0
            if final:
                # Written by the loop before it sees this call return (both go through its
                # queue, in this order); this thread is free at once, and the loop waits for
                # the client to take the reply before reading its next request.
                loop.call_soon_threadsafe(self._write_now, connection, writer, events)
            else:  # a large reply: wait for the client, part by part
                asyncio.run_coroutine_threadsafe(self._send(connection, writer, events), loop).result(
                    self.limits.write_timeout + 5
                )

        result = self.app(environ, start_response)
        try:
            for part in result:
                if part:
                    pending.append(part)
                    buffered += len(part)
                    if buffered >= _RESPONSE_CHUNK:
                        flush(final=False)
            flush(final=True)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    # --- writing ------------------------------------------------------------------------------
    def _write_now(self, connection: h11.Connection, writer: asyncio.StreamWriter, events: list) -> None:
        try:
            for event in events:
                data = connection.send(event)
                if data:
                    writer.write(data)
        except (h11.LocalProtocolError, ConnectionError, RuntimeError) as exc:
            log.debug("reply not written: %s", exc)  # the client went away; _serve closes

    async def _send(self, connection: h11.Connection, writer: asyncio.StreamWriter, events: list) -> None:
        for event in events:
            data = connection.send(event)
            if data:
                writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.write_timeout)

    async def _linger(self, reader: asyncio.StreamReader, seconds: float = LINGER_SECONDS) -> None:
        """Before closing on a client that is still sending (a body refused as too large), read
        and drop what it sends for a while: closing at once would reset the connection, and the
        client would see that instead of the reply."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        dropped = 0
        while dropped < 4 * self.limits.max_body_bytes:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                data = await asyncio.wait_for(reader.read(1 << 20), remaining)
            except (TimeoutError, ConnectionError):
                return
            if not data:
                return
            dropped += len(data)

    async def _refuse(self, connection: h11.Connection, writer: asyncio.StreamWriter, refused: _Refused) -> None:
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = refused.message.encode() + b"\n"
        try:
            await self._send(
                connection,
                writer,
                [
                    h11.Response(
                        status_code=refused.status,
                        headers=[
                            ("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))),
                            ("Connection", "close"),
                            *refused.headers,
                        ],
                    ),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                ],
            )
        except (h11.LocalProtocolError, TimeoutError, ConnectionError):
            pass


class _TlsStream:
    """TLS over a connection's streams through memory BIOs: the reader and writer the edge uses.
    asyncio's own TLS transport drops the alert of a failed handshake (closing at once), so a
    client with an expired or unknown certificate would see a bare disconnect; here the alert
    is sent first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext):
        self._reader, self._writer = reader, writer
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._writer.write(data)

    async def _fill(self) -> bool:
        data = await self._reader.read(_READ_SIZE)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.ssl_object.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._fill():
                    raise ConnectionResetError("client closed the connection during the TLS handshake") from None
                continue
            except ssl.SSLError:
                self._flush()  # the alert that names the cause
                await asyncio.wait_for(self._writer.drain(), 5)
                raise
            self._flush()
            return

    async def read(self, size: int) -> bytes:
        while True:
            try:
                data = self.ssl_object.read(size)
            except ssl.SSLWantReadError:
                self._flush()
                if not await self._fill():
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            self._flush()  # what reading produced (key updates, session tickets)
            return data

    async def readexactly(self, size: int) -> bytes:
        parts, have = [], 0
        while have < size:
            data = await self.read(size - have)
            if not data:
                raise asyncio.IncompleteReadError(b"".join(parts), size)
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        self.ssl_object.write(data)
        self._flush()

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()

    def get_extra_info(self, name: str, default=None):
        if name == "ssl_object":
            return self.ssl_object
        return self._writer.get_extra_info(name, default)


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return value
    return None


def _reply_headers(headers: list[tuple[str, str]], *, closing: bool) -> list[tuple[bytes, bytes]]:
    out = [(name.encode("latin-1"), value.strip().encode("latin-1")) for name, value in headers]
    if closing:
        out.append((b"connection", b"close"))
    return out


def _plain_reply(status: int, message: str, headers: list[tuple[str, str]]) -> bytes:
    """A reply written without h11, to a connection refused before its request is read."""
    body = message.encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def limits_from_settings() -> EdgeLimits:
    from django.conf import settings

    return EdgeLimits(
        max_body_bytes=settings.GATEWAY_MAX_REQUEST_BYTES,
        header_timeout=settings.GATEWAY_HTTP_HEADER_TIMEOUT_SECONDS,
        body_timeout=settings.GATEWAY_HTTP_BODY_TIMEOUT_SECONDS,
        idle_timeout=settings.GATEWAY_HTTP_IDLE_TIMEOUT_SECONDS,
        max_connections=settings.GATEWAY_HTTP_MAX_CONNECTIONS,
        max_requests_per_connection=settings.GATEWAY_HTTP_MAX_REQUESTS_PER_CONNECTION,
    )


class ServerThread:
    """An EdgeServer on its own event loop in a background thread (tests and tools)."""

    def __init__(
        self,
        app: Callable,
        *,
        limits: EdgeLimits,
        threads: int = 8,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        on_refused: Callable[[str], None] | None = None,
    ):
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.server = EdgeServer(app, limits=limits, threads=threads, ssl_context=ssl_context, on_refused=on_refused)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="edge-loop", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start([self.sock]), self.loop).result(10)
        return self

    def stop(self, grace: float = 5) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(grace), self.loop).result(grace + 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


try:  # the gunicorn worker; gunicorn is a dependency, but keep the server importable without it
    from gunicorn.workers.base import Worker as _GunicornWorker
except ImportError:  # pragma: no cover
    _GunicornWorker = object  # type: ignore[assignment,misc]


class EdgeWorker(_GunicornWorker):  # type: ignore[misc,valid-type]
    """gunicorn worker class: EdgeServer on gunicorn's listening sockets, with gunicorn's
    heartbeat, signals and graceful shutdown (`graceful_timeout`)."""

    def run(self) -> None:
        from gunicorn import sock as gunicorn_sock

        context = gunicorn_sock.ssl_context(self.cfg) if self.cfg.is_ssl else None
        if context is not None:
            context.set_alpn_protocols(["http/1.1"])
        from gateway.metrics import edge_refused

        server = EdgeServer(
            self.wsgi,
            limits=limits_from_settings(),
            threads=self.cfg.threads,
            ssl_context=context,
            multiprocess=self.cfg.workers > 1,
            on_refused=edge_refused,
        )
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(server))
        finally:
            loop.close()

    async def _serve(self, server: EdgeServer) -> None:
        await server.start([listener.sock for listener in self.sockets])
        while self.alive:
            self.notify()
            if self.ppid != __import__("os").getppid():
                self.log.info("parent changed, shutting down: %s", self)
                break
            await asyncio.sleep(1.0)
        await server.shutdown(self.cfg.graceful_timeout)
