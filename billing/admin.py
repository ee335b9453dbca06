from django.contrib import admin
from django.forms.models import model_to_dict

from billing.models import Plan
from tenants import audit


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")

    def save_model(self, request, obj, form, change):
        before = model_to_dict(Plan.objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        audit.record(actor=audit.actor_for_user(request.user), action="plan.updated" if change else "plan.created",
                     target_type="plan", target_id=obj.pk, target_repr=obj.slug,
                     changes=audit.diff(before, model_to_dict(obj)))

    def delete_model(self, request, obj):
        pk, slug = obj.pk, obj.slug
        super().delete_model(request, obj)
        audit.record(actor=audit.actor_for_user(request.user), action="plan.deleted", target_type="plan",
                     target_id=pk, target_repr=slug)
