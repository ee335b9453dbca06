from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _refresh_roles(sender, **kwargs) -> None:
    """Models added by later migrations get their permissions after the roles migration ran;
    grant them to the roles after every migrate (idempotent)."""
    from django.contrib.auth.models import Group, Permission

    from tenants.roles import grant_roles

    grant_roles(Group, Permission)


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from tenants import signals  # noqa: F401  (connects the audit receivers)

        post_migrate.connect(_refresh_roles, sender=self, dispatch_uid="tenants-refresh-roles")
