"""Invoices from usage and plan prices: base fee and included volume pro-rated over the part
of the month each subscription covers, volume above it priced per million items and per GB.
All money is Decimal, each line rounded half-up to cents."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from django.db import transaction

from billing.models import Invoice, InvoiceLine, Subscription

CENT = Decimal("0.01")
MILLION = Decimal(1_000_000)
GB = Decimal(1_000_000_000)

# (tenant_id, since, until) -> {signal: (items accepted, bytes)}
VolumeFn = Callable[[str, datetime, datetime], dict[str, tuple[int, int]]]


def period_bounds(period: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"period {period!r} is not YYYY-MM") from None
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


@dataclass(frozen=True)
class Line:
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def subscription_lines(subscription: Subscription, start: datetime, end: datetime, volume: VolumeFn) -> list[Line]:
    seg_start = max(subscription.starts_at, start)
    seg_end = min(subscription.ends_at or end, end)
    if seg_end <= seg_start:
        return []
    plan = subscription.plan
    share = Decimal((seg_end - seg_start).total_seconds()) / Decimal((end - start).total_seconds())
    days = f"{seg_start:%Y-%m-%d} to {seg_end:%Y-%m-%d %H:%M}"
    lines = [
        Line(
            f"{plan.name} plan base fee, {days}",
            share.quantize(Decimal("0.000001")),
            "month",
            plan.base_fee,
            _money(plan.base_fee * share),
        )
    ]
    used = volume(str(subscription.tenant_id), seg_start, seg_end)
    total_bytes = sum(size for _, size in used.values())
    for priced in plan.signals.all():
        items = used.get(priced.signal, (0, 0))[0]
        included = (Decimal(priced.included_items) * share).to_integral_value(rounding=ROUND_FLOOR)
        billable = max(Decimal(0), Decimal(items) - included)
        millions = billable / MILLION
        lines.append(
            Line(
                f"{priced.signal}: {items} items, {included} included ({plan.name})",
                millions.quantize(Decimal("0.000001")),
                "million items",
                priced.price_per_million,
                _money(millions * priced.price_per_million),
            )
        )
    gigabytes = Decimal(total_bytes) / GB
    if plan.price_per_gb:
        lines.append(
            Line(
                f"ingested data ({plan.name})",
                gigabytes.quantize(Decimal("0.000001")),
                "GB",
                plan.price_per_gb,
                _money(gigabytes * plan.price_per_gb),
            )
        )
    return lines


@transaction.atomic
def generate_invoice(*, tenant, period: str, volume: VolumeFn) -> Invoice | None:
    """The tenant's invoice for `period`, made again from usage while it is a draft (running
    this twice gives the same invoice). Issued invoices are left alone."""
    start, end = period_bounds(period)
    subscriptions = list(
        Subscription.objects.select_related("plan")
        .prefetch_related("plan__signals")
        .filter(tenant=tenant, starts_at__lt=end)
        .exclude(ends_at__lte=start)
        .order_by("starts_at")
    )
    if not subscriptions:
        return None
    invoice, _ = Invoice.objects.get_or_create(
        tenant=tenant, period=period, defaults={"currency": subscriptions[-1].plan.currency}
    )
    if invoice.status == Invoice.Status.ISSUED:
        return invoice
    lines = [line for subscription in subscriptions for line in subscription_lines(subscription, start, end, volume)]
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(
                invoice=invoice,
                position=i,
                description=line.description,
                quantity=line.quantity,
                unit=line.unit,
                unit_price=line.unit_price,
                amount=line.amount,
            )
            for i, line in enumerate(lines, start=1)
        ]
    )
    invoice.total = sum((line.amount for line in lines), Decimal("0.00"))
    invoice.currency = subscriptions[-1].plan.currency
    invoice.save()
    return invoice


def invoice_csv(invoice: Invoice) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["tenant", "period", "position", "description", "quantity", "unit", "unit_price", "amount", "currency"]
    )
    for line in invoice.lines.all():
        writer.writerow(
            [
                invoice.tenant.slug,
                invoice.period,
                line.position,
                line.description,
                line.quantity,
                line.unit,
                line.unit_price,
                line.amount,
                invoice.currency,
            ]
        )
    writer.writerow([invoice.tenant.slug, invoice.period, "", "TOTAL", "", "", "", invoice.total, invoice.currency])
    return out.getvalue()


def generate_all(*, period: str, volume: VolumeFn | None = None) -> list[Invoice]:
    """Invoices of every tenant subscribed during `period` (the command and the console)."""
    from billing.usage import accepted_volume_fn
    from tenants.models import Tenant

    start, end = period_bounds(period)
    tenant_ids = (
        Subscription.objects.filter(starts_at__lt=end)
        .exclude(ends_at__lte=start)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    volume = volume or accepted_volume_fn()
    return [
        generate_invoice(tenant=tenant, period=period, volume=volume)
        for tenant in Tenant.objects.filter(pk__in=list(tenant_ids)).order_by("slug")
    ]
