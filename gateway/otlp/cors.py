"""CORS for browser exporters (the OpenTelemetry JavaScript web SDK) on the OTLP/HTTP paths.

A preflight carries no credentials, so it is answered from the gateway's own list of origins
(GATEWAY_CORS_ALLOWED_ORIGINS, as the Collector's `cors.allowed_origins`). The request that
follows carries the tenant's key; the pipeline then checks its Origin against that tenant's own
list (tenants.origins), so a tenant's browser key works only from that tenant's sites.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from tenants.origins import origin_matches

_ALWAYS_ALLOWED_HEADERS = ("content-type", "authorization", "x-api-key")


def allowed_globally(origin: str) -> bool:
    return any(origin_matches(pattern, origin) for pattern in settings.GATEWAY_CORS_ALLOWED_ORIGINS)


def preflight(request: HttpRequest, origin: str) -> HttpResponse:
    """The answer to `OPTIONS /v1/<signal>` from a browser."""
    if not allowed_globally(origin):
        response = HttpResponse(
            f"origin {origin} may not send to this gateway: add it to GATEWAY_CORS_ALLOWED_ORIGINS\n",
            status=403,
            content_type="text/plain",
        )
        response["Vary"] = "Origin"
        return response
    method = request.headers.get("Access-Control-Request-Method", "POST")
    if method.upper() != "POST":
        return HttpResponse(f"OTLP/HTTP takes POST, not {method}\n", status=405, content_type="text/plain")
    allowed = {*_ALWAYS_ALLOWED_HEADERS, *(h.lower() for h in settings.GATEWAY_CORS_ALLOWED_HEADERS)}
    asked = [
        h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()
    ]
    refused = [h for h in asked if h not in allowed]
    if refused:
        return HttpResponse(
            f"header(s) {', '.join(refused)} may not be sent: add them to GATEWAY_CORS_ALLOWED_HEADERS\n",
            status=403,
            content_type="text/plain",
        )
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Methods"] = "POST"
    response["Access-Control-Allow-Headers"] = ", ".join(asked) if asked else ", ".join(sorted(allowed))
    response["Access-Control-Max-Age"] = str(settings.GATEWAY_CORS_MAX_AGE_SECONDS)
    response["Vary"] = "Origin"
    return response


def decorate(response: HttpResponse, origin: str | None) -> HttpResponse:
    """Let the browser read the reply (errors included) when the origin may send at all."""
    if origin and allowed_globally(origin):
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = "Retry-After"
        response["Vary"] = "Origin"
    return response
