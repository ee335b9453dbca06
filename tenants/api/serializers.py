from __future__ import annotations

from rest_framework import serializers

from billing.models import Plan
from tenants.models import ApiKey, AuditEvent, Tenant
from tenants.services import ALL_SCOPES


class TenantSerializer(serializers.ModelSerializer):
    plan = serializers.SlugRelatedField(slug_field="slug", queryset=Plan.objects.all(), required=False, allow_null=True)
    sensitive_attribute_keys = serializers.ListField(child=serializers.CharField(max_length=256), required=False)
    allowed_origins = serializers.ListField(
        child=serializers.CharField(max_length=300),
        required=False,
        help_text="Browser origins the tenant's keys may send from (CORS).",
    )
    retention_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)

    class Meta:
        model = Tenant
        fields = (
            "id",
            "name",
            "slug",
            "status",
            "plan",
            "retention_days",
            "limit_overrides",
            "sensitive_attribute_keys",
            "allowed_origins",
            "require_client_certificate",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "status", "created_at", "updated_at")
        extra_kwargs = {"slug": {"required": False, "validators": []}}


class ApiKeySerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    replaced_by = serializers.SlugRelatedField(slug_field="prefix", read_only=True)

    class Meta:
        model = ApiKey
        fields = (
            "id",
            "tenant",
            "name",
            "prefix",
            "scopes",
            "state",
            "expires_at",
            "last_used_at",
            "created_at",
            "revoked_at",
            "rotated_at",
            "grace_until",
            "replaced_by",
        )
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, default="default")
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES), default=lambda: list(ALL_SCOPES))
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class IssuedKeySerializer(ApiKeySerializer):
    secret = serializers.CharField(read_only=True, help_text="The key itself. Shown only in this response.")

    class Meta(ApiKeySerializer.Meta):
        fields = (*ApiKeySerializer.Meta.fields, "secret")
        read_only_fields = fields


class RotateSerializer(serializers.Serializer):
    grace_seconds = serializers.IntegerField(
        min_value=0, max_value=30 * 86400, default=86400, help_text="How long the old key keeps working."
    )


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = (
            "seq",
            "created_at",
            "actor",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "source_ip",
            "request_id",
            "prev_hash",
            "hash",
        )
        read_only_fields = fields
