from __future__ import annotations

from rest_framework import serializers

from billing.limits import MAX_LIMIT
from billing.models import Plan
from tenants.models import ApiKey, AuditEvent, Tenant
from tenants.services import ALL_SCOPES


def _limit(name: str) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=MAX_LIMIT, required=False, help_text=f"{name}; 0: no limit")


class _Strict(serializers.Serializer):
    """An object whose every key is a known one: a misspelt limit is refused, not ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({key: f"unknown limit; use {list(self.fields)}" for key in unknown})
        return dict(super().to_internal_value(data))


class SignalLimitsSerializer(_Strict):
    items_per_second = _limit("items per second")
    burst_items = _limit("items a tenant may send at once above its rate")
    requests_per_second = _limit("requests per second")
    items_per_day = _limit("items per UTC day")
    bytes_per_day = _limit("bytes per UTC day")
    bytes_per_second = _limit("bytes per second, as received")
    burst_bytes = _limit("bytes a tenant may send at once above its byte rate")


class LimitOverridesSerializer(_Strict):
    """The tenant's own limits over its plan's (billing.limits)."""

    max_request_bytes = _limit("largest request body, as received")
    stored_bytes = _limit("most bytes stored")
    traces = SignalLimitsSerializer(required=False)
    metrics = SignalLimitsSerializer(required=False)
    logs = SignalLimitsSerializer(required=False)


class TenantSerializer(serializers.ModelSerializer):
    limit_overrides = LimitOverridesSerializer(required=False)
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
    replaced_by = serializers.SlugRelatedField(
        slug_field="prefix", read_only=True, allow_null=True, help_text="The key that replaced this one when rotated."
    )

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
