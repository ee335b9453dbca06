"""manage.py create_api_token USERNAME: a REST API token for a console user, printed once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tenants.audit import Actor
from tenants.services import create_console_token


class Command(BaseCommand):
    help = "Create a REST API token for a console user (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="api")

    def handle(self, *args, username: str, name: str, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no console user {username!r}") from None
        issued = create_console_token(actor=Actor.system("create_api_token"), user=user, name=name)
        self.stdout.write(f"API token: {issued.secret}")
        self.stdout.write("Send it as 'Authorization: Bearer <token>' to /api/v1/. It is not shown again.")
