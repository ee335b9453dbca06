"""Console pieces outside the ModelAdmins: the brute-force-limited login, and the page that
shows a new secret once."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django_ratelimit.core import is_ratelimited

from tenants import audit
from tenants.middleware import client_ip


def _client_key(group: str, request: HttpRequest) -> str:
    return client_ip(request) or "unknown"


def login_throttled(request: HttpRequest, exception=None) -> HttpResponse:
    response = TemplateResponse(
        request,
        "console/login_throttled.html",
        {
            "title": "Too many sign-in attempts",
            "site_header": admin.site.site_header,
        },
        status=429,
    )
    response["Retry-After"] = "60"
    return response


def throttle_login(request: HttpRequest) -> HttpResponse | None:
    """A 429 page when this address made more than GATEWAY_ADMIN_LOGIN_RATE sign-in attempts."""
    if request.method == "POST" and is_ratelimited(
        request,
        group="console-login",
        key=_client_key,
        rate=settings.GATEWAY_ADMIN_LOGIN_RATE,
        method="POST",
        increment=True,
    ):
        username = str(request.POST.get("username", ""))[:150]
        audit.record(
            actor=audit.current_actor(fallback="anonymous"),
            action="auth.login_throttled",
            target_type="user",
            target_repr=username,
        )
        return login_throttled(request)
    return None


def show_secrets(
    request: HttpRequest, *, title: str, secrets: list[tuple[str, str]], back_url: str, note: str = ""
) -> HttpResponse:
    """A page showing secrets once. It is never cached and the secrets are stored nowhere."""
    response = TemplateResponse(
        request,
        "console/show_secret.html",
        {
            **admin.site.each_context(request),
            "title": title,
            "secrets": secrets,
            "back_url": back_url,
            "note": note,
        },
    )
    response["Cache-Control"] = "no-store"
    return response
