"""REST endpoints for usage (JSON or CSV) and invoices."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

import storage
from billing.documents import invoice_download
from billing.models import Invoice, InvoiceLine
from billing.usage import daily_usage, refusals
from storage.clickhouse import StorageUnavailable
from tenants.models import Tenant


class InvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = ("position", "description", "quantity", "unit", "unit_price", "amount")


class InvoiceSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta:
        model = Invoice
        fields = ("id", "tenant", "period", "status", "currency", "total", "lines", "created_at", "updated_at")


class InvoiceViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = Invoice.objects.select_related("tenant").prefetch_related("lines")
    serializer_class = InvoiceSerializer
    action_permissions = {"download": "view"}

    def get_queryset(self):
        queryset = super().get_queryset()
        for name, field in (("tenant", "tenant__slug"), ("period", "period"), ("status", "status")):
            if self.request.query_params.get(name):
                queryset = queryset.filter(**{field: self.request.query_params[name]})
        return queryset

    @extend_schema(
        parameters=[OpenApiParameter("format", OpenApiTypes.STR, enum=["csv", "html"])],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "text/html"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "html"):
            raise ValidationError({"format": "use csv or html"})
        return invoice_download(self.get_object(), fmt)


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField()
    signal = serializers.CharField()
    outcome = serializers.CharField()
    requests = serializers.IntegerField()
    items = serializers.IntegerField()
    items_accepted = serializers.IntegerField()
    bytes = serializers.IntegerField()


FIRST_DAY = datetime(1970, 1, 2, tzinfo=UTC)
LAST_DAY = datetime(2105, 12, 31, tzinfo=UTC)


def _day(params, name: str, default):
    raw = params.get(name)
    if not raw:
        return default
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValidationError({name: f"{raw!r} is not a date like 2026-11-01"}) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        # The usage table's hours are ClickHouse DateTime values: 1970 to 2105.
        raise ValidationError({name: f"{raw} is outside {FIRST_DAY:%Y-%m-%d} .. {LAST_DAY:%Y-%m-%d}"})
    return day


class RefusalsSerializer(serializers.Serializer):
    key_prefix = serializers.CharField(help_text="Visible prefix of the key presented; '' when none of ours was")
    key_name = serializers.CharField(allow_null=True, help_text="The key's name, when it is one of this tenant's")
    signal = serializers.CharField()
    outcome = serializers.CharField()
    reason = serializers.CharField()
    requests = serializers.IntegerField()
    items = serializers.IntegerField()
    bytes = serializers.IntegerField()
    first_at = serializers.DateTimeField(help_text="Start of the first minute with such a refusal")
    last_at = serializers.DateTimeField()
    message = serializers.CharField(help_text="The latest message the sender was given")


REFUSALS_PARAMETERS = [
    OpenApiParameter("since", OpenApiTypes.DATE, description="first day (UTC), default 6 days ago"),
    OpenApiParameter("until", OpenApiTypes.DATE, description="day after the last, default tomorrow"),
]


def tenant_refusals_response(request, tenant: Tenant):
    """The tenant's refused requests by key, signal and reason (30 days are kept), latest first."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = _day(request.query_params, "since", today - timedelta(days=6))
    until = _day(request.query_params, "until", today + timedelta(days=1))
    try:
        rows = refusals(storage.get_store(), str(tenant.id), since=since, until=until)
    except StorageUnavailable as exc:
        return Response({"detail": f"refusals are not available right now: {exc}"}, status=503)
    names = dict(tenant.api_keys.values_list("prefix", "name"))
    data = [{**row.__dict__, "key_name": names.get(row.key_prefix)} for row in rows]
    return Response(RefusalsSerializer(data, many=True).data)


USAGE_PARAMETERS = [
    OpenApiParameter("since", OpenApiTypes.DATE, description="first day (UTC), default 30 days ago"),
    OpenApiParameter("until", OpenApiTypes.DATE, description="day after the last, default tomorrow"),
    OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
]
USAGE_RESPONSES = {(200, "application/json"): UsageRowSerializer(many=True), (200, "text/csv"): OpenApiTypes.STR}


def tenant_usage_response(request, tenant: Tenant):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = _day(request.query_params, "since", today - timedelta(days=29))
    until = _day(request.query_params, "until", today + timedelta(days=1))
    try:
        rows = daily_usage(storage.get_store(), str(tenant.id), since=since, until=until)
    except StorageUnavailable as exc:
        return Response({"detail": f"usage is not available right now: {exc}"}, status=503)
    data = UsageRowSerializer([row.__dict__ for row in rows], many=True).data
    if request.query_params.get("format") == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(UsageRowSerializer().fields), lineterminator="\n")
        writer.writeheader()
        writer.writerows(data)
        response = HttpResponse(out.getvalue(), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="usage-{tenant.slug}.csv"'
        return response
    return Response(data)
