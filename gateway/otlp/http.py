"""OTLP/HTTP receivers: POST /v1/traces, /v1/metrics, /v1/logs. Transport only."""
from __future__ import annotations

import logging
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from billing.outcomes import Signal
from gateway.metrics import Transport, record_export
from gateway.otlp import cors, replies, runtime
from gateway.otlp.decode import Encoding, encoding_for
from gateway.otlp.errors import IngestError, Reason
from gateway.tls import wsgi_peer_certificate_sha256
from storage.clickhouse import StorageUnavailable
from tenants.authentication import credentials_from_headers

log = logging.getLogger(__name__)


def _reply(body: bytes, status: int, encoding: Encoding, retry_after: int | None = None) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=encoding.value)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _error(error: IngestError, encoding: Encoding) -> HttpResponse:
    status = replies.error_status(error)
    return _reply(replies.encode(status, encoding), error.reason.http_status, encoding, error.retry_after_seconds)


def _read_body(request: HttpRequest) -> bytes:
    """The whole body, reading no more than the limit. The HTTP edge (gateway/edge.py) has read
    it whole already, chunked or not, and says so when it stopped at the limit."""
    limit = settings.GATEWAY_MAX_REQUEST_BYTES
    too_large = IngestError(
        Reason.TOO_LARGE, f"request body exceeds the limit of {limit} bytes; send smaller batches"
    )
    if request.META.get("gateway.body_too_large"):
        raise too_large
    declared = request.META.get("CONTENT_LENGTH")
    if declared:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise IngestError(Reason.UNDECODABLE, f"invalid Content-Length {declared!r}") from None
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_large
    return body


def _pipeline() -> runtime.Pipeline:
    try:
        return runtime.get_pipeline()
    except StorageUnavailable as exc:
        log.error("storage is not available: %s", exc)
        raise IngestError(
            Reason.STORAGE_UNAVAILABLE,
            "storage is temporarily unavailable; nothing from this request was stored, retry later",
            retry_after_seconds=settings.GATEWAY_RETRY_AFTER_SECONDS,
        ) from exc


def _reply_encoding(content_type: str | None) -> Encoding:
    """Replies are in the request's content type; protobuf when that is not one we speak."""
    try:
        return encoding_for(content_type)
    except IngestError:
        return Encoding.PROTOBUF


def _export(request: HttpRequest, signal: Signal) -> HttpResponse:
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and origin:
        return cors.preflight(request, origin)
    return cors.decorate(_post(request, signal, origin), origin)


def _post(request: HttpRequest, signal: Signal, origin: str | None) -> HttpResponse:
    if request.method != "POST":
        response = HttpResponse(f"use POST to send OTLP {signal}\n", status=405, content_type="text/plain")
        response["Allow"] = "POST"
        return response
    started = time.perf_counter()
    content_type = request.META.get("CONTENT_TYPE")
    encoding = _reply_encoding(content_type)
    api_key = credentials_from_headers(request.headers.get("Authorization"), request.headers.get("X-Api-Key"))
    received = []  # the body, once read: only after authentication

    def read_body() -> bytes:
        received.append(_read_body(request))
        return received[0]

    try:
        result = _pipeline().run(signal=signal, api_key=api_key, read_body=read_body, encoding=None,
                                 content_type=content_type, content_encoding=request.headers.get("Content-Encoding"),
                                 client_cert_sha256=wsgi_peer_certificate_sha256(request.META), origin=origin,
                                 gateway_origins=tuple(settings.GATEWAY_CORS_ALLOWED_ORIGINS))
    except IngestError as exc:
        record_export(Transport.HTTP, signal, started=started, body_bytes=len(received[0]) if received else 0,
                      error=exc, principal=exc.principal)
        return _error(exc, encoding)
    body = received[0]
    record_export(Transport.HTTP, signal, started=started, body_bytes=len(body), result=result)
    return _reply(replies.encode(result.response, encoding), 200, encoding)


def _guarded(signal: Signal):
    """The view for `signal`. The pipeline turns every failure into an IngestError; this is the
    net under the transport's own code, so that not even a bug here answers with an HTML page."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        try:
            return _export(request, signal)
        except Exception:
            log.exception("OTLP/HTTP %s request failed outside the pipeline", signal)
            error = IngestError(Reason.INTERNAL, "internal error; the gateway's operators have the details")
            return _error(error, _reply_encoding(request.META.get("CONTENT_TYPE")))

    view.__name__ = str(signal)
    return view


traces = _guarded(Signal.TRACES)
metrics = _guarded(Signal.METRICS)
logs = _guarded(Signal.LOGS)
