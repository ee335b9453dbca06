"""The console: Django's admin site with a brute-force-limited login, and an overview of every
tenant and of the gateway itself as its home page (gateway.overview)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.template.response import TemplateResponse


class ConsoleSite(admin.AdminSite):
    site_header = "otlp-gateway console"
    site_title = "otlp-gateway"
    index_title = "Overview"

    def login(self, request, extra_context=None):
        from tenants.console import throttle_login

        refused = throttle_login(request)
        return refused or super().login(request, extra_context)

    def index(self, request, extra_context=None):
        from gateway import overview

        context = {
            **self.each_context(request),
            "title": self.index_title,
            "subtitle": None,
            "app_list": self.get_app_list(request),
            **(extra_context or {}),
        }
        if request.user.has_perm("tenants.view_tenant"):
            context.update(overview.context(request.GET))
            template = "admin/overview.html"
        else:  # an auditor: the models they may read, as Django's own index shows them
            template = self.index_template or "admin/index.html"
        request.current_app = self.name
        return TemplateResponse(request, template, context)


class ConsoleAdminConfig(AdminConfig):
    default_site = "gateway.admin_site.ConsoleSite"
