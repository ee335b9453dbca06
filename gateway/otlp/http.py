"""OTLP/HTTP receivers: POST /v1/traces, /v1/metrics, /v1/logs. Transport only: it reads the
body and headers and writes the reply; gateway.otlp.export does the rest."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from gateway.metrics import Transport
from gateway.otlp import cors, replies, runtime
from gateway.otlp.decode import Encoding, encoding_for
from gateway.otlp.export import export, internal_error
from gateway.tls import wsgi_peer_certificate_sha256
from vocabulary import Reason, Refusal, Signal

log = logging.getLogger(__name__)


def _reply(body: bytes, status: int, encoding: Encoding, retry_after: int | None = None) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=encoding.value)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def _error(refusal: Refusal, encoding: Encoding) -> HttpResponse:
    body = replies.encode(replies.error_status(refusal), encoding)
    return _reply(body, replies.http_status(refusal), encoding, refusal.retry_after_seconds)


def _read_body(request: HttpRequest) -> bytes:
    """The whole body, reading no more than the limit. The HTTP edge (gateway/edge.py) has read
    it whole already, chunked or not, and says so when it stopped at the limit."""
    limit = settings.GATEWAY_MAX_REQUEST_BYTES
    too_large = Refusal(Reason.TOO_LARGE, f"request body exceeds the limit of {limit} bytes; send smaller batches")
    if request.META.get("gateway.body_too_large"):
        raise too_large
    declared = request.META.get("CONTENT_LENGTH")
    if declared:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise Refusal(Reason.UNDECODABLE, f"invalid Content-Length {declared!r}") from None
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_large
    return body


def _reply_encoding(content_type: str | None) -> Encoding:
    """Replies are in the request's content type; protobuf when that is not one we speak."""
    try:
        return encoding_for(content_type)
    except Refusal:
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
    content_type = request.META.get("CONTENT_TYPE")
    encoding = _reply_encoding(content_type)
    result = export(
        Transport.HTTP,
        signal,
        get_pipeline=runtime.get_pipeline,
        authorization=request.headers.get("Authorization"),
        x_api_key=request.headers.get("X-Api-Key"),
        read_body=lambda: _read_body(request),
        encoding=None,
        content_type=content_type,
        content_encoding=request.headers.get("Content-Encoding"),
        client_cert_sha256=wsgi_peer_certificate_sha256(request.META),
        origin=origin,
        gateway_origins=tuple(settings.GATEWAY_CORS_ALLOWED_ORIGINS),
    )
    if result.refusal is not None:
        return _error(result.refusal, encoding)
    return _reply(replies.encode(result.response, encoding), 200, encoding)


def _guarded(signal: Signal):
    """The view for `signal`. Every failure of an export ends in a refusal; this is the net
    under the transport's own code, so that not even a bug here answers with an HTML page."""

    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponse:
        try:
            return _export(request, signal)
        except Exception:
            log.exception("OTLP/HTTP %s request failed outside the pipeline", signal)
            return _error(internal_error(), _reply_encoding(request.META.get("CONTENT_TYPE")))

    view.__name__ = str(signal)
    return view


traces = _guarded(Signal.TRACES)
metrics = _guarded(Signal.METRICS)
logs = _guarded(Signal.LOGS)
