"""The production OTLP/gRPC process (manage.py serve_grpc), with its own storage batcher and a
Prometheus /metrics port. On SIGTERM or SIGINT it stops the one way every process does
(gateway.processes.serving): calls in flight finish, queued rows are stored, then it exits."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from django.conf import settings

from gateway.processes.serving import Serving


def _start_metrics():
    if not settings.GATEWAY_METRICS_PORT:
        return None
    from prometheus_client import start_http_server

    from gateway.metrics import exposition_registry

    httpd, _thread = start_http_server(
        settings.GATEWAY_METRICS_PORT, addr=settings.GATEWAY_HOST, registry=exposition_registry()
    )
    return httpd


def run(*, announce: Callable[[str], None]) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    metrics_server = _start_metrics()
    serving = Serving.start(with_grpc=True)
    announce(
        f"OTLP/gRPC on {settings.GATEWAY_HOST}:{serving.grpc_port}"
        + (f", metrics on :{settings.GATEWAY_METRICS_PORT}/metrics" if metrics_server else "")
    )
    stop.wait()
    announce("stopping")
    serving.stop()
    if metrics_server is not None:
        metrics_server.shutdown()
