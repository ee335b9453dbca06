"""Plans (limits and prices), tenants' subscriptions to them over time, and invoices."""

from __future__ import annotations

from decimal import Decimal

from django.db import models

from vocabulary import Isolation, Signal


class Plan(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Limits for the whole tenant; 0 means no limit.
    max_request_bytes = models.PositiveIntegerField(
        default=4 * 1024 * 1024, help_text="Largest request body accepted (bytes, compressed)."
    )
    stored_bytes = models.PositiveBigIntegerField(default=0, help_text="Most bytes stored in ClickHouse; 0: no cap.")
    retention_days = models.PositiveSmallIntegerField(default=30)
    isolation = models.CharField(
        max_length=16,
        choices=[(i.value, i.label) for i in Isolation],
        default=Isolation.DEDICATED.value,
        help_text="Where its tenants' telemetry is stored: partitions of their own (dedicated), or partitions "
        "shared with other tenants, kept apart by tenant (shared). New data follows a change; stored data stays.",
    )
    # Prices.
    currency = models.CharField(max_length=3, default="USD")
    base_fee = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0"), help_text="Per month, pro-rated for part of a month."
    )
    price_per_gb = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal("0"),
        help_text="Per GB (10^9 bytes) of accepted request bodies.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PlanSignal(models.Model):
    """A plan's limits and prices for one signal. 0 in a limit means no limit."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="signals")
    signal = models.CharField(max_length=16, choices=[(s.value, s.value) for s in Signal])
    items_per_second = models.PositiveIntegerField(default=0)
    burst_items = models.PositiveIntegerField(
        default=0, help_text="Items allowed at once above the steady rate; 0: one second's worth."
    )
    requests_per_second = models.PositiveIntegerField(default=0)
    items_per_day = models.PositiveBigIntegerField(default=0)
    bytes_per_day = models.PositiveBigIntegerField(default=0)
    bytes_per_second = models.PositiveBigIntegerField(
        default=0, help_text="Request bytes (as received, compressed) per second; 0: no limit."
    )
    burst_bytes = models.PositiveBigIntegerField(
        default=0, help_text="Bytes allowed at once above the steady rate; 0: one second's worth."
    )
    included_items = models.PositiveBigIntegerField(default=0, help_text="Items per month in the base fee.")
    price_per_million = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))

    class Meta:
        unique_together = [("plan", "signal")]
        ordering = ["plan", "signal"]

    def __str__(self) -> str:
        return f"{self.plan} / {self.signal}"


class Subscription(models.Model):
    """A tenant on a plan from `starts_at` until `ends_at` (open while current)."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["tenant", "starts_at"]

    def __str__(self) -> str:
        return f"{self.tenant.slug} on {self.plan} from {self.starts_at:%Y-%m-%d}"


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ISSUED = "issued", "Issued"

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="invoices")
    period = models.CharField(max_length=7, help_text="YYYY-MM")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, default="USD")
    total = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        unique_together = [("tenant", "period")]
        ordering = ["-period", "tenant"]

    def __str__(self) -> str:
        return f"{self.tenant.slug} {self.period}"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=20, decimal_places=6)
    unit = models.CharField(max_length=32)
    unit_price = models.DecimalField(max_digits=12, decimal_places=4)
    amount = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["invoice", "position"]


class DailyCounter(models.Model):
    """What a tenant's signal was admitted on one UTC day (items or bytes), for daily quotas in
    the embedded mode: in the database, so that no count is evicted and a restart keeps them.
    With Redis (production) the counters live there instead (billing.quotas)."""

    key = models.CharField(max_length=120)  # "<tenant id>:<signal>:<items|bytes>"
    day = models.DateField()
    amount = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "day"], name="billing_dailycounter_key_day")]
        indexes = [models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.key} {self.day}: {self.amount}"
