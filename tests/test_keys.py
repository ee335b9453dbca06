"""API keys: format, checksum, hashed storage, and what authentication says about each state."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from tenants import keys
from tenants.audit import Actor
from tenants.authentication import CredentialsRefused, authenticate, credentials_from_headers
from tenants.models import ApiKey, Tenant
from tenants.services import create_tenant_with_key, issue_key
from vocabulary import Reason, Signal

SYSTEM = Actor.system("tests")


def test_key_format_and_checksum():
    new = keys.generate_key()
    assert new.secret.startswith("otlpgw_") and len(new.secret) == keys.KEY_LENGTH
    assert keys.is_well_formed(new.secret)
    typo = new.secret[:-8] + ("a" if new.secret[-8] != "a" else "b") + new.secret[-7:]
    assert not keys.is_well_formed(typo)
    assert not keys.is_well_formed(new.secret + "x")
    assert not keys.is_well_formed("ghp_" + new.secret[7:])
    assert new.prefix == new.secret[:15] and new.hashed == keys.hash_key(new.secret)
    assert keys.generate_key().secret != new.secret


@pytest.mark.django_db
def test_only_the_hash_is_stored():
    issued = create_tenant_with_key(actor=SYSTEM, name="Acme")
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    row = ApiKey.objects.filter(pk=stored.pk).values().get()
    assert issued.secret not in str(row)
    assert stored.hashed_key == keys.hash_key(issued.secret)
    assert issued.secret.startswith(stored.prefix)


@pytest.mark.django_db
def test_create_tenant_command_prints_key_once():
    out = StringIO()
    call_command("create_tenant", "Acme Corp", stdout=out)
    printed = [word for word in out.getvalue().split() if word.startswith("otlpgw_")]
    assert len(printed) == 1
    tenant = Tenant.objects.get(slug="acme-corp")
    assert authenticate(printed[0], Signal.TRACES).tenant_id == str(tenant.id)
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_tenant", "Acme Corp", stdout=StringIO())


@pytest.mark.django_db
def test_issue_key_command():
    create_tenant_with_key(actor=SYSTEM, name="Beta", slug="beta")
    out = StringIO()
    call_command("issue_key", "beta", "--scopes", "logs", stdout=out)
    secret = next(word for word in out.getvalue().split() if word.startswith("otlpgw_"))
    assert authenticate(secret, Signal.LOGS).tenant_slug == "beta"
    with pytest.raises(CommandError, match="unknown key scopes"):
        call_command("issue_key", "beta", "--scopes", "profiles", stdout=StringIO())
    with pytest.raises(CommandError, match="no tenant"):
        call_command("issue_key", "nobody", stdout=StringIO())


@pytest.mark.parametrize(
    "authorization, x_api_key, expected",
    [
        ("Bearer abc", None, "abc"),
        ("bearer  abc ", None, "abc"),
        (None, "abc", "abc"),
        ("Basic dXNlcg==", "abc", "abc"),
        ("Bearer ", None, None),
        (None, None, None),
    ],
)
def test_credentials_from_headers(authorization, x_api_key, expected):
    assert credentials_from_headers(authorization, x_api_key) == expected


def _refused(secret, signal=Signal.TRACES) -> CredentialsRefused:
    with pytest.raises(CredentialsRefused) as caught:
        authenticate(secret, signal)
    return caught.value


@pytest.mark.django_db
def test_authentication_states():
    issued = create_tenant_with_key(actor=SYSTEM, name="Gamma")
    key = issued.api_key
    assert _refused(None).reason is Reason.UNAUTHENTICATED
    assert _refused(keys.generate_key().secret).message == "invalid API key: unknown key"

    key.expires_at = timezone.now() - timedelta(days=1)
    key.save()
    error = _refused(issued.secret)
    assert error.reason is Reason.UNAUTHENTICATED and "expired on" in error.message

    key.expires_at, key.revoked_at = None, timezone.now()
    key.save()
    error = _refused(issued.secret)
    assert error.reason is Reason.UNAUTHENTICATED and "revoked" in error.message

    key.revoked_at = None
    key.save()
    tenant = key.tenant
    tenant.status = Tenant.Status.SUSPENDED
    tenant.save()
    error = _refused(issued.secret)
    assert error.reason is Reason.PERMISSION_DENIED and "suspended" in error.message
    assert issued.secret not in error.message

    tenant.status = Tenant.Status.ACTIVE
    tenant.save()
    assert authenticate(issued.secret, Signal.METRICS).tenant_id == str(tenant.id)


@pytest.mark.django_db
def test_issue_key_rejects_unknown_scope():
    issued = create_tenant_with_key(actor=SYSTEM, name="Delta")
    with pytest.raises(ValueError, match="unknown key scopes"):
        issue_key(actor=SYSTEM, tenant=issued.api_key.tenant, scopes=["traces", "profiles"])
