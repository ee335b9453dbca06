"""manage.py serve_grpc: the production OTLP/gRPC process (gateway.processes.grpc_server)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from storage.clickhouse import describe_url


class Command(BaseCommand):
    help = "Serve OTLP/gRPC with the standard gRPC health service, and Prometheus metrics on GATEWAY_METRICS_PORT."

    def handle(self, *args, **options):
        from gateway.processes.grpc_server import run

        def announce(what: str) -> None:
            details = (
                (
                    f", ClickHouse {describe_url(settings.GATEWAY_CLICKHOUSE_URL)}"
                    + (", TLS" if settings.GATEWAY_TLS_CERT_FILE else "")
                )
                if what != "stopping"
                else ""
            )
            self.stdout.write(f"otlp-gateway gRPC: {what}{details}")
            self.stdout.flush()

        run(announce=announce)
