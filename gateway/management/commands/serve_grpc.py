"""manage.py serve_grpc: the production OTLP/gRPC process, with its own storage batcher and a
Prometheus /metrics port. Stops gracefully on SIGTERM: calls in flight finish, queued rows
are stored, then it exits."""
from __future__ import annotations

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from gateway.otlp import runtime
from gateway.otlp.grpc_server import server_from_settings
from storage.clickhouse import describe_url

# Seconds calls in flight get to finish after SIGTERM; below Kubernetes' default 30s grace.
STOP_GRACE_SECONDS = 20


class Command(BaseCommand):
    help = "Serve OTLP/gRPC with the standard gRPC health service, and Prometheus metrics on GATEWAY_METRICS_PORT."

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        pipeline = runtime.build_pipeline()  # migrates only if GATEWAY_MIGRATE_ON_START
        runtime.install_pipeline(pipeline)
        server, port = server_from_settings()
        metrics_server = self._start_metrics()
        server.start()
        runtime.settle_heap()
        self.stdout.write(
            f"otlp-gateway gRPC: OTLP/gRPC on {settings.GATEWAY_HOST}:{port}"
            + (f", metrics on :{settings.GATEWAY_METRICS_PORT}/metrics" if metrics_server else "")
            + f", ClickHouse {describe_url(settings.GATEWAY_CLICKHOUSE_URL)}"
            + (", TLS" if settings.GATEWAY_TLS_CERT_FILE else "")
        )
        self.stdout.flush()
        stop.wait()
        self.stdout.write("otlp-gateway gRPC: stopping")
        server.stop(grace=STOP_GRACE_SECONDS).wait(STOP_GRACE_SECONDS + 5)
        runtime.install_pipeline(None)
        pipeline.stop()  # stores what is queued before the process ends
        pipeline.batcher.store.close()
        if metrics_server is not None:
            metrics_server.shutdown()

    def _start_metrics(self):
        if not settings.GATEWAY_METRICS_PORT:
            return None
        from prometheus_client import start_http_server

        from gateway.metrics import exposition_registry

        httpd, _thread = start_http_server(settings.GATEWAY_METRICS_PORT, addr=settings.GATEWAY_HOST,
                                           registry=exposition_registry())
        return httpd
