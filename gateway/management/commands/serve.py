"""manage.py serve: the whole gateway in one command on the embedded defaults."""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

import storage
from gateway.tls import TlsConfig
from storage.clickhouse import describe_url
from tenants.audit import Actor
from tenants.models import Tenant
from tenants.services import create_tenant_with_key

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Apply migrations, create a demo tenant on first start, and serve OTLP/gRPC, OTLP/HTTP and the console."

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="do not create the demo tenant")
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="gunicorn workers; must be 1 with embedded chDB (one process owns its directory)",
        )

    def handle(self, *args, no_demo: bool, workers: int, **options):
        embedded = storage.get_store().embedded
        if embedded and workers != 1:
            raise CommandError(
                "embedded chDB allows one process per data directory: use --workers 1, "
                "or point GATEWAY_CLICKHOUSE_URL at a ClickHouse server"
            )
        tls = TlsConfig.from_settings()  # a TLS misconfiguration stops here, before anything starts
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", interactive=False, verbosity=0)
        if not embedded:
            # Once, here; workers do not (GATEWAY_MIGRATE_ON_START is false for a server). chDB
            # is migrated by its one worker: this process must not open it before the fork.
            call_command("migrate_clickhouse", verbosity=0)
        if not no_demo:
            self._demo_tenant(tls)
        # The worker opens ClickHouse and the database itself; nothing open may cross the fork.
        connections.close_all()
        self.stdout.write(
            f"otlp-gateway: OTLP/gRPC on {settings.GATEWAY_HOST}:{settings.GATEWAY_GRPC_PORT}, "
            f"OTLP/HTTP and console on {settings.GATEWAY_HOST}:{settings.GATEWAY_HTTP_PORT}, "
            f"ClickHouse {describe_url(settings.GATEWAY_CLICKHOUSE_URL)}"
            + (f", {tls.describe()}" if tls is not None else "")
        )
        self.stdout.flush()
        from gateway.processes.all_in_one import exec_process

        exec_process(workers=workers)

    def _demo_tenant(self, tls: TlsConfig | None) -> None:
        if Tenant.objects.filter(slug=DEMO_SLUG).exists():
            self.stdout.write(
                "Demo tenant 'demo' exists; its key was printed on first start. "
                "A new one: python manage.py issue_key demo"
            )
            return
        issued = create_tenant_with_key(actor=Actor.system("serve"), name="Demo", slug=DEMO_SLUG)
        key = issued.secret
        grpc_port, http_port = settings.GATEWAY_GRPC_PORT, settings.GATEWAY_HTTP_PORT
        header = quote(f"Bearer {key}")
        scheme = "https" if tls is not None else "http"
        trust = (
            f"    export OTEL_EXPORTER_OTLP_CERTIFICATE=<the CA certificate that signed {tls.cert_file}>\n"
            if tls is not None
            else ""
        )
        self.stdout.write(
            "\nCreated demo tenant 'demo'. Its API key (shown only now):\n\n"
            f"    {key}\n\n"
            "Point an OpenTelemetry SDK or Collector at the gateway, OTLP/gRPC:\n\n"
            f"    export OTEL_EXPORTER_OTLP_ENDPOINT={scheme}://localhost:{grpc_port}\n"
            "    export OTEL_EXPORTER_OTLP_PROTOCOL=grpc\n"
            f"    export OTEL_EXPORTER_OTLP_HEADERS=authorization={header}\n{trust}\n"
            "or OTLP/HTTP:\n\n"
            f"    export OTEL_EXPORTER_OTLP_ENDPOINT={scheme}://localhost:{http_port}\n"
            "    export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\n"
            f"    export OTEL_EXPORTER_OTLP_HEADERS=authorization={header}\n{trust}"
        )
