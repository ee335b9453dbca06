"""Production settings: gateway.settings behind a TLS-terminating proxy (secure cookies, HSTS,
HTTPS redirect, explicit allowed hosts, JSON logs). The container image's default
DJANGO_SETTINGS_MODULE. Every knob of gateway.settings still applies; what else a production
deployment needs (PostgreSQL, Redis, a ClickHouse server, a shared audit signing key) is
checked by `manage.py check --deploy` (gateway/checks.py).
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

# Checked before the base settings load: without DJANGO_SECRET_KEY they would write a new key
# into the data directory, a different one in every pod.
_missing = [name for name in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS") if not os.environ.get(name)]
if _missing:
    raise ImproperlyConfigured(
        f"gateway.settings_production needs {' and '.join(_missing)} in the environment "
        "(DJANGO_ALLOWED_HOSTS: comma-separated host names the console and OTLP/HTTP are reached by)"
    )

from gateway.settings import *  # noqa: E402,F401,F403
from gateway.settings import ALLOWED_HOSTS, LOGGING, SILENCED_SYSTEM_CHECKS, env_bool, env_int  # noqa: E402

if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must name the hosts, not '*'")
# Kubelet probes and Prometheus reach a pod by its IP (the Host header is that IP); the Helm
# chart passes it in through the downward API.
if os.environ.get("GATEWAY_POD_IP"):
    ALLOWED_HOSTS = [*ALLOWED_HOSTS, os.environ["GATEWAY_POD_IP"]]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# TLS ends at the ingress or load balancer, which says so in X-Forwarded-Proto. Set
# DJANGO_SECURE_PROXY_SSL_HEADER="" when nothing in front of the gateway sets (and strips) it.
_proxy_header = os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto")
if _proxy_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# Never redirected: probes and scrapes over the pod network, and OTLP exporters inside the
# cluster (an exporter does not follow a redirect of its POST).
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$", r"^v1/"]
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Submitting a domain to browsers' preload lists is the domain owner's decision, not a
    # setting's; the check only reminds of it.
    SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "security.W021"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True

GATEWAY_LOG_FORMAT = os.environ.get("GATEWAY_LOG_FORMAT", "json")  # checked by gateway.settings when set
LOGGING["handlers"]["console"]["formatter"] = GATEWAY_LOG_FORMAT
