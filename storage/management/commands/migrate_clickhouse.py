"""manage.py migrate_clickhouse: apply the versioned ClickHouse DDL (serve does this too)."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from storage.clickhouse import Store, StorageUnavailable, describe_url


class Command(BaseCommand):
    help = "Create or upgrade the telemetry tables in ClickHouse."

    def handle(self, *args, **options):
        store = Store(settings.GATEWAY_CLICKHOUSE_URL, cluster=settings.GATEWAY_CLICKHOUSE_CLUSTER)
        try:
            applied = store.migrate()
        except StorageUnavailable as exc:
            raise CommandError(str(exc)) from exc
        finally:
            store.close()
        where = describe_url(settings.GATEWAY_CLICKHOUSE_URL)
        if store.layout.cluster:
            where += f" (cluster {store.layout.cluster})"
        if applied:
            self.stdout.write(f"Applied ClickHouse migrations {applied} on {where}")
        else:
            self.stdout.write(f"ClickHouse schema on {where} is up to date")
