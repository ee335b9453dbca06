"""manage.py rotate_master_key --new-key-file PATH: rewrap every tenant data key under a new
master key. Stored telemetry is not touched. Afterwards point GATEWAY_MASTER_KEY(_FILE) at the
new key and restart."""

import base64
import secrets
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tenants.audit import Actor
from tenants.encryption import decode_master_key, load_master_key, master_key_id, rewrap_all


class Command(BaseCommand):
    help = "Rewrap all tenant data keys under a new master key (the key itself is never printed)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--new-key-file",
            type=Path,
            required=True,
            help="file with the new key (base64 of 32 bytes); created if it does not exist",
        )

    def handle(self, *args, new_key_file: Path, **options):
        if not new_key_file.exists():
            new_key_file.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
            new_key_file.chmod(0o600)
            self.stdout.write(f"wrote a new master key to {new_key_file}")
        try:
            new_master = decode_master_key(new_key_file.read_bytes(), str(new_key_file))
            old_master = load_master_key()
        except (ValueError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        if new_master == old_master:
            raise CommandError("the new master key is the current one")
        count = rewrap_all(actor=Actor.system("rotate_master_key"), old_master=old_master, new_master=new_master)
        self.stdout.write(
            f"rewrapped {count} data key(s) under master key {master_key_id(new_master)}; "
            "now set GATEWAY_MASTER_KEY_FILE (or GATEWAY_MASTER_KEY) to the new key and restart"
        )
