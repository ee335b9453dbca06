"""The console (Django admin): keys shown once, revoke and rotate actions, roles, the read-only
audit log, and the brute-force-limited, audited login."""

from __future__ import annotations

import re

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from tenants.audit import Actor
from tenants.models import ApiKey, AuditEvent, Tenant
from tenants.roles import AUDITOR, GATEWAY_ADMIN
from tenants.services import create_tenant_with_key

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
SECRET = re.compile(r"otlpgw_[0-9A-Za-z]{36}")


def _login(user) -> Client:
    client = Client()
    response = client.post(
        reverse("admin:login"), {"username": user.username, "password": user.raw_password, "next": "/admin/"}
    )
    assert response.status_code == 302, response.content[:500]
    return client


def test_admin_creates_tenant_and_key_and_sees_it_once(console_user):
    client = _login(console_user(GATEWAY_ADMIN))
    response = client.post(
        reverse("admin:tenants_tenant_add"),
        {"name": "Acme", "slug": "acme", "retention_days": 30, "sensitive_attribute_keys": '["user.email"]'},
    )
    # The new tenant's first key, shown once on the page that answers the form.
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    tenant = Tenant.objects.get(slug="acme")
    assert tenant.sensitive_attribute_keys == ["user.email"]
    first = SECRET.findall(response.content.decode())
    assert len(set(first)) == 1 and ApiKey.objects.get(tenant=tenant).prefix in first[0]
    assert first[0] not in client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()

    page = client.post(
        reverse("admin:tenants_apikey_add"), {"tenant": tenant.pk, "name": "prod", "scopes": ["traces", "metrics"]}
    )
    assert page.status_code == 200 and "no-store" in page["Cache-Control"]
    secrets_shown = SECRET.findall(page.content.decode())
    assert len(set(secrets_shown)) == 1
    key = ApiKey.objects.get(tenant=tenant, name="prod")
    assert secrets_shown[0].startswith(key.prefix) and key.scopes == ["traces", "metrics"]
    for url in (reverse("admin:tenants_apikey_changelist"), reverse("admin:tenants_apikey_change", args=[key.pk])):
        assert secrets_shown[0] not in client.get(url).content.decode()
    assert list(AuditEvent.objects.filter(actor="user:gateway-admin").values_list("action", flat=True).order_by("seq"))[
        -3:
    ] == ["tenant.created", "key.created", "key.created"]


def test_favicon_is_served():
    response = Client().get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/x-icon"
    assert response.content[:4] == b"\x00\x00\x01\x00"  # an ICO file's header


def test_revoke_and_rotate_actions(console_user):
    issued = create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    client = _login(console_user(GATEWAY_ADMIN))
    changelist = reverse("admin:tenants_apikey_changelist")
    page = client.post(changelist, {"action": "rotate_keys", "_selected_action": [issued.api_key.pk]})
    assert page.status_code == 200
    (new_secret,) = set(SECRET.findall(page.content.decode()))
    assert new_secret != issued.secret
    replacement = ApiKey.objects.get(replaces=issued.api_key)
    assert new_secret.startswith(replacement.prefix)
    response = client.post(changelist, {"action": "revoke_keys", "_selected_action": [replacement.pk]}, follow=True)
    assert "1 key(s) revoked" in response.content.decode()
    assert ApiKey.objects.get(pk=replacement.pk).state == "revoked"


def test_suspend_action_and_tenant_edit_are_audited(console_user):
    issued = create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    client = _login(console_user(GATEWAY_ADMIN))
    client.post(
        reverse("admin:tenants_tenant_changelist"),
        {"action": "suspend_tenants", "_selected_action": [issued.api_key.tenant.pk]},
    )
    assert Tenant.objects.get(slug="acme").status == "suspended"
    client.post(
        reverse("admin:tenants_tenant_change", args=[issued.api_key.tenant.pk]),
        {"name": "Acme Inc", "slug": "acme", "retention_days": 45, "sensitive_attribute_keys": "[]"},
    )
    event = AuditEvent.objects.filter(action="tenant.updated").latest("seq")
    assert event.changes == {
        "before": {"name": "Acme", "retention_days": 30},
        "after": {"name": "Acme Inc", "retention_days": 45},
    }


