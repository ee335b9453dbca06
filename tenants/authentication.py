"""Turns the credentials on an OTLP request into a tenant, before anything else is read."""
from __future__ import annotations

import secrets
from datetime import timedelta
from dataclasses import dataclass

from django.utils import timezone

from billing.outcomes import Signal
from gateway.otlp.errors import IngestError, Reason
from tenants.keys import hash_key, is_well_formed, visible_prefix
from tenants.models import ApiKey, Tenant


@dataclass(frozen=True)
class Principal:
    """Who is sending: the tenant and the key it used."""

    tenant_id: str
    tenant_slug: str
    retention_days: int
    key_id: int
    key_prefix: str
    plan_id: int | None = None
    limit_overrides: dict | None = None


# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _touch(key: ApiKey, now) -> None:
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)


def credentials_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The API key from `Authorization: Bearer <key>` or `x-api-key: <key>`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


def _check_usable(match: ApiKey, signal: Signal, now) -> None:
    if match.revoked_at is not None:
        raise IngestError(Reason.UNAUTHENTICATED, f"API key {match.prefix}… was revoked")
    if match.grace_until is not None and match.grace_until <= now:
        replacement = f" ({match.replaced_by.prefix}…)" if match.replaced_by_id else ""
        raise IngestError(
            Reason.UNAUTHENTICATED,
            f"API key {match.prefix}… was rotated on {match.rotated_at:%Y-%m-%d}; use the new key{replacement}",
        )
    if match.expires_at is not None and match.expires_at <= now:
        raise IngestError(
            Reason.UNAUTHENTICATED,
            f"API key {match.prefix}… expired on {match.expires_at:%Y-%m-%d}; issue a new key",
        )
    tenant = match.tenant
    if tenant.status != Tenant.Status.ACTIVE:
        raise IngestError(Reason.PERMISSION_DENIED, f"tenant {tenant.slug} is {tenant.status}")
    if signal.value not in match.scopes:
        raise IngestError(
            Reason.PERMISSION_DENIED,
            f"API key {match.prefix}… may not write {signal.value}; its scopes are {match.scopes}",
        )


def authenticate(api_key: str | None, signal: Signal) -> Principal:
    if not api_key:
        raise IngestError(
            Reason.UNAUTHENTICATED,
            "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
        )
    if not is_well_formed(api_key):
        raise IngestError(Reason.UNAUTHENTICATED, "invalid API key: not a key issued by this gateway")
    hashed = hash_key(api_key)
    candidates = ApiKey.objects.select_related("tenant", "replaced_by").filter(prefix=visible_prefix(api_key))
    match = None
    for candidate in candidates:
        if secrets.compare_digest(candidate.hashed_key, hashed):
            match = candidate
    if match is None:
        raise IngestError(Reason.UNAUTHENTICATED, "invalid API key: unknown key")
    now = timezone.now()
    try:
        _check_usable(match, signal, now)
    except IngestError as exc:
        exc.tenant_id = str(match.tenant_id)  # refused, but whose it was is known: meter it
        raise
    tenant = match.tenant
    _touch(match, now)
    return Principal(
        tenant_id=str(tenant.id),
        tenant_slug=tenant.slug,
        retention_days=tenant.retention_days,
        key_id=match.id,
        key_prefix=match.prefix,
        plan_id=tenant.plan_id,
        limit_overrides=tenant.limit_overrides or None,
    )
