"""REST API for admins and auditors: tenants, keys, the audit log. Thin adapters over
tenants.services, permissioned by the console roles."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from billing.api import (
    REFUSALS_PARAMETERS,
    USAGE_PARAMETERS,
    USAGE_RESPONSES,
    RefusalsSerializer,
    tenant_refusals_response,
    tenant_usage_response,
)
from tenants import audit, services
from tenants.api import serializers as s
from tenants.audit_export import FORMATS, AuditFilters, export_audit_log, public_key_pem
from tenants.models import ApiKey, AuditEvent, Tenant


def _actor(request):
    return audit.actor_for_user(request.user)


def _service(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except ValueError as exc:
        raise ValidationError({"detail": str(exc)}) from exc


class TenantViewSet(viewsets.ModelViewSet):
    queryset = Tenant.objects.select_related("plan").all()
    serializer_class = s.TenantSerializer
    lookup_field = "slug"
    action_permissions = {
        "suspend": "change",
        "activate": "change",
        "keys": "view",
        "usage": "view",
        "refusals": "view",
    }

    def get_queryset(self):
        queryset = super().get_queryset()
        wanted = self.request.query_params.get("status")
        return queryset.filter(status=wanted) if wanted else queryset

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        serializer.instance = _service(
            services.create_tenant,
            actor=_actor(self.request),
            name=data.pop("name"),
            slug=data.pop("slug", None),
            **data,
        )

    def perform_update(self, serializer):
        serializer.instance = _service(
            services.update_tenant, actor=_actor(self.request), tenant=self.get_object(), **serializer.validated_data
        )

    def destroy(self, request, *args, **kwargs):
        tenant = self.get_object()
        if tenant.status == Tenant.Status.DELETED:
            raise ValidationError({"detail": f"tenant {tenant.slug} is already deleted"})
        _service(services.delete_tenant, actor=_actor(request), tenant=tenant)
        return Response(s.TenantSerializer(tenant).data)

    @extend_schema(parameters=USAGE_PARAMETERS, responses=USAGE_RESPONSES)
    @action(detail=True, methods=["get"], pagination_class=None)
    def usage(self, request, slug=None):
        """Items, bytes and requests per day, signal and outcome (JSON, or CSV with ?format=csv)."""
        return tenant_usage_response(request, self.get_object())

    @extend_schema(parameters=REFUSALS_PARAMETERS, responses=RefusalsSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def refusals(self, request, slug=None):
        """Refused requests by key, signal and reason, with the latest message each got: what the
        tenant's exporters need to fix."""
        return tenant_refusals_response(request, self.get_object())

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def suspend(self, request, slug=None):
        tenant = _service(services.suspend_tenant, actor=_actor(request), tenant=self.get_object())
        return Response(s.TenantSerializer(tenant).data)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def activate(self, request, slug=None):
        tenant = _service(services.activate_tenant, actor=_actor(request), tenant=self.get_object())
        return Response(s.TenantSerializer(tenant).data)

    @extend_schema(methods=["get"], responses=s.ApiKeySerializer(many=True))
    @extend_schema(methods=["post"], request=s.ApiKeyCreateSerializer, responses={201: s.IssuedKeySerializer})
    @action(detail=True, methods=["get", "post"])
    def keys(self, request, slug=None):
        tenant = self.get_object()
        if request.method == "GET":
            if not request.user.has_perm("tenants.view_apikey"):
                return Response({"detail": "needs permission to view API keys"}, status=status.HTTP_403_FORBIDDEN)
            page = self.paginate_queryset(tenant.api_keys.select_related("tenant", "replaced_by"))
            return self.get_paginated_response(s.ApiKeySerializer(page, many=True).data)
        if not request.user.has_perm("tenants.add_apikey"):
            return Response({"detail": "needs permission to add API keys"}, status=status.HTTP_403_FORBIDDEN)
        body = s.ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        issued = _service(services.issue_key, actor=_actor(request), tenant=tenant, **body.validated_data)
        data = s.ApiKeySerializer(issued.api_key).data
        return Response(
            {**data, "secret": issued.secret}, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"}
        )


class ApiKeyViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = ApiKey.objects.select_related("tenant", "replaced_by").all()
    serializer_class = s.ApiKeySerializer
    action_permissions = {"revoke": "change", "rotate": "change"}

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        key = _service(services.revoke_key, actor=_actor(request), key=self.get_object())
        return Response(s.ApiKeySerializer(key).data)

    @extend_schema(request=s.RotateSerializer, responses={201: s.IssuedKeySerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        body = s.RotateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        issued = _service(
            services.rotate_key,
            actor=_actor(request),
            key=self.get_object(),
            grace=timedelta(seconds=body.validated_data["grace_seconds"]),
        )
        data = s.ApiKeySerializer(issued.api_key).data
        return Response(
            {**data, "secret": issued.secret}, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"}
        )


_AUDIT_FILTERS = [
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="entries at or after this time"),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="entries before this time"),
    OpenApiParameter("action", OpenApiTypes.STR, description="e.g. key.created; repeat for several"),
    OpenApiParameter("actor", OpenApiTypes.STR, description="e.g. user:alice"),
    OpenApiParameter("target_type", OpenApiTypes.STR),
    OpenApiParameter("target_id", OpenApiTypes.STR),
]


def _filters(params) -> AuditFilters:
    moments = {}
    for name in ("since", "until"):
        raw = params.get(name)
        if raw:
            try:
                moment = parse_datetime(raw)
            except ValueError:  # well formed, but no such time: 2026-02-30, 25:00, +25:00
                moment = None
            if moment is None or moment.tzinfo is None:
                raise ValidationError({name: f"{raw!r} is not an ISO 8601 time with a zone, e.g. 2026-11-20T00:00:00Z"})
            moments[name] = moment
    return AuditFilters(
        since=moments.get("since"),
        until=moments.get("until"),
        actions=tuple(params.getlist("action")),
        actor=params.get("actor", ""),
        target_type=params.get("target_type", ""),
        target_id=params.get("target_id", ""),
    )


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = AuditEvent.objects.all()
    serializer_class = s.AuditEventSerializer
    lookup_field = "seq"
    action_permissions = {"export": "export"}

    def get_queryset(self):
        return _filters(self.request.query_params).apply(super().get_queryset())

    @extend_schema(parameters=_AUDIT_FILTERS)
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        parameters=[*_AUDIT_FILTERS, OpenApiParameter("format", OpenApiTypes.STR, enum=[*FORMATS])],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    @action(detail=False, methods=["get"])
    def export(self, request):
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in FORMATS:
            raise ValidationError({"format": f"use one of {list(FORMATS)}"})
        export = export_audit_log(actor=_actor(request), filters=_filters(request.query_params), fmt=fmt)
        response = HttpResponse(export.archive, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        return response


@extend_schema(responses={(200, "application/x-pem-file"): OpenApiTypes.STR}, auth=[])
@api_view(["GET"])
@permission_classes([AllowAny])
def audit_public_key(request):
    """The Ed25519 public key that verifies audit export manifests."""
    return HttpResponse(public_key_pem(), content_type="application/x-pem-file")
