"""Services that change tenants, keys and console tokens. Views, the admin, the API and
commands call these, never the ORM directly; every change is audited in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

import storage
from billing.limits import validate_overrides
from billing.services import change_plan
from storage.clickhouse import Store
from storage.tenant_data import delete_shared_rows, drop_tenant_partitions
from tenants import audit
from tenants.audit import Actor
from tenants.encryption import create_first_data_key, destroy_data_keys
from tenants.keys import generate_console_token, generate_key
from tenants.models import MAX_RETENTION_DAYS, ApiKey, ConsoleToken, Tenant
from tenants.origins import normalize_origin

ALL_SCOPES = [choice.value for choice in ApiKey.Scope]
TENANT_FIELDS = (
    "name",
    "slug",
    "status",
    "plan_id",
    "retention_days",
    "limit_overrides",
    "sensitive_attribute_keys",
    "allowed_origins",
    "require_client_certificate",
    "isolation",
)
KEY_FIELDS = ("name", "prefix", "scopes", "expires_at", "revoked_at", "rotated_at", "grace_until", "replaced_by_id")
DEFAULT_ROTATION_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class IssuedKey:
    """A key just created. `secret` is shown to the person once and then forgotten."""

    api_key: ApiKey
    secret: str


def snapshot(instance, fields: tuple[str, ...]) -> dict[str, Any]:
    return {field: getattr(instance, field) for field in fields}


def _validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown key scopes {unknown}; choose from {ALL_SCOPES}")
    if not scopes:
        raise ValueError(f"a key needs at least one scope of {ALL_SCOPES}")
    return sorted(set(scopes), key=ALL_SCOPES.index)


def _validate_tenant_fields(fields: dict[str, Any]) -> None:
    """Checks (and normalises, in place) the fields every way of saving a tenant passes through."""
    if "limit_overrides" in fields:
        validate_overrides(fields["limit_overrides"])
    if "retention_days" in fields:
        days = fields["retention_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
            raise ValueError(
                f"retention_days must be a whole number of days from 1 to {MAX_RETENTION_DAYS}, got {days!r}"
            )
    if "allowed_origins" in fields:
        origins = fields["allowed_origins"] or []
        if not isinstance(origins, list) or not all(isinstance(origin, str) for origin in origins):
            raise ValueError('allowed_origins must be a list of origins like "https://app.example.com"')
        fields["allowed_origins"] = sorted({normalize_origin(origin) for origin in origins})


@transaction.atomic
def create_tenant(*, actor: Actor, name: str, slug: str | None = None, **fields: Any) -> Tenant:
    slug = slug or slugify(name)
    if not slug:
        raise ValueError(f"cannot derive a slug from tenant name {name!r}; pass one explicitly")
    if Tenant.objects.filter(slug=slug).exists():
        raise ValueError(f"a tenant with slug {slug!r} already exists")
    plan = fields.pop("plan", None)
    _validate_tenant_fields(fields)
    tenant = Tenant.objects.create(name=name, slug=slug, **fields)
    create_first_data_key(tenant)
    audit.record(
        actor=actor,
        action="tenant.created",
        target_type="tenant",
        target_id=tenant.id,
        target_repr=tenant.slug,
        changes=audit.diff(None, snapshot(tenant, TENANT_FIELDS)),
    )
    if plan is not None:
        change_plan(actor=actor, tenant=tenant, plan=plan, at=tenant.created_at)
    return tenant


@transaction.atomic
def update_tenant(*, actor: Actor, tenant: Tenant, **fields: Any) -> Tenant:
    allowed = set(TENANT_FIELDS) - {"status"} | {"plan"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"cannot change {unknown} this way")
    if "slug" in fields and Tenant.objects.filter(slug=fields["slug"]).exclude(pk=tenant.pk).exists():
        raise ValueError(f"a tenant with slug {fields['slug']!r} already exists")
    _validate_tenant_fields(fields)
    if "plan" in fields:
        plan = fields.pop("plan")
        if plan != tenant.plan:
            change_plan(actor=actor, tenant=tenant, plan=plan)
    before = snapshot(tenant, TENANT_FIELDS)
    for field, value in fields.items():
        setattr(tenant, field, value)
    tenant.full_clean()
    tenant.save()
    changes = audit.diff(before, snapshot(tenant, TENANT_FIELDS))
    if changes["after"] or changes["before"]:
        audit.record(
            actor=actor,
            action="tenant.updated",
            target_type="tenant",
            target_id=tenant.id,
            target_repr=tenant.slug,
            changes=changes,
        )
    return tenant


def _set_status(*, actor: Actor, tenant: Tenant, status: str, action: str) -> Tenant:
    if tenant.status == Tenant.Status.DELETED:
        raise ValueError(f"tenant {tenant.slug} is deleted; its status cannot change")
    before = snapshot(tenant, TENANT_FIELDS)
    tenant.status = status
    tenant.save(update_fields=["status", "updated_at"])
    audit.record(
        actor=actor,
        action=action,
        target_type="tenant",
        target_id=tenant.id,
        target_repr=tenant.slug,
        changes=audit.diff(before, snapshot(tenant, TENANT_FIELDS)),
    )
    return tenant


@transaction.atomic
def suspend_tenant(*, actor: Actor, tenant: Tenant) -> Tenant:
    return _set_status(actor=actor, tenant=tenant, status=Tenant.Status.SUSPENDED, action="tenant.suspended")


@transaction.atomic
def activate_tenant(*, actor: Actor, tenant: Tenant) -> Tenant:
    return _set_status(actor=actor, tenant=tenant, status=Tenant.Status.ACTIVE, action="tenant.activated")


def delete_tenant(*, actor: Actor, tenant: Tenant, store: Store | None = None) -> Tenant:
    """Mark the tenant deleted, revoke its keys, destroy its data keys, drop its telemetry
    partitions from `store` (the process's) and start deleting its rows in shared ones."""
    with transaction.atomic():
        _set_status(actor=actor, tenant=tenant, status=Tenant.Status.DELETED, action="tenant.deleted")
        now = timezone.now()
        for key in tenant.api_keys.filter(revoked_at__isnull=True):
            _revoke(actor=actor, key=key, now=now)
    destroy_data_keys(actor=actor, tenant=tenant)  # crypto-shredding first: copies anywhere stay unreadable
    store = store or storage.get_store()
    dropped = drop_tenant_partitions(store, str(tenant.id))
    # Its rows in shared partitions: deleted in the background (the console shows how far).
    deleting = delete_shared_rows(store, str(tenant.id))
    audit.record(
        actor=actor,
        action="tenant.data_dropped",
        target_type="tenant",
        target_id=tenant.id,
        target_repr=tenant.slug,
        changes={"after": {"partitions_dropped": dropped, "shared_rows_deleting_from": deleting}, "before": {}},
    )
    return tenant


@transaction.atomic
def issue_key(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str = "default",
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    if tenant.status == Tenant.Status.DELETED:
        raise ValueError(f"tenant {tenant.slug} is deleted; it cannot get keys")
    scopes = _validate_scopes(list(scopes) if scopes is not None else list(ALL_SCOPES))
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("the expiry must be in the future")
    new_key = generate_key()
    api_key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=new_key.prefix, hashed_key=new_key.hashed, scopes=scopes, expires_at=expires_at
    )
    audit.record(
        actor=actor,
        action="key.created",
        target_type="api_key",
        target_id=api_key.id,
        target_repr=f"{api_key.prefix}… of {tenant.slug}",
        changes=audit.diff(None, snapshot(api_key, KEY_FIELDS)),
    )
    return IssuedKey(api_key=api_key, secret=new_key.secret)


@transaction.atomic
def create_tenant_with_key(*, actor: Actor, name: str, slug: str | None = None) -> IssuedKey:
    tenant = create_tenant(actor=actor, name=name, slug=slug)
    return issue_key(actor=actor, tenant=tenant)


def _revoke(*, actor: Actor, key: ApiKey, now: datetime) -> None:
    before = snapshot(key, KEY_FIELDS)
    key.revoked_at = now
    key.save(update_fields=["revoked_at"])
    audit.record(
        actor=actor,
        action="key.revoked",
        target_type="api_key",
        target_id=key.id,
        target_repr=f"{key.prefix}… of {key.tenant.slug}",
        changes=audit.diff(before, snapshot(key, KEY_FIELDS)),
    )


@transaction.atomic
def revoke_key(*, actor: Actor, key: ApiKey) -> ApiKey:
    if key.revoked_at is not None:
        raise ValueError(f"key {key.prefix}… is already revoked")
    _revoke(actor=actor, key=key, now=timezone.now())
    return key


@transaction.atomic
def rotate_key(*, actor: Actor, key: ApiKey, grace: timedelta = DEFAULT_ROTATION_GRACE) -> IssuedKey:
    """A new key with the same tenant, name, scopes and expiry. The old one keeps working for
    `grace`, then fails with a message naming the rotation."""
    if key.revoked_at is not None:
        raise ValueError(f"key {key.prefix}… is revoked; issue a new key instead")
    if key.rotated_at is not None:
        raise ValueError(f"key {key.prefix}… was already rotated on {key.rotated_at:%Y-%m-%d}")
    if grace < timedelta(0):
        raise ValueError("the grace period cannot be negative")
    new_key = generate_key()
    replacement = ApiKey.objects.create(
        tenant=key.tenant,
        name=key.name,
        prefix=new_key.prefix,
        hashed_key=new_key.hashed,
        scopes=key.scopes,
        expires_at=key.expires_at,
    )
    before = snapshot(key, KEY_FIELDS)
    now = timezone.now()
    key.rotated_at, key.grace_until, key.replaced_by = now, now + grace, replacement
    key.save(update_fields=["rotated_at", "grace_until", "replaced_by"])
    audit.record(
        actor=actor,
        action="key.rotated",
        target_type="api_key",
        target_id=key.id,
        target_repr=f"{key.prefix}… of {key.tenant.slug}",
        changes=audit.diff(before, snapshot(key, KEY_FIELDS)),
    )
    audit.record(
        actor=actor,
        action="key.created",
        target_type="api_key",
        target_id=replacement.id,
        target_repr=f"{replacement.prefix}… of {key.tenant.slug}",
        changes=audit.diff(None, snapshot(replacement, KEY_FIELDS)),
    )
    return IssuedKey(api_key=replacement, secret=new_key.secret)


@dataclass(frozen=True)
class IssuedToken:
    token: ConsoleToken
    secret: str


@transaction.atomic
def create_console_token(*, actor: Actor, user, name: str = "api") -> IssuedToken:
    new = generate_console_token()
    token = ConsoleToken.objects.create(user=user, name=name, prefix=new.prefix, hashed_token=new.hashed)
    audit.record(
        actor=actor,
        action="token.created",
        target_type="console_token",
        target_id=token.id,
        target_repr=f"{token.prefix}… of {user.get_username()}",
        changes={"before": {}, "after": {"name": name}},
    )
    return IssuedToken(token=token, secret=new.secret)


@transaction.atomic
def revoke_console_token(*, actor: Actor, token: ConsoleToken) -> ConsoleToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record(
            actor=actor,
            action="token.revoked",
            target_type="console_token",
            target_id=token.id,
            target_repr=f"{token.prefix}… of {token.user.get_username()}",
        )
    return token
