"""Services that change plans and subscriptions, audited like every other change."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from billing.models import Plan, Subscription
from tenants import audit
from tenants.audit import Actor


@transaction.atomic
def change_plan(*, actor: Actor, tenant, plan: Plan | None, at: datetime | None = None):
    """Move `tenant` to `plan` from `at` (now): the current subscription ends there and a new
    one starts, so invoices pro-rate both. The plan's retention applies to new data."""
    at = at or timezone.now()
    before = {"plan": tenant.plan.slug if tenant.plan_id else None, "retention_days": tenant.retention_days}
    for current in Subscription.objects.select_for_update().filter(tenant=tenant, ends_at__isnull=True):
        if current.starts_at > at:
            raise ValueError("the new plan cannot start before the current subscription does")
        current.ends_at = at
        current.save(update_fields=["ends_at"])
    if plan is not None:
        Subscription.objects.create(tenant=tenant, plan=plan, starts_at=at)
        tenant.retention_days = plan.retention_days
    tenant.plan = plan
    tenant.save(update_fields=["plan", "retention_days", "updated_at"])
    after = {"plan": plan.slug if plan else None, "retention_days": tenant.retention_days}
    audit.record(
        actor=actor,
        action="tenant.plan_changed",
        target_type="tenant",
        target_id=tenant.id,
        target_repr=tenant.slug,
        changes=audit.diff(before, after),
    )
    return tenant
