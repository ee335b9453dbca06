"""The console and the REST API with many tenants: each list page's time, queries and size.

Fills a fresh SQLite database and chDB (its own data dir; GATEWAY_DATA_DIR of an earlier run is
reused as it was filled) with --tenants tenants on a few plans, a key
each, and --events audit events, then asks every console list page and REST list as a Gateway
admin, the best of --repeat tries.

    .venv/bin/python bench/console.py [--tenants 10000] [--events 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("GATEWAY_DATA_DIR", tempfile.mkdtemp(prefix="otlpgw-bench-console-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production-use-0123456789")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,localhost")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

PAGES = [
    ("console: home (overview)", "/admin/"),
    ("console: home, 7 days, by refused", "/admin/?period=7d&o=refused"),
    ("console: home, 30 days, failing only", "/admin/?period=30d&failing=1"),
    ("console: home, by name, searched", "/admin/?o=name&q=tenant-00"),
    ("console: tenants", "/admin/tenants/tenant/"),
    ("console: tenants, searched", "/admin/tenants/tenant/?q=tenant-0042"),
    ("console: API keys", "/admin/tenants/apikey/"),
    ("console: API keys of one tenant", "/admin/tenants/apikey/?tenant=tenant-00042"),
    ("console: API key add form", "/admin/tenants/apikey/add/"),
    ("console: client certificates", "/admin/tenants/clientcertificate/"),
    ("console: audit log", "/admin/tenants/auditevent/"),
    ("console: audit log, this month", "/admin/tenants/auditevent/?created_at__gte={month}"),
    ("console: tenant page", "/admin/tenants/tenant/{tenant}/change/"),
    (
        "console: tenant autocomplete",
        "/admin/autocomplete/?app_label=tenants&model_name=apikey&field_name=tenant&term=tenant-004",
    ),
    ("API: tenants", "/api/v1/tenants/"),
    ("API: keys", "/api/v1/keys/"),
    ("API: audit events", "/api/v1/audit-events/"),
    ("API: audit events, 1000", "/api/v1/audit-events/?limit=1000"),
    ("API: a tenant's refusals", "/api/v1/tenants/tenant-00042/refusals/"),
]


def fill(tenants: int, events: int, usage_days: int) -> None:
    from billing.models import Plan
    from tenants.audit import Actor, record
    from tenants.keys import generate_key
    from tenants.models import ApiKey, AuditEvent, Tenant
    from tenants.services import create_tenant_with_key

    plans = list(Plan.objects.all())
    create_tenant_with_key(actor=Actor.system("bench"), name="First", slug="first")  # the real path once
    rows = [
        Tenant(name=f"Tenant {n:05d}", slug=f"tenant-{n:05d}", plan=plans[n % len(plans)] if plans else None)
        for n in range(tenants)
    ]
    with transaction.atomic():
        Tenant.objects.bulk_create(rows, batch_size=2000)
        keys = []
        for tenant in Tenant.objects.all():
            new = generate_key()
            keys.append(
                ApiKey(tenant=tenant, name="default", prefix=new.prefix, hashed_key=new.hashed, scopes=["traces"])
            )
        ApiKey.objects.bulk_create(keys, batch_size=2000)
    # Usage: every tenant sent every signal each hour of the last --usage-days days, a tenth refused.
    import random
    from datetime import UTC, datetime, timedelta

    import storage
    from storage.schema import USAGE_COLUMNS, USAGE_TABLE

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    chance = random.Random(1)
    usage = []
    for tenant_id in Tenant.objects.values_list("id", flat=True):
        for back in range(24):
            for signal in ("traces", "metrics", "logs"):
                refused = chance.random() < 0.1
                items = chance.randint(1, 5000)
                usage.append(
                    (
                        str(tenant_id),
                        signal,
                        hour - timedelta(hours=back),
                        "invalid" if refused else "accepted",
                        1,
                        items,
                        0 if refused else items,
                        items * 100,
                    )
                )
    client = storage.get_store()._get_client()
    client.insert(USAGE_TABLE, usage, column_names=list(USAGE_COLUMNS))
    if usage_days > 1:  # the same day again for each day before it, copied inside ClickHouse
        client.command(
            f"INSERT INTO {USAGE_TABLE} SELECT TenantId, Signal, Hour - toIntervalDay(back), Outcome, Requests,"
            f" Items, ItemsAccepted, Bytes FROM {USAGE_TABLE} ARRAY JOIN range(1, {usage_days}) AS back"
            " SETTINGS max_partitions_per_insert_block = 0"
        )
    # Audit events: the chain is appended through tenants.audit, one transaction per 1000.
    done = AuditEvent.objects.count()
    while done < events:
        with transaction.atomic():
            for n in range(min(1000, events - done)):
                record(
                    actor=Actor.system("bench"),
                    action=("key.created", "tenant.updated", "auth.login")[n % 3],
                    target_type="tenant",
                    target_id=str(done + n),
                    target_repr=f"tenant-{(done + n) % tenants:05d}",
                )
        done += min(1000, events - done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--usage-days", type=int, default=1, help="days of hourly usage per tenant and signal")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    import storage

    storage.get_store().migrate()
    started = time.perf_counter()
    from tenants.models import Tenant

    if Tenant.objects.count() < args.tenants:  # GATEWAY_DATA_DIR of an earlier run: filled already
        fill(args.tenants, args.events, args.usage_days)
    print(
        f"filled {args.tenants} tenants ({args.usage_days} days of usage each) and {args.events} audit events"
        f" in {time.perf_counter() - started:.0f} s"
    )

    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from tenants.audit import Actor
    from tenants.roles import GATEWAY_ADMIN
    from tenants.services import create_console_token

    user, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name=GATEWAY_ADMIN))
    console = Client()
    console.force_login(user)
    token = create_console_token(actor=Actor.system("bench"), user=user).secret
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    values = {"tenant": Tenant.objects.get(slug="tenant-00042").pk, "month": timezone.now().strftime("%Y-%m-01")}
    print("\n| page | status | best ms | queries | KB |\n|---|---|---|---|---|")
    for name, url in PAGES:
        url = url.format(**values)
        client = api if url.startswith("/api/") else console
        best, queries, size, status = float("inf"), 0, 0, 0
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                response = client.get(url)
                took = (time.perf_counter() - began) * 1000
            best, queries, size, status = min(best, took), len(captured), len(response.content), response.status_code
        print(f"| {name} | {status} | {best:.0f} | {queries} | {size / 1024:.0f} |")


if __name__ == "__main__":
    main()
