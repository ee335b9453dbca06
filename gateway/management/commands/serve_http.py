"""manage.py serve_http: the production HTTP process (gunicorn, one worker per CPU)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

import storage
from storage.clickhouse import describe_url


class Command(BaseCommand):
    help = (
        "Serve OTLP/HTTP, the console, the API, /healthz, /readyz and /metrics with gunicorn. "
        "Migrations are not applied here (manage.py migrate and migrate_clickhouse do that)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="gunicorn workers (default: GATEWAY_HTTP_WORKERS, else one per CPU the container may use)",
        )

    def handle(self, *args, workers: int | None, **options):
        from gateway.processes.http_server import default_workers, exec_process

        workers = workers or default_workers()
        if storage.get_store().embedded and workers != 1:
            raise CommandError(
                "embedded chDB allows one process per data directory: use --workers 1, "
                "or point GATEWAY_CLICKHOUSE_URL at a ClickHouse server"
            )
        if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self.stderr.write(
                "PROMETHEUS_MULTIPROC_DIR is not set: each /metrics scrape shows only the "
                "worker that answers it; set it to an empty writable directory"
            )
        # The workers open the database and ClickHouse themselves; nothing open may cross the fork.
        connections.close_all()
        self.stdout.write(
            f"otlp-gateway HTTP: OTLP/HTTP, console and API on {settings.GATEWAY_HOST}:{settings.GATEWAY_HTTP_PORT}, "
            f"{workers} worker(s), ClickHouse {describe_url(settings.GATEWAY_CLICKHOUSE_URL)}"
        )
        self.stdout.flush()
        exec_process(workers=workers)
