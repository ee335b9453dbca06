"""OTLP/gRPC receiver: TraceService, MetricsService and LogsService Export, plus the standard
gRPC health service. Transport only: it hands raw request bytes to the shared pipeline.

gRPC decompresses (gzip) in grpc core, which enforces the receive-size limit on the
decompressed message, so a compression bomb is refused before Python sees it.
"""
from __future__ import annotations

import logging
import time
from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from billing.outcomes import Signal
from gateway.metrics import Transport, record_export
from gateway.otlp import replies
from gateway.otlp.errors import IngestError, Reason
from gateway.otlp.pipeline import Pipeline
from gateway.tls import TlsConfig, grpc_peer_certificate_sha256
from storage.clickhouse import StorageUnavailable
from tenants.authentication import credentials_from_headers

log = logging.getLogger(__name__)

SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


def _export_handler(get_pipeline: Callable[[], Pipeline], signal: Signal, retry_after: int):
    def export(request_bytes: bytes, context: grpc.ServicerContext) -> bytes:
        started = time.perf_counter()
        metadata = {key.lower(): value for key, value in context.invocation_metadata()}
        api_key = credentials_from_headers(metadata.get("authorization"), metadata.get("x-api-key"))
        try:
            try:
                pipeline = get_pipeline()
            except StorageUnavailable as exc:
                raise IngestError(
                    Reason.STORAGE_UNAVAILABLE,
                    "storage is temporarily unavailable; nothing from this request was stored, retry later",
                    retry_after_seconds=retry_after,
                ) from exc
            result = pipeline.run(signal=signal, api_key=api_key, read_body=lambda: request_bytes,
                                  client_cert_sha256=grpc_peer_certificate_sha256(context))
        except IngestError as exc:
            record_export(Transport.GRPC, signal, started=started, body_bytes=len(request_bytes),
                          error=exc, principal=exc.principal)
            context.abort_with_status(rpc_status.to_status(replies.error_status(exc)))
        except Exception:  # the pipeline maps every failure; this is the net under this code
            log.exception("OTLP/gRPC %s request failed outside the pipeline", signal)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the gateway's operators have the details")
        record_export(Transport.GRPC, signal, started=started, body_bytes=len(request_bytes),
                      result=result)
        return result.response.SerializeToString()

    return export


def build_server(
    get_pipeline: Callable[[], Pipeline],
    *,
    address: str,
    max_message_bytes: int,
    threads: int,
    retry_after_seconds: int,
    max_connection_age_seconds: int = 0,
    tls: TlsConfig | None = None,
) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) server and the port it bound. A max connection age
    makes clients reconnect now and then, which spreads them over replicas added later.
    With `tls` the port speaks only TLS (mutual TLS when it names a client CA)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.so_reuseport", 0),
    ]
    if max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", max_connection_age_seconds * 1000),
            ("grpc.max_connection_age_grace_ms", 30_000),  # lets calls in flight finish
        ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="otlp-grpc"),
        options=options,
    )
    handlers = []
    for signal, service in SERVICES.items():
        method = grpc.unary_unary_rpc_method_handler(
            _export_handler(get_pipeline, signal, retry_after_seconds),
            request_deserializer=None,
            response_serializer=None,
        )
        handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
    server.add_generic_rpc_handlers(handlers)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", *SERVICES.values()):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    port = (server.add_secure_port(address, tls.grpc_server_credentials()) if tls is not None
            else server.add_insecure_port(address))
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
        retry_after_seconds=settings.GATEWAY_RETRY_AFTER_SECONDS,
        max_connection_age_seconds=settings.GATEWAY_GRPC_MAX_CONNECTION_AGE_SECONDS,
        tls=TlsConfig.from_settings(),
    )
