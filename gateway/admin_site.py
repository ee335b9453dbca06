"""The console: Django's admin site with a brute-force-limited login."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig


class ConsoleSite(admin.AdminSite):
    site_header = "otlp-gateway console"
    site_title = "otlp-gateway"
    index_title = "Tenants, keys and audit"

    def login(self, request, extra_context=None):
        from tenants.console import throttle_login

        refused = throttle_login(request)
        return refused or super().login(request, extra_context)


class ConsoleAdminConfig(AdminConfig):
    default_site = "gateway.admin_site.ConsoleSite"
