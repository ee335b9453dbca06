"""manage.py rotate_data_key SLUG: new data of the tenant is encrypted with a new key version."""

from django.core.management.base import BaseCommand, CommandError

from tenants.audit import Actor
from tenants.encryption import rotate_data_key
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Start a new data key version for a tenant; older versions keep old data readable."

    def add_arguments(self, parser):
        parser.add_argument("slug")

    def handle(self, *args, slug: str, **options):
        try:
            created = rotate_data_key(actor=Actor.system("rotate_data_key"), tenant=Tenant.objects.get(slug=slug))
        except (Tenant.DoesNotExist, ValueError) as exc:
            raise CommandError(str(exc) if isinstance(exc, ValueError) else f"no tenant {slug!r}") from exc
        self.stdout.write(f"tenant {slug} now encrypts with data key v{created.version}")
