"""manage.py migrate_clickhouse: apply the versioned ClickHouse DDL (serve does this too)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

import storage
from storage.clickhouse import StorageUnavailable, describe_url


class Command(BaseCommand):
    help = "Create or upgrade the telemetry tables in ClickHouse."

    def handle(self, *args, **options):
        store = storage.get_store()
        try:
            applied = store.migrate()
        except StorageUnavailable as exc:
            raise CommandError(str(exc)) from exc
        finally:
            store.close()  # reconnects if used again; a process that forks after this holds nothing open
        where = describe_url(settings.GATEWAY_CLICKHOUSE_URL)
        if store.layout.cluster:
            where += f" (cluster {store.layout.cluster})"
        if applied:
            self.stdout.write(f"Applied ClickHouse migrations {applied} on {where}")
        else:
            self.stdout.write(f"ClickHouse schema on {where} is up to date")
