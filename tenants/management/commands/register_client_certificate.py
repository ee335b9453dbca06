"""manage.py register_client_certificate SLUG CERT.pem: let a TLS client certificate authenticate a tenant."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tenants.audit import Actor
from tenants.certificates import register_client_certificate
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Register a TLS client certificate (PEM) to a tenant: under mutual TLS it then authenticates "
        "the tenant in place of an API key, or together with one if the tenant requires both."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("certificate", help="PEM file of the client's certificate")
        parser.add_argument("--name", default="default")

    def handle(self, *args, slug: str, certificate: str, name: str, **options):
        try:
            tenant = Tenant.objects.get(slug=slug)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {slug!r}") from None
        try:
            pem = Path(certificate).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {certificate}: {exc.strerror}") from exc
        try:
            registered = register_client_certificate(
                actor=Actor.system("register_client_certificate"), tenant=tenant, pem=pem, name=name
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"registered {registered.subject} to {tenant.slug}: sha256 {registered.sha256}, "
            f"valid until {registered.not_after:%Y-%m-%d}"
        )
