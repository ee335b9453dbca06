"""manage.py issue_key SLUG: a new API key for an existing tenant, printed once."""

from django.core.management.base import BaseCommand, CommandError

from tenants.audit import Actor
from tenants.models import Tenant
from tenants.services import ALL_SCOPES, issue_key


class Command(BaseCommand):
    help = "Issue a new API key for a tenant and print it (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="default")
        parser.add_argument("--scopes", default=",".join(ALL_SCOPES), help="comma-separated: traces,metrics,logs")

    def handle(self, *args, slug: str, name: str, scopes: str, **options):
        try:
            tenant = Tenant.objects.get(slug=slug)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {slug!r}") from None
        try:
            issued = issue_key(
                actor=Actor.system("issue_key"),
                tenant=tenant,
                name=name,
                scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"API key:  {issued.secret}")
        self.stdout.write("Store the key now: it is not shown again.")
