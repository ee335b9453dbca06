"""OTLP/gRPC receiver: TraceService, MetricsService and LogsService Export, plus the standard
gRPC health service. Transport only: it hands raw request bytes to the shared pipeline.

gRPC decompresses (gzip) in grpc core, which enforces the receive-size limit on the
decompressed message, so a compression bomb is refused before Python sees it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from gateway.metrics import Transport
from gateway.otlp import replies
from gateway.otlp.export import export, refused_on_arrival
from gateway.otlp.pipeline import Pipeline
from gateway.tls import TlsConfig, grpc_peer_certificate_sha256
from tenants.authentication import credentials_from_headers, refuse_without_lookup
from vocabulary import Reason, Refusal, Signal

log = logging.getLogger(__name__)

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
EXPORT_METHODS = {f"/{service}/Export": signal for signal, service in SERVICES.items()}


def _credentials(metadata) -> tuple[str | None, str | None]:
    """The call's `authorization` and `x-api-key` metadata."""
    values = {key.lower(): value for key, value in metadata or ()}
    return values.get("authorization"), values.get("x-api-key")


def _refusal_handler(error: Refusal) -> grpc.RpcMethodHandler:
    """A handler that answers `error` at once and never reads the call's message."""
    status = rpc_status.to_status(replies.error_status(error))

    def refuse(request_iterator, context: grpc.ServicerContext):
        context.abort_with_status(status)

    return grpc.stream_unary_rpc_method_handler(refuse)


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Runs for each call as it arrives, before any of its message is read, in the server's
    polling thread (so: no database). A call without a usable-looking key is refused here,
    as is one over the cap of calls in flight (queued or running), with RetryInfo. The rest
    are authenticated in full by the handler, still before it reads the message."""

    def __init__(
        self, *, max_in_flight: int, keys_required: bool, on_refused: Callable[[Refusal, str], None] | None = None
    ):
        self.max_in_flight = max_in_flight
        self.keys_required = keys_required  # False under mutual TLS: a certificate may stand in
        self.on_refused = on_refused
        self.in_flight = 0
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method not in EXPORT_METHODS:
            return continuation(handler_call_details)
        api_key = credentials_from_headers(*_credentials(handler_call_details.invocation_metadata))
        refusal = refuse_without_lookup(api_key) if (api_key or self.keys_required) else None
        if refusal is None:
            with self._lock:
                if self.in_flight >= self.max_in_flight:
                    refusal = Refusal(
                        Reason.OVERLOADED,
                        f"the gateway has {self.max_in_flight} export calls in flight; retry shortly",
                        retry_after_seconds=1,
                    )
                else:
                    self.in_flight += 1
        if refusal is not None:
            if self.on_refused is not None:
                self.on_refused(refusal, method)
            return _refusal_handler(refusal)
        handler = continuation(handler_call_details)
        behavior = handler.stream_unary

        def counted(request_iterator, context):
            try:
                return behavior(request_iterator, context)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return grpc.stream_unary_rpc_method_handler(counted)


def _read_message(request_iterator) -> bytes:
    """The call's one message, read only now that its sender is known."""
    try:
        return next(request_iterator, b"")
    except grpc.RpcError as exc:  # the client went away first
        raise Refusal(Reason.UNDECODABLE, "the call ended before its message arrived") from exc


def _export_handler(get_pipeline: Callable[[], Pipeline], signal: Signal):
    def export_call(request_iterator, context: grpc.ServicerContext) -> bytes:
        authorization, x_api_key = _credentials(context.invocation_metadata())
        try:
            result = export(
                Transport.GRPC,
                signal,
                get_pipeline=get_pipeline,
                authorization=authorization,
                x_api_key=x_api_key,
                read_body=lambda: _read_message(request_iterator),
                client_cert_sha256=grpc_peer_certificate_sha256(context),
            )
        except Exception:  # export ends every failure in a result; this is the net under this code
            log.exception("OTLP/gRPC %s request failed outside the pipeline", signal)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the gateway's operators have the details")
        if result.refusal is not None:
            context.abort_with_status(rpc_status.to_status(replies.error_status(result.refusal)))
        return result.response.SerializeToString()

    return export_call


def build_server(
    get_pipeline: Callable[[], Pipeline],
    *,
    address: str,
    max_message_bytes: int,
    threads: int,
    max_connection_age_seconds: int = 0,
    tls: TlsConfig | None = None,
    max_in_flight: int = 1024,
    bdp_probe: bool = False,
) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) server and the port it bound. A max connection age
    makes clients reconnect now and then, which spreads them over replicas added later.
    With `tls` the port speaks only TLS (mutual TLS when it names a client CA).

    Export calls are admitted before their message is read (AdmissionInterceptor), at most
    `max_in_flight` at a time; a call's message is read only by a handler thread, once its
    sender is authenticated, so at most `threads` messages are held at once."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
        # Without BDP probing a stream's HTTP/2 window stays small until the handler reads the
        # message, so calls queued or refused unread cost kilobytes, not their whole message:
        # 1,000 concurrent 4 MiB calls with a key took the RSS from 0.5 to 2.1 GB with it, to
        # 0.85 GB without (docs/BENCHMARKS.md). Long, fast links may want it back.
        ("grpc.http2.bdp_probe", 1 if bdp_probe else 0),
    ]
    if max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", max_connection_age_seconds * 1000),
            ("grpc.max_connection_age_grace_ms", 30_000),  # lets calls in flight finish
        ]

    def refused(refusal: Refusal, method: str) -> None:
        refused_on_arrival(Transport.GRPC, EXPORT_METHODS[method], refusal, get_pipeline=get_pipeline)

    admission = AdmissionInterceptor(
        max_in_flight=max_in_flight, keys_required=not (tls is not None and tls.mutual), on_refused=refused
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="otlp-grpc"),
        options=options,
        # No maximum_concurrent_rpcs: grpcio's own refusal carries no RetryInfo, so exporters
        # would drop the data; the interceptor refuses with it instead.
        interceptors=[admission],
    )
    server.otlp_admission = admission
    handlers = []
    for signal, service in SERVICES.items():
        # Stream-unary on our side (the wire is the same as unary): the handler decides when
        # the message is read, which is after the sender is known.
        method = grpc.stream_unary_rpc_method_handler(
            _export_handler(get_pipeline, signal),
            request_deserializer=None,
            response_serializer=None,
        )
        handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
    server.add_generic_rpc_handlers(handlers)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", *SERVICES.values()):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    port = (
        server.add_secure_port(address, tls.grpc_server_credentials())
        if tls is not None
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise OSError(f"cannot bind the OTLP/gRPC receiver to {address}")
    return server, port


def server_from_settings() -> tuple[grpc.Server, int]:
    """The OTLP/gRPC server as settings describe it, serving this process's pipeline."""
    from django.conf import settings

    from gateway.otlp import runtime
    from gateway.tls import TlsConfig

    return build_server(
        runtime.get_pipeline,
        address=f"{settings.GATEWAY_HOST}:{settings.GATEWAY_GRPC_PORT}",
        max_message_bytes=settings.GATEWAY_MAX_REQUEST_BYTES,
        threads=settings.GATEWAY_GRPC_THREADS,
        max_connection_age_seconds=settings.GATEWAY_GRPC_MAX_CONNECTION_AGE_SECONDS,
        tls=TlsConfig.from_settings(),
        max_in_flight=settings.GATEWAY_GRPC_MAX_IN_FLIGHT,
        bdp_probe=settings.GATEWAY_GRPC_BDP_PROBE,
    )
