"""The console's roles, as Django groups: what each may do."""

from __future__ import annotations

GATEWAY_ADMIN = "Gateway admin"
AUDITOR = "Auditor"

# Gateway admins may do everything in these apps, except change the append-only audit log.
ADMIN_APPS = ("tenants", "billing", "auth")
AUDIT_LOG_READ_ONLY = ("view_auditevent", "export_auditevent")
NEVER_GRANTED = (
    "add_auditevent",
    "change_auditevent",
    "delete_auditevent",
    "change_auditchainhead",
    "add_auditchainhead",
    "delete_auditchainhead",
)


def grant_roles(group_model, permission_model) -> None:
    """Create or refresh both groups' permissions (used by the data migration)."""
    admin, _ = group_model.objects.get_or_create(name=GATEWAY_ADMIN)
    admin.permissions.set(
        permission_model.objects.filter(content_type__app_label__in=ADMIN_APPS).exclude(codename__in=NEVER_GRANTED)
    )
    auditor, _ = group_model.objects.get_or_create(name=AUDITOR)
    auditor.permissions.set(
        permission_model.objects.filter(content_type__app_label="tenants", codename__in=AUDIT_LOG_READ_ONLY)
    )
