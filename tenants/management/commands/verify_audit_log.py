"""manage.py verify_audit_log: walk the audit hash chain and name the first broken entry."""

from django.core.management.base import BaseCommand, CommandError

from tenants.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit log's hash chain; exits non-zero at the first broken entry."

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(f"audit log chain is BROKEN after {report.checked} good entries: {report.problem}")
        self.stdout.write(f"audit log chain OK: {report.checked} entries verified")
