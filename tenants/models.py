"""Tenants, their API keys, console API tokens, and the append-only audit log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from vocabulary import Isolation

MAX_RETENTION_DAYS = 3650


class Tenant(models.Model):
    """A customer whose telemetry lives in its own ClickHouse partitions.

    `id` is the TenantId stamped on every stored row; it never changes.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        DELETED = "deleted", "Deleted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    plan = models.ForeignKey("billing.Plan", null=True, blank=True, on_delete=models.PROTECT, related_name="tenants")
    retention_days = models.PositiveSmallIntegerField(
        default=settings.GATEWAY_DEFAULT_RETENTION_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)],
        help_text="Days this tenant's telemetry is kept in ClickHouse (1 to 3650).",
    )
    limit_overrides = models.JSONField(
        default=dict,
        blank=True,
        help_text='Overrides of the plan\'s limits, e.g. {"max_request_bytes": 1048576, '
        '"traces": {"items_per_second": 5000}}.',
    )
    sensitive_attribute_keys = models.JSONField(
        default=list,
        blank=True,
        help_text="Attribute keys whose values are encrypted at rest, in addition to the default list.",
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text="Browser origins this tenant's keys may send from (CORS), e.g. "
        '["https://app.example.com", "https://*.example.com"]. A request from a browser whose '
        "origin is not listed is refused; SDKs and Collectors send no origin and are not affected.",
    )
    require_client_certificate = models.BooleanField(
        default=False,
        help_text="Accept only requests that carry both one of this tenant's API keys and a TLS client "
        "certificate registered to it (mutual TLS). Otherwise either one is enough.",
    )
    isolation = models.CharField(
        max_length=16,
        blank=True,
        choices=[(i.value, i.label) for i in Isolation],
        help_text="Overrides the plan's isolation for this tenant; empty: the plan's (dedicated without a "
        "plan). New data follows a change; stored data stays where it is.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    @property
    def effective_isolation(self) -> Isolation:
        """Where its new rows go: its own setting, else its plan's, else dedicated."""
        if self.isolation:
            return Isolation(self.isolation)
        if self.plan_id is not None:
            return Isolation(self.plan.isolation)
        return Isolation.DEDICATED


class ApiKey(models.Model):
    """A per-tenant secret used by exporters. Only its SHA-256 is stored."""

    class Scope(models.TextChoices):
        TRACES = "traces", "Traces"
        METRICS = "metrics", "Metrics"
        LOGS = "logs", "Logs"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, default="default")
    prefix = models.CharField(max_length=32, db_index=True, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="Signals this key may write.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # After a rotation the old key keeps working until this time, then fails with a message.
    grace_until = models.DateTimeField(null=True, blank=True, editable=False)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="replaces"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.rotated_at:
            return "rotated"
        return "active"


class ClientCertificate(models.Model):
    """A TLS client certificate that authenticates its tenant in place of (or, by the tenant's
    policy, together with) an API key. Known by the SHA-256 of its DER form."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="client_certificates")
    name = models.CharField(max_length=200, default="default")
    sha256 = models.CharField(
        max_length=64,
        unique=True,
        editable=False,
        help_text="SHA-256 of the certificate's DER encoding, lowercase hex.",
    )
    subject = models.CharField(max_length=500, editable=False)
    not_after = models.DateTimeField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (sha256 {self.sha256[:16]}…)"


class ConsoleToken(models.Model):
    """A token for the REST API, belonging to a console user. Only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_tokens")
    name = models.CharField(max_length=200, default="api")
    prefix = models.CharField(max_length=32, db_index=True, editable=False)
    hashed_token = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "console API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("the audit log is append-only: entries cannot be updated")

    def delete(self):
        raise PermissionError("the audit log is append-only: entries cannot be deleted")


class AuditEvent(models.Model):
    """One recorded state change. Entries form a hash chain: each `hash` covers the entry's
    canonical form including the previous entry's hash (see tenants.audit)."""

    seq = models.PositiveBigIntegerField(unique=True, editable=False)
    created_at = models.DateTimeField(editable=False, db_index=True)
    actor = models.CharField(max_length=200, editable=False, db_index=True)
    action = models.CharField(max_length=64, editable=False, db_index=True)
    target_type = models.CharField(max_length=64, editable=False, db_index=True)
    target_id = models.CharField(max_length=64, editable=False, blank=True, db_index=True)
    target_repr = models.CharField(max_length=300, editable=False, blank=True)
    changes = models.JSONField(default=dict, editable=False)
    source_ip = models.CharField(max_length=64, editable=False, blank=True)
    request_id = models.CharField(max_length=64, editable=False, blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False, unique=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        permissions = [("export_auditevent", "Can export the audit log")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_repr or self.target_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("the audit log is append-only: entries cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("the audit log is append-only: entries cannot be deleted")


class AuditChainHead(models.Model):
    """The newest entry of the chain, one row, locked while an entry is appended; also lets
    verification notice entries removed from the end."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)


class TenantDataKey(models.Model):
    """A tenant's AES-256-GCM data key, stored only wrapped by the master key (which is never in
    the database). Versions let new data use a new key while old data stays readable; deleting
    the tenant destroys every version (crypto-shredding)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="data_keys")
    version = models.PositiveIntegerField()
    wrapped_key = models.BinaryField(editable=False)
    master_key_id = models.CharField(max_length=32, editable=False, help_text="Which master key wrapped it.")
    created_at = models.DateTimeField(auto_now_add=True)
    destroyed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        unique_together = [("tenant", "version")]
        ordering = ["tenant", "-version"]

    def __str__(self) -> str:
        return f"data key v{self.version} of {self.tenant.slug}"
