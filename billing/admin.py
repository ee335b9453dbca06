from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.forms.models import model_to_dict
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.safestring import mark_safe

from billing.documents import invoice_download
from billing.models import Invoice, InvoiceLine, Plan, PlanSignal, Subscription
from tenants import audit


class PlanSignalInline(admin.TabularInline):
    model = PlanSignal
    extra = 0


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "isolation", "base_fee", "currency", "max_request_bytes", "retention_days")
    search_fields = ("name", "slug")
    inlines = [PlanSignalInline]

    def save_model(self, request, obj, form, change):
        before = model_to_dict(Plan.objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        audit.record(
            actor=audit.actor_for_user(request.user),
            action="plan.updated" if change else "plan.created",
            target_type="plan",
            target_id=obj.pk,
            target_repr=obj.slug,
            changes=audit.diff(before, model_to_dict(obj)),
        )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        limits = {
            row.signal: {
                field: str(getattr(row, field))
                for field in (
                    "items_per_second",
                    "burst_items",
                    "requests_per_second",
                    "items_per_day",
                    "bytes_per_day",
                    "bytes_per_second",
                    "burst_bytes",
                    "included_items",
                    "price_per_million",
                )
            }
            for row in form.instance.signals.all()
        }
        audit.record(
            actor=audit.actor_for_user(request.user),
            action="plan.signals_saved",
            target_type="plan",
            target_id=form.instance.pk,
            target_repr=form.instance.slug,
            changes={"before": {}, "after": limits},
        )

    def delete_model(self, request, obj):
        pk, slug = obj.pk, obj.slug
        super().delete_model(request, obj)
        audit.record(
            actor=audit.actor_for_user(request.user),
            action="plan.deleted",
            target_type="plan",
            target_id=pk,
            target_repr=slug,
        )


class GenerateInvoicesForm(forms.Form):
    period = forms.RegexField(
        regex=r"^\d{4}-(0[1-9]|1[0-2])$",
        help_text="YYYY-MM (UTC)",
        error_messages={"invalid": "Enter a month as YYYY-MM, e.g. 2026-11."},
    )


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    fields = ("position", "description", "quantity", "unit", "unit_price", "amount")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    """Subscriptions change through a tenant's plan (billing.services.change_plan)."""

    list_display = ("tenant", "plan", "starts_at", "ends_at")
    list_filter = ("plan",)
    search_fields = ("tenant__slug",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = ("tenant", "period", "status", "total", "currency", "downloads", "updated_at")
    list_filter = ("status", "period")
    search_fields = ("tenant__slug", "tenant__name", "period")
    readonly_fields = ("tenant", "period", "status", "total", "currency", "created_at", "updated_at")
    inlines = [InvoiceLineInline]
    actions = ["issue_invoices"]

    def has_add_permission(self, request):
        return False  # invoices come from generate_invoices

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="download")
    def downloads(self, invoice):
        links = [
            f'<a href="{reverse("admin:billing_invoice_download", args=[invoice.pk, fmt])}">{fmt.upper()}</a>'
            for fmt in ("csv", "html")
        ]
        return mark_safe(" ".join(links))  # noqa: S308 - our own URLs

    @admin.action(description="Issue selected invoices (no longer recomputed)", permissions=["change"])
    def issue_invoices(self, request, queryset):
        for invoice in queryset.filter(status=Invoice.Status.DRAFT):
            invoice.status = Invoice.Status.ISSUED
            invoice.save(update_fields=["status", "updated_at"])
            audit.record(
                actor=audit.actor_for_user(request.user),
                action="invoice.issued",
                target_type="invoice",
                target_id=invoice.pk,
                target_repr=f"{invoice.tenant.slug} {invoice.period}",
                changes={"before": {"status": "draft"}, "after": {"status": "issued"}},
            )

    def get_urls(self):
        download = path(
            "<int:pk>/download/<str:fmt>/",
            self.admin_site.admin_view(self.download_view),
            name="billing_invoice_download",
        )
        generate = path("generate/", self.admin_site.admin_view(self.generate_view), name="billing_invoice_generate")
        return [download, generate, *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_generate": self.has_change_permission(request)}
        return super().changelist_view(request, extra_context)

    def generate_view(self, request):
        """generate_invoices from the console: in the embedded mode the serving process owns
        ClickHouse, so the command can only run while the gateway is stopped."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        from billing.invoicing import generate_all

        form = GenerateInvoicesForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            invoices = generate_all(period=form.cleaned_data["period"])
            audit.record(
                actor=audit.actor_for_user(request.user),
                action="invoices.generated",
                target_type="invoice",
                target_repr=form.cleaned_data["period"],
                changes={"before": {}, "after": {"invoices": len(invoices)}},
            )
            self.message_user(request, f"{len(invoices)} invoice(s) for {form.cleaned_data['period']} generated.")
            return HttpResponseRedirect(reverse("admin:billing_invoice_changelist"))
        return TemplateResponse(
            request,
            "admin/billing/invoice/generate.html",
            {
                **self.admin_site.each_context(request),
                "title": "Generate invoices",
                "form": form,
                "opts": self.model._meta,
            },
        )

    def download_view(self, request, pk: int, fmt: str):
        if not self.has_view_permission(request):
            raise PermissionDenied
        invoice = get_object_or_404(Invoice.objects.select_related("tenant"), pk=pk)
        return invoice_download(invoice, fmt)