def test_audit_log_is_read_only_for_everyone(console_user):
    create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    event = AuditEvent.objects.first()
    for role in (GATEWAY_ADMIN, AUDITOR):
        client = _login(console_user(role, username=f"{role}-reader".replace(" ", "-")))
        assert client.get(reverse("admin:tenants_auditevent_changelist")).status_code == 200
        view = client.get(reverse("admin:tenants_auditevent_change", args=[event.pk]))
        assert view.status_code == 200 and 'name="_save"' not in view.content.decode()
        assert (
            client.post(reverse("admin:tenants_auditevent_change", args=[event.pk]), {"actor": "x"}).status_code == 403
        )
        assert (
            client.post(reverse("admin:tenants_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
        )
        assert client.get(reverse("admin:tenants_auditevent_add")).status_code == 403


def test_auditor_gets_403_on_every_change_view(console_user):
    issued = create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    auditor = console_user(AUDITOR)
    client = _login(auditor)
    tenant_pk, key_pk = issued.api_key.tenant.pk, issued.api_key.pk
    for url in (
        reverse("admin:tenants_tenant_add"),
        reverse("admin:tenants_tenant_change", args=[tenant_pk]),
        reverse("admin:tenants_tenant_delete", args=[tenant_pk]),
        reverse("admin:tenants_apikey_add"),
        reverse("admin:auth_user_add"),
        reverse("admin:auth_user_change", args=[auditor.pk]),
        reverse("admin:auth_group_add"),
        reverse("admin:tenants_consoletoken_add"),
        reverse("admin:billing_plan_add"),
    ):
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"name": "x", "post": "yes"}).status_code == 403, url
    for changelist, action, pk in (
        ("admin:tenants_apikey_changelist", "revoke_keys", key_pk),
        ("admin:tenants_apikey_changelist", "rotate_keys", key_pk),
        ("admin:tenants_tenant_changelist", "suspend_tenants", tenant_pk),
    ):
        assert client.post(reverse(changelist), {"action": action, "_selected_action": [pk]}).status_code == 403
    assert Tenant.objects.get(pk=tenant_pk).status == "active"
    assert ApiKey.objects.get(pk=key_pk).state == "active"


def test_auditor_exports_from_the_console(console_user):
    create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    client = _login(console_user(AUDITOR))
    assert "Export (signed)" in client.get(reverse("admin:tenants_auditevent_changelist")).content.decode()
    response = client.post(reverse("admin:tenants_auditevent_export"), {"format": "jsonl"})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert AuditEvent.objects.filter(action="audit.exported", actor="user:auditor").exists()


def test_role_changes_and_logins_are_audited(console_user):
    from django.contrib.auth.models import Group

    admin_user = console_user(GATEWAY_ADMIN)
    client = _login(admin_user)
    target = console_user(AUDITOR, username="bob")
    client.post(
        reverse("admin:auth_user_change", args=[target.pk]),
        {
            "username": "bob",
            "is_active": "on",
            "is_staff": "on",
            "groups": [Group.objects.get(name=GATEWAY_ADMIN).pk],
            "date_joined_0": "2026-11-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-11-01",
            "initial-date_joined_1": "00:00:00",
        },
    )
    changes = [
        e.changes["after"]
        for e in AuditEvent.objects.filter(action="user.roles_changed", target_repr="bob", actor="user:gateway-admin")
    ]
    assert {"added_roles": [GATEWAY_ADMIN], "removed_roles": []} in changes
    assert {"added_roles": [], "removed_roles": [AUDITOR]} in changes
    assert AuditEvent.objects.filter(action="auth.login", actor="user:gateway-admin").exists()


@override_settings(GATEWAY_ADMIN_LOGIN_RATE="3/m")
def test_login_is_rate_limited_and_failures_are_audited(console_user, ratelimit_clock):
    user = console_user(GATEWAY_ADMIN)
    client = Client()
    for _ in range(3):
        response = client.post(reverse("admin:login"), {"username": user.username, "password": "wrong"})
        assert response.status_code == 200  # the form again, with an error
    throttled = client.post(reverse("admin:login"), {"username": user.username, "password": user.raw_password})
    assert throttled.status_code == 429 and "Too many sign-in attempts" in throttled.content.decode()
    assert throttled["Retry-After"] == "60"
    failures = AuditEvent.objects.filter(action="auth.login_failed", target_repr=user.username)
    assert failures.count() == 3 and failures.first().source_ip == "127.0.0.1"
    assert "wrong" not in str(list(failures.values()))
    assert AuditEvent.objects.filter(action="auth.login_throttled").count() == 1
    other_address = Client(REMOTE_ADDR="198.51.100.9")
    assert (
        other_address.post(
            reverse("admin:login"), {"username": user.username, "password": user.raw_password}
        ).status_code
        == 302
    )


def test_roles_cover_models_added_after_the_roles_migration():
    from django.contrib.auth.models import Group

    admin_codenames = set(Group.objects.get(name=GATEWAY_ADMIN).permissions.values_list("codename", flat=True))
    assert {"view_invoice", "change_invoice", "view_plansignal", "view_clientcertificate"} <= admin_codenames
    assert not {"change_auditevent", "delete_auditevent"} & admin_codenames
    assert set(Group.objects.get(name=AUDITOR).permissions.values_list("codename", flat=True)) == {
        "view_auditevent",
        "export_auditevent",
    }
