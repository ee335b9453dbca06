"""Services for TLS client certificates registered to tenants (mutual TLS): register and revoke,
each audited in the same transaction. Authentication looks them up by SHA-256 fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.db import transaction
from django.utils import timezone

from tenants import audit
from tenants.audit import Actor
from tenants.models import ClientCertificate, Tenant

CERTIFICATE_FIELDS = ("name", "sha256", "subject", "not_after", "revoked_at")


@dataclass(frozen=True)
class ParsedCertificate:
    sha256: str
    subject: str
    not_after: datetime
    is_ca: bool


def parse_pem(pem: str | bytes) -> ParsedCertificate:
    """The one certificate in `pem` (a leaf; any chain after it is ignored)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate: {exc}") from None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return ParsedCertificate(
        sha256=certificate.fingerprint(hashes.SHA256()).hex(),  # == gateway.tls.certificate_sha256(DER)
        subject=certificate.subject.rfc4514_string(),
        not_after=certificate.not_valid_after_utc,
        is_ca=is_ca,
    )


def _snapshot(certificate: ClientCertificate) -> dict:
    return {field: getattr(certificate, field) for field in CERTIFICATE_FIELDS}


def _repr(certificate: ClientCertificate, tenant: Tenant) -> str:
    return f"{certificate.name} (sha256 {certificate.sha256[:16]}…) of {tenant.slug}"


@transaction.atomic
def register_client_certificate(
    *, actor: Actor, tenant: Tenant, pem: str | bytes, name: str = "default"
) -> ClientCertificate:
    """Let the certificate in `pem` authenticate `tenant`. The gateway accepts it only if it
    also chains to GATEWAY_TLS_CLIENT_CA_FILE: the handshake checks that, not this."""
    if tenant.status == Tenant.Status.DELETED:
        raise ValueError(f"tenant {tenant.slug} is deleted; it cannot get client certificates")
    parsed = parse_pem(pem)
    if parsed.is_ca:
        raise ValueError(f"{parsed.subject} is a CA certificate; register the client's own certificate")
    if parsed.not_after <= timezone.now():
        raise ValueError(f"the certificate {parsed.subject} expired on {parsed.not_after:%Y-%m-%d}")
    existing = ClientCertificate.objects.select_related("tenant").filter(sha256=parsed.sha256).first()
    if existing is not None:
        raise ValueError(
            f"this certificate (sha256 {parsed.sha256[:16]}…) is already registered to tenant "
            f"{existing.tenant.slug} as {existing.name!r}"
        )
    certificate = ClientCertificate.objects.create(
        tenant=tenant, name=name, sha256=parsed.sha256, subject=parsed.subject[:500], not_after=parsed.not_after
    )
    audit.record(
        actor=actor,
        action="client_certificate.registered",
        target_type="client_certificate",
        target_id=certificate.id,
        target_repr=_repr(certificate, tenant),
        changes=audit.diff(None, _snapshot(certificate)),
    )
    return certificate


@transaction.atomic
def revoke_client_certificate(*, actor: Actor, certificate: ClientCertificate) -> ClientCertificate:
    if certificate.revoked_at is not None:
        raise ValueError(f"client certificate {certificate.name!r} is already revoked")
    before = _snapshot(certificate)
    certificate.revoked_at = timezone.now()
    certificate.save(update_fields=["revoked_at"])
    audit.record(
        actor=actor,
        action="client_certificate.revoked",
        target_type="client_certificate",
        target_id=certificate.id,
        target_repr=_repr(certificate, certificate.tenant),
        changes=audit.diff(before, _snapshot(certificate)),
    )
    return certificate
