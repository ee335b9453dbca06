"""The console's pages for tenants, API keys, API tokens and the audit log. Every change goes
through tenants.services, so it is validated and audited the same way as from the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

import storage
from billing.usage import Refusals, refusals
from storage.tenant_data import shared_deletion_progress
from tenants import audit, certificates, services
from tenants.audit_export import FORMATS, AuditFilters, export_audit_log
from tenants.console import show_secrets
from tenants.models import ApiKey, AuditEvent, ClientCertificate, ConsoleToken, Tenant
from vocabulary import Outcome


def _actor(request):
    return audit.actor_for_user(request.user)


def _usage_context(request, tenant) -> dict:
    """Usage charts, quota use, refused requests, keys and invoices for the tenant's page."""
    from billing.reports import quota_consumption, tenant_usage, usage_charts
    from storage.clickhouse import StorageUnavailable

    context = {"quota_use": quota_consumption(tenant), "usage_error": ""}
    try:
        rows = tenant_usage(storage.get_store(), tenant)
    except StorageUnavailable as exc:
        rows, context["usage_error"] = [], f"usage is not available right now: {exc}"
    context["usage_charts"] = usage_charts(rows, until=datetime.now(UTC).date())
    context["outcomes"] = [outcome.value for outcome in Outcome]
    keys = list(tenant.api_keys.order_by("-created_at"))
    context["keys"] = keys
    context["refusal_days"] = REFUSAL_DAYS
    try:
        context["refusals"] = exporter_health(storage.get_store(), tenant, keys, days=REFUSAL_DAYS)
    except StorageUnavailable as exc:
        context["refusals"], context["usage_error"] = [], f"usage is not available right now: {exc}"
    if request.user.has_perm("billing.view_invoice"):
        context["invoices"] = list(tenant.invoices.order_by("-period")[:12])
    return context


class TenantFilter(admin.SimpleListFilter):
    """Rows of one tenant, named by its slug in a text box: with 10,000 tenants a link per
    tenant made the key list a 1.2 MB page."""

    title = "tenant"
    parameter_name = "tenant"
    template = "admin/tenants/tenant_filter.html"

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        return queryset.filter(tenant__slug=self.value()) if self.value() else queryset

    def choices(self, changelist):
        kept = [(name, value) for name, value in changelist.params.items() if name != self.parameter_name]
        yield {
            "parameter": self.parameter_name,
            "value": self.value() or "",
            "kept": kept,
            "clear_query": changelist.get_query_string(remove=[self.parameter_name]),
        }


REFUSAL_DAYS = 7  # how far back the tenant page lists refused requests


@dataclass(frozen=True)
class KeyRefusals:
    key: str  # "prefix… (name)", or what was presented instead of a key of this tenant
    refusals: Refusals


def exporter_health(store, tenant, keys, *, days: int) -> list[KeyRefusals]:
    """The tenant's refused requests of the last `days` by key, signal and reason, latest first."""
    until = datetime.now(UTC)
    names = {key.prefix: f"{key.prefix}… ({key.name})" for key in keys}
    return [
        KeyRefusals(names.get(row.key_prefix) or (f"{row.key_prefix}…" if row.key_prefix else "no key"), row)
        for row in refusals(
            store, str(tenant.id), since=until - timedelta(days=days), until=until + timedelta(minutes=1)
        )
    ]


