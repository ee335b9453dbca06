"""Turns the credentials on an OTLP request (an API key, the TLS client certificate, or both) into a
tenant, before anything else is read."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from tenants.keys import hash_key, is_well_formed, visible_prefix
from tenants.models import ApiKey, ClientCertificate, Tenant
from tenants.origins import origin_matches
from vocabulary import Isolation, Reason, Refusal, Signal


class CredentialsRefused(Refusal):
    """The request's key or certificate does not let it write: unauthenticated (401) or not
    permitted (403). `tenant_id` says whose credentials they were, where that is known."""


@dataclass(frozen=True)
class Principal:
    """Who is sending: the tenant and the key and/or client certificate it used."""

    tenant_id: str
    tenant_slug: str
    retention_days: int
    key_id: int | None  # None when a client certificate alone authenticated the request
    key_prefix: str
    plan_id: int | None = None
    limit_overrides: dict | None = None
    sensitive_attribute_keys: tuple[str, ...] = ()
    client_certificate_id: int | None = None
    allowed_origins: tuple[str, ...] = ()  # browser origins the tenant's keys may send from
    isolation: Isolation = Isolation.DEDICATED  # where its new rows are stored (Tenant.effective_isolation)


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
    """Refused, but whose key it was is known: the refusal is metered to that tenant."""

    def refused(reason: Reason, message: str) -> CredentialsRefused:
        return CredentialsRefused(reason, message, tenant_id=str(match.tenant_id))

    if match.revoked_at is not None:
        raise refused(Reason.UNAUTHENTICATED, f"API key {match.prefix}… was revoked")
    if match.grace_until is not None and match.grace_until <= now:
        # Nothing of the new key: whoever holds the old one may not be who should get the new.
        raise refused(
            Reason.UNAUTHENTICATED,
            f"API key {match.prefix}… was rotated on {match.rotated_at:%Y-%m-%d}; "
            "use the key that replaced it (the tenant's admin has it)",
        )
    if match.expires_at is not None and match.expires_at <= now:
        raise refused(
            Reason.UNAUTHENTICATED, f"API key {match.prefix}… expired on {match.expires_at:%Y-%m-%d}; issue a new key"
        )
    tenant = match.tenant
    if tenant.status != Tenant.Status.ACTIVE:
        raise refused(Reason.PERMISSION_DENIED, f"tenant {tenant.slug} is {tenant.status}")
    if signal.value not in match.scopes:
        raise refused(
            Reason.PERMISSION_DENIED,
            f"API key {match.prefix}… may not write {signal.value}; its scopes are {match.scopes}",
        )


def _registered_certificate(sha256: str | None, now) -> ClientCertificate | None:
    """The registered certificate the TLS handshake verified; None when there was none or it is
    not registered (it then counts for nothing). Revoked and expired ones are refused."""
    if not sha256:
        return None
    certificate = ClientCertificate.objects.select_related("tenant", "tenant__plan").filter(sha256=sha256).first()
    if certificate is None:
        return None
    label = f"client certificate {certificate.name!r} (sha256 {sha256[:16]}…)"
    tenant_id = str(certificate.tenant_id)
    if certificate.revoked_at is not None:
        raise CredentialsRefused(
            Reason.UNAUTHENTICATED, f"{label} was revoked on {certificate.revoked_at:%Y-%m-%d}", tenant_id=tenant_id
        )
    if certificate.not_after <= now:
        raise CredentialsRefused(
            Reason.UNAUTHENTICATED,
            f"{label} expired on {certificate.not_after:%Y-%m-%d}; register its renewal",
            tenant_id=tenant_id,
        )
    return certificate


def _check_certificate_policy(tenant: Tenant, certificate: ClientCertificate | None, presented: bool) -> None:
    """A request carrying an API key: its client certificate, if registered, must be the same
    tenant's; and a tenant that requires one must get one."""
    if certificate is not None and certificate.tenant_id != tenant.id:
        raise CredentialsRefused(
            Reason.PERMISSION_DENIED,
            f"the client certificate {certificate.name!r} is registered to tenant {certificate.tenant.slug}, "
            f"but the API key belongs to tenant {tenant.slug}; send one tenant's credentials only",
            tenant_id=str(tenant.id),
        )
    if certificate is None and tenant.require_client_certificate:
        detail = "; the certificate presented is not registered to it" if presented else ""
        raise CredentialsRefused(
            Reason.PERMISSION_DENIED,
            f"tenant {tenant.slug} requires a TLS client certificate registered to it as well as an API key{detail}",
            tenant_id=str(tenant.id),
        )


