from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from billing.api import InvoiceViewSet
from tenants.api import views

router = DefaultRouter()
router.register("tenants", views.TenantViewSet)
router.register("keys", views.ApiKeyViewSet)
router.register("audit-events", views.AuditEventViewSet)
router.register("invoices", InvoiceViewSet)

urlpatterns = [
    path("audit/public-key", views.audit_public_key, name="audit-public-key"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("", include(router.urls)),
]
