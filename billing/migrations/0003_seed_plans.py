"""Seed a free and a paid plan."""

from decimal import Decimal

from django.db import migrations

PLANS = {
    "free": dict(
        name="Free",
        max_request_bytes=1024 * 1024,
        stored_bytes=5 * 10**9,
        retention_days=7,
        base_fee=Decimal("0"),
        price_per_gb=Decimal("0"),
        signals=dict(
            items_per_second=1000,
            burst_items=2000,
            requests_per_second=20,
            items_per_day=10_000_000,
            bytes_per_day=2 * 10**9,
            included_items=0,
            price_per_million=Decimal("0"),
        ),
    ),
    "pro": dict(
        name="Pro",
        max_request_bytes=4 * 1024 * 1024,
        stored_bytes=0,
        retention_days=30,
        base_fee=Decimal("99.00"),
        price_per_gb=Decimal("0.10"),
        signals=dict(
            items_per_second=50_000,
            burst_items=100_000,
            requests_per_second=500,
            items_per_day=0,
            bytes_per_day=0,
            included_items=100_000_000,
            price_per_million=Decimal("0.30"),
        ),
    ),
}


def seed(apps, schema_editor):
    Plan, PlanSignal = apps.get_model("billing", "Plan"), apps.get_model("billing", "PlanSignal")
    for slug, spec in PLANS.items():
        spec = dict(spec)
        signals = spec.pop("signals")
        plan, _ = Plan.objects.update_or_create(slug=slug, defaults=spec)
        for signal in ("traces", "metrics", "logs"):
            PlanSignal.objects.update_or_create(plan=plan, signal=signal, defaults=signals)


def unseed(apps, schema_editor):
    apps.get_model("billing", "Plan").objects.filter(slug__in=PLANS, tenants__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_plan_base_fee_plan_currency_plan_max_request_bytes_and_more")]
    operations = [migrations.RunPython(seed, unseed)]