def _certificate_principal(certificate: ClientCertificate) -> Principal:
    tenant = certificate.tenant
    if tenant.status != Tenant.Status.ACTIVE:
        raise CredentialsRefused(
            Reason.PERMISSION_DENIED, f"tenant {tenant.slug} is {tenant.status}", tenant_id=str(tenant.id)
        )
    if tenant.require_client_certificate:
        raise CredentialsRefused(
            Reason.PERMISSION_DENIED,
            f"tenant {tenant.slug} requires an API key as well as its client certificate",
            tenant_id=str(tenant.id),
        )
    return Principal(
        tenant_id=str(tenant.id),
        tenant_slug=tenant.slug,
        retention_days=tenant.retention_days,
        key_id=None,
        key_prefix="",
        plan_id=tenant.plan_id,
        limit_overrides=tenant.limit_overrides or None,
        sensitive_attribute_keys=tuple(tenant.sensitive_attribute_keys or ()),
        client_certificate_id=certificate.id,
        allowed_origins=tuple(tenant.allowed_origins or ()),
        isolation=tenant.effective_isolation,
    )


def presented_prefix(api_key: str | None) -> str:
    """The visible prefix of a key as presented, for the console's refusal log: '' when it is not
    one of ours in form (whatever else a sender put there is not kept)."""
    return visible_prefix(api_key) if api_key and is_well_formed(api_key) else ""


def refuse_without_lookup(api_key: str | None) -> CredentialsRefused | None:
    """The refusal for a key that is missing or not one of ours, found without the database (the
    gRPC server asks before it reads a call's message); None when only a lookup can tell."""
    if not api_key:
        return CredentialsRefused(
            Reason.UNAUTHENTICATED, "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        )
    if not is_well_formed(api_key):
        return CredentialsRefused(Reason.UNAUTHENTICATED, "invalid API key: not a key issued by this gateway")
    return None


def authenticate(api_key: str | None, signal: Signal, *, client_cert_sha256: str | None = None) -> Principal:
    """`client_cert_sha256`: SHA-256 (hex) of the DER client certificate the TLS handshake
    verified against the client CA, None without mutual TLS."""
    now = timezone.now()
    certificate = _registered_certificate(client_cert_sha256, now)
    if not api_key:
        if certificate is not None:
            return _certificate_principal(certificate)
        if client_cert_sha256:
            raise CredentialsRefused(
                Reason.UNAUTHENTICATED,
                f"the client certificate (sha256 {client_cert_sha256[:16]}…) is not registered to a tenant: "
                "register it (manage.py register_client_certificate) or send an API key",
            )
    refusal = refuse_without_lookup(api_key)
    if refusal is not None:
        raise refusal
    hashed = hash_key(api_key)
    candidates = ApiKey.objects.select_related("tenant", "tenant__plan").filter(prefix=visible_prefix(api_key))
    match = None
    for candidate in candidates:
        if secrets.compare_digest(candidate.hashed_key, hashed):
            match = candidate
    if match is None:
        raise CredentialsRefused(Reason.UNAUTHENTICATED, "invalid API key: unknown key")
    _check_usable(match, signal, now)
    _check_certificate_policy(match.tenant, certificate, presented=bool(client_cert_sha256))
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
        sensitive_attribute_keys=tuple(tenant.sensitive_attribute_keys or ()),
        client_certificate_id=certificate.id if certificate is not None else None,
        allowed_origins=tuple(tenant.allowed_origins or ()),
        isolation=tenant.effective_isolation,
    )


def check_origin(principal: Principal, origin: str, *, gateway_allows: tuple[str, ...] | None = None) -> None:
    """A browser request (it carries an Origin) must come from one of the tenant's own sites,
    and, when `gateway_allows` is given, from one the gateway lets send at all."""
    if gateway_allows is not None and not any(origin_matches(pattern, origin) for pattern in gateway_allows):
        raise CredentialsRefused(
            Reason.PERMISSION_DENIED,
            f"browser requests from {origin[:200]} are not allowed by this gateway (GATEWAY_CORS_ALLOWED_ORIGINS)",
            tenant_id=principal.tenant_id,
        )
    if any(origin_matches(pattern, origin) for pattern in principal.allowed_origins):
        return
    listed = ", ".join(principal.allowed_origins) or "none"
    raise CredentialsRefused(
        Reason.PERMISSION_DENIED,
        f"tenant {principal.tenant_slug} does not allow browser requests from {origin[:200]} "
        f"(its allowed origins: {listed}); a tenant admin adds the site to the tenant's allowed origins",
        tenant_id=principal.tenant_id,
    )
