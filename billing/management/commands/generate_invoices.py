"""manage.py generate_invoices --period YYYY-MM: invoices for every subscribed tenant."""
from django.core.management.base import BaseCommand, CommandError

from billing.invoicing import generate_invoice, period_bounds
from billing.models import Subscription
from billing.runtime import accepted_volume_fn
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Make (or remake, while drafts) the invoices of a month from usage and plan prices."

    def add_arguments(self, parser):
        parser.add_argument("--period", required=True, help="YYYY-MM (UTC)")

    def handle(self, *args, period: str, **options):
        try:
            start, end = period_bounds(period)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        tenant_ids = (Subscription.objects.filter(starts_at__lt=end).exclude(ends_at__lte=start)
                      .values_list("tenant_id", flat=True).distinct())
        volume = accepted_volume_fn()
        for tenant in Tenant.objects.filter(pk__in=list(tenant_ids)).order_by("slug"):
            invoice = generate_invoice(tenant=tenant, period=period, volume=volume)
            self.stdout.write(f"{tenant.slug} {period}: {invoice.total} {invoice.currency} ({invoice.status})")
