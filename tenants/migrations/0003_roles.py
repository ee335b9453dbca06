"""Create the console roles: Gateway admin and Auditor."""

from django.contrib.auth.management import create_permissions
from django.db import migrations


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; the roles need them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    from tenants.roles import grant_roles

    grant_roles(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


def remove_roles(apps, schema_editor):
    from tenants.roles import AUDITOR, GATEWAY_ADMIN

    apps.get_model("auth", "Group").objects.filter(name__in=[GATEWAY_ADMIN, AUDITOR]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tenants", "0002_auditchainhead_auditevent_apikey_grace_until_and_more"),
        ("billing", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
