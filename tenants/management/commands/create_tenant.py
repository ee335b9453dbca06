"""manage.py create_tenant NAME: creates a tenant and prints its first API key, once."""

from django.core.management.base import BaseCommand, CommandError

from tenants.audit import Actor
from tenants.services import create_tenant_with_key


class Command(BaseCommand):
    help = "Create a tenant and print a new API key for it (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug", default=None, help="URL-safe identifier; derived from NAME if omitted")

    def handle(self, *args, name: str, slug: str | None, **options):
        try:
            issued = create_tenant_with_key(actor=Actor.system("create_tenant"), name=name, slug=slug)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        tenant = issued.api_key.tenant
        self.stdout.write(f"Tenant:   {tenant.name} (slug {tenant.slug}, id {tenant.id})")
        self.stdout.write(f"API key:  {issued.secret}")
        self.stdout.write("Store the key now: it is not shown again.")