def _adopt(obj, saved) -> None:
    """Make the admin's form instance stand for the row a service created."""
    obj.pk = saved.pk
    obj._state.adding = False
    obj._state.db = saved._state.db


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "status", "plan", "retention_days", "created_at")
    list_filter = ("status", "plan")
    list_select_related = ("plan",)  # plan is nullable: without this, a query per row
    search_fields = ("name", "slug", "id")
    readonly_fields = ("id", "status", "stored_in", "data_removal", "created_at", "updated_at")
    fields = (
        "name",
        "slug",
        "plan",
        "isolation",
        "retention_days",
        "limit_overrides",
        "sensitive_attribute_keys",
        "allowed_origins",
        "require_client_certificate",
        *readonly_fields,
    )
    actions = ["suspend_tenants", "activate_tenants"]

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if request.resolver_match and request.resolver_match.url_name == "autocomplete":
            # The tenant box of the key and certificate forms: a deleted tenant takes neither.
            queryset = queryset.exclude(status=Tenant.Status.DELETED)
        return queryset, may_have_duplicates

    @admin.display(description="New data stored in")
    def stored_in(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        isolation = obj.effective_isolation
        source = "this tenant's setting" if obj.isolation else ("its plan" if obj.plan_id else "the default")
        return f"{isolation.label} (from {source})"

    @admin.display(description="Removal of its data")
    def data_removal(self, obj):
        """For a deleted tenant: how far the deletion of its rows in shared partitions got."""
        if obj is None or obj.status != Tenant.Status.DELETED:
            return "-"
        try:
            progress = shared_deletion_progress(storage.get_store(), str(obj.id))
        except Exception as exc:  # noqa: BLE001 - the console shows what it can
            return f"unknown: storage cannot be read ({exc})"
        if not progress:
            return "done: its partitions were dropped"
        pending = {table: p for table, p in progress.items() if not p["done"]}
        if not pending:
            return f"done: its rows were deleted from the shared partitions of {len(progress)} table(s)"
        rows = sum(p["rows_left"] for p in pending.values())
        errors = "; ".join(f"{table}: {p['error']}" for table, p in pending.items() if p["error"])
        message = f"in progress: {rows} row(s) left in {len(pending)} of {len(progress)} table(s)"
        return message + (f"; last error: {errors}" if errors else "")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        tenant = self.get_object(request, object_id)
        return super().change_view(
            request,
            object_id,
            form_url,
            {**(extra_context or {}), **(_usage_context(request, tenant) if tenant else {})},
        )

    def save_model(self, request, obj, form, change):
        values = {field: form.cleaned_data[field] for field in form.changed_data}
        try:
            if change:
                services.update_tenant(actor=_actor(request), tenant=Tenant.objects.get(pk=obj.pk), **values)
            else:
                values.pop("name", None), values.pop("slug", None)
                with transaction.atomic():
                    tenant = services.create_tenant(actor=_actor(request), name=obj.name, slug=obj.slug, **values)
                    issued = services.issue_key(actor=_actor(request), tenant=tenant)
                request._issued_secrets = [
                    (f"{issued.api_key.prefix}… ({issued.api_key.name}) of {tenant.slug}", issued.secret)
                ]
                _adopt(obj, tenant)
        except ValueError as exc:
            raise PermissionDenied(str(exc)) from exc

    def response_add(self, request, obj, post_url_continue=None):
        """A new tenant's first API key, shown once, as the key page shows a new key."""
        return show_secrets(
            request,
            title=f"Tenant {obj.slug} created with its first API key",
            secrets=request._issued_secrets,
            back_url=reverse("admin:tenants_tenant_change", args=[obj.pk]),
            note="Give this key to the tenant's exporters (the x-api-key header); more keys: API keys, Add.",
        )

    def delete_model(self, request, obj):
        services.delete_tenant(actor=_actor(request), tenant=obj)

    def delete_queryset(self, request, queryset):
        for tenant in queryset.exclude(status=Tenant.Status.DELETED):
            self.delete_model(request, tenant)

    @admin.action(description="Suspend selected tenants", permissions=["change"])
    def suspend_tenants(self, request, queryset):
        self._each(request, queryset, services.suspend_tenant, "suspended")

    @admin.action(description="Activate selected tenants", permissions=["change"])
    def activate_tenants(self, request, queryset):
        self._each(request, queryset, services.activate_tenant, "activated")

    def _each(self, request, queryset, service, verb):
        done = 0
        for tenant in queryset:
            try:
                service(actor=_actor(request), tenant=tenant)
                done += 1
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        if done:
            self.message_user(request, f"{done} tenant(s) {verb}.", messages.SUCCESS)


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=services.ALL_SCOPES
    )
    expires_at = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Optional. After this time the key stops working.",
    )

    class Meta:
        model = ApiKey
        fields = ("tenant", "name", "scopes", "expires_at")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = Tenant.objects.exclude(status=Tenant.Status.DELETED)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "tenant", "scope_list", "state", "expires_at", "last_used_at")
    list_filter = (TenantFilter, ("revoked_at", admin.EmptyFieldListFilter), ("rotated_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "name", "tenant__slug", "tenant__name")
    list_select_related = ("tenant",)
    autocomplete_fields = ("tenant",)  # a search box, not a <select> of every tenant
    actions = ["revoke_keys", "rotate_keys"]
    readonly_fields = (
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

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ApiKeyCreateForm.Meta.fields

    def has_change_permission(self, request, obj=None):
        # Keys are not edited: they are revoked or rotated (the actions below).
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            issued = services.issue_key(
                actor=_actor(request),
                tenant=data["tenant"],
                name=data["name"],
                scopes=data["scopes"],
                expires_at=data.get("expires_at"),
            )
        except ValueError as exc:
            raise PermissionDenied(str(exc)) from exc
        request._issued_secrets = [
            (f"{issued.api_key.prefix}… ({issued.api_key.name}) of {data['tenant'].slug}", issued.secret)
        ]
        _adopt(obj, issued.api_key)

    def response_add(self, request, obj, post_url_continue=None):
        return show_secrets(
            request,
            title="New API key",
            secrets=request._issued_secrets,
            back_url=reverse("admin:tenants_apikey_changelist"),
        )

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        revoked = 0
        for key in queryset.select_related("tenant"):
            try:
                services.revoke_key(actor=_actor(request), key=key)
                revoked += 1
            except ValueError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if revoked:
            self.message_user(request, f"{revoked} key(s) revoked; they stop working now.", messages.SUCCESS)

    @admin.action(description="Rotate selected keys (old keys keep working for 24 hours)", permissions=["change"])
    def rotate_keys(self, request, queryset):
        issued = []
        for key in queryset.select_related("tenant"):
            try:
                new = services.rotate_key(actor=_actor(request), key=key)
                issued.append((f"replaces {key.prefix}… ({key.name}) of {key.tenant.slug}", new.secret))
            except ValueError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        if not issued:
            return None
        return show_secrets(
            request,
            title="Rotated API keys",
            secrets=issued,
            back_url=reverse("admin:tenants_apikey_changelist"),
            note=f"The old keys keep working until {services.DEFAULT_ROTATION_GRACE} from now.",
        )


class ClientCertificateForm(forms.ModelForm):
    pem = forms.CharField(
        label="Certificate (PEM)",
        widget=forms.Textarea(attrs={"rows": 12, "cols": 66}),
        help_text="The client's certificate, -----BEGIN CERTIFICATE----- …; never its key.",
    )

    class Meta:
        model = ClientCertificate
        fields = ("tenant", "name", "pem")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = Tenant.objects.exclude(status=Tenant.Status.DELETED)

    def clean_pem(self):
        try:
            certificates.parse_pem(self.cleaned_data["pem"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return self.cleaned_data["pem"]


@admin.register(ClientCertificate)
class ClientCertificateAdmin(admin.ModelAdmin):
    """Registered through tenants.certificates (audited); revoked, never edited."""

    list_display = ("name", "tenant", "subject", "not_after", "revoked_at", "sha256")
    list_filter = (TenantFilter, ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "sha256", "subject", "tenant__slug")
    list_select_related = ("tenant",)
    autocomplete_fields = ("tenant",)
    actions = ["revoke_certificates"]
    readonly_fields = ("tenant", "name", "sha256", "subject", "not_after", "created_at", "revoked_at")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ClientCertificateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ClientCertificateForm.Meta.fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the audit log keeps what was trusted, and when

    def save_model(self, request, obj, form, change):
        try:
            saved = certificates.register_client_certificate(
                actor=_actor(request),
                tenant=form.cleaned_data["tenant"],
                pem=form.cleaned_data["pem"],
                name=form.cleaned_data["name"],
            )
        except ValueError as exc:
            raise PermissionDenied(str(exc)) from exc
        _adopt(obj, saved)

    @admin.action(description="Revoke selected client certificates", permissions=["change"])
    def revoke_certificates(self, request, queryset):
        revoked = 0
        for certificate in queryset.filter(revoked_at__isnull=True):
            certificates.revoke_client_certificate(actor=_actor(request), certificate=certificate)
            revoked += 1
        self.message_user(request, f"{revoked} client certificate(s) revoked.", messages.SUCCESS)


@admin.register(ConsoleToken)
class ConsoleTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "revoked_at")
    search_fields = ("prefix", "name", "user__username")
    fields = ("user", "name")

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        issued = services.create_console_token(
            actor=_actor(request), user=form.cleaned_data["user"], name=form.cleaned_data["name"]
        )
        request._issued_secrets = [(f"API token {issued.token.prefix}… of {issued.token.user}", issued.secret)]
        _adopt(obj, issued.token)

    def response_add(self, request, obj, post_url_continue=None):
        return show_secrets(
            request,
            title="New REST API token",
            secrets=request._issued_secrets,
            back_url=reverse("admin:tenants_consoletoken_changelist"),
        )

    def delete_model(self, request, obj):
        services.revoke_console_token(actor=_actor(request), token=obj)

    def delete_queryset(self, request, queryset):
        for token in queryset:
            self.delete_model(request, token)


class AuditExportForm(forms.Form):
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    action = forms.CharField(required=False, help_text="Only this action, e.g. key.created (optional)")
    actor = forms.CharField(required=False, help_text="Only this actor, e.g. user:alice (optional)")
    format = forms.ChoiceField(choices=[(f, f.upper()) for f in FORMATS], initial="jsonl")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone: the log is append-only."""

    list_display = ("seq", "created_at", "actor", "action", "target_repr", "source_ip")
    list_filter = ("action", "target_type", "created_at")
    search_fields = ("actor", "action", "target_id", "target_repr", "request_id", "source_ip")
    # No date_hierarchy: its drill-down is a DISTINCT over the period's events on every page
    # view; the created_at filter (today, past 7 days, this month, this year) costs nothing.
    show_full_result_count = False  # a filtered page counts once, not also the whole log
    readonly_fields = (
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
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_export": request.user.has_perm("tenants.export_auditevent")}
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        export = path("export/", self.admin_site.admin_view(self.export_view), name="tenants_auditevent_export")
        return [export, *super().get_urls()]

    def export_view(self, request):
        if not request.user.has_perm("tenants.export_auditevent"):
            raise PermissionDenied("exporting the audit log needs the Auditor or Gateway admin role")
        form = AuditExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            export = export_audit_log(
                actor=_actor(request),
                filters=AuditFilters(
                    since=data["since"],
                    until=data["until"],
                    actions=(data["action"],) if data["action"] else (),
                    actor=data["actor"],
                ),
                fmt=data["format"],
            )
            response = HttpResponse(export.archive, content_type="application/zip")
            response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
            return response
        return TemplateResponse(
            request,
            "admin/tenants/auditevent/export.html",
            {
                **self.admin_site.each_context(request),
                "title": "Export the audit log",
                "form": form,
                "opts": self.model._meta,
            },
        )
