"""manage.py verify_audit_export FILE MANIFEST: check an audit export offline."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from tenants.audit_export import verify_export


class Command(BaseCommand):
    help = (
        "Verify an audit export: the manifest's Ed25519 signature, the file's SHA-256, and the "
        "hash chain inside the file. Needs no database."
    )
    requires_system_checks: list = []

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("manifest", type=Path)
        parser.add_argument("--signature", type=Path, help="default: MANIFEST.sig")
        parser.add_argument(
            "--public-key",
            type=Path,
            help="the gateway's public key (GET /api/v1/audit/public-key); default: "
            "audit-public-key.pem next to the manifest",
        )

    def handle(self, *args, file: Path, manifest: Path, signature: Path | None, public_key: Path | None, **options):
        signature = signature or manifest.with_name(manifest.name + ".sig")
        key_given = public_key is not None
        public_key = public_key or manifest.with_name("audit-public-key.pem")
        for path in (file, manifest, signature, public_key):
            if not path.exists():
                raise CommandError(f"{path} does not exist")
        if not key_given:
            self.stderr.write(
                f"note: trusting the public key shipped in the export ({public_key}); "
                "compare it with the one the gateway publishes"
            )
        report = verify_export(
            file.read_bytes(), manifest.read_bytes(), signature.read_bytes(), public_key.read_bytes()
        )
        for note in report.notes:
            self.stdout.write(f"note: {note}")
        if not report.ok:
            raise CommandError("export does NOT verify:\n  " + "\n  ".join(report.problems))
        self.stdout.write(f"export OK: {file.name} matches its signed manifest and its chain is intact")
