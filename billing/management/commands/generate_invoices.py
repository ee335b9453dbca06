"""manage.py generate_invoices --period YYYY-MM: invoices for every subscribed tenant.

In the embedded mode the serving process owns the chDB directory: run this while the gateway
is stopped, or use Invoices -> Generate in the console."""

from django.core.management.base import BaseCommand, CommandError

from billing.invoicing import generate_all, period_bounds


class Command(BaseCommand):
    help = "Make (or remake, while drafts) the invoices of a month from usage and plan prices."

    def add_arguments(self, parser):
        parser.add_argument("--period", required=True, help="YYYY-MM (UTC)")

    def handle(self, *args, period: str, **options):
        try:
            period_bounds(period)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        for invoice in generate_all(period=period):
            self.stdout.write(f"{invoice.tenant.slug} {period}: {invoice.total} {invoice.currency} ({invoice.status})")
