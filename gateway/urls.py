from django.contrib import admin
from django.urls import include, path

from gateway import favicon, health, metrics
from gateway.otlp import http

urlpatterns = [
    path("v1/traces", http.traces, name="otlp-traces"),
    path("v1/metrics", http.metrics, name="otlp-metrics"),
    path("v1/logs", http.logs, name="otlp-logs"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("favicon.ico", favicon.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tenants.api.urls")),
]
