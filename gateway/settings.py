"""Settings for otlp-gateway, every knob read from the environment with an embedded default.

Embedded defaults: SQLite and chDB under GATEWAY_DATA_DIR, a local-memory cache.
Production sets DATABASE_URL (PostgreSQL), GATEWAY_CACHE_URL (Redis) and
GATEWAY_CLICKHOUSE_URL (http(s)://user:pass@host:8123/db).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


DATA_DIR = Path(os.environ.get("GATEWAY_DATA_DIR", BASE_DIR / "data")).resolve()


def _secret_key() -> str:
    configured = os.environ.get("DJANGO_SECRET_KEY")
    if configured:
        return configured
    # Embedded mode: one random key per data directory, kept across restarts.
    path = DATA_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",") if h]

INSTALLED_APPS = [
    "gateway.admin_site.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "django_ratelimit",
    "gateway",
    "tenants",
    "billing",
    "storage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tenants.middleware.RequestContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gateway.urls"
WSGI_APPLICATION = "gateway.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


_SQLITE = "django.db.backends.sqlite3"
_POSTGRESQL = "django.db.backends.postgresql"


def _database(url: str | None) -> dict:
    """DATABASE_URL (parsed by dj-database-url): `sqlite:////absolute/path.sqlite3`, or
    `postgres://user:password@host:5432/name?sslmode=require`; unset, SQLite in the data dir."""
    import dj_database_url

    if not url:
        url = f"sqlite:///{DATA_DIR / 'gateway.sqlite3'}"
    try:
        database = dj_database_url.parse(url)
    except ValueError as exc:  # an unknown scheme (UnknownSchemeError is a ValueError), a bad port
        raise ValueError(f"DATABASE_URL must be sqlite:///path or postgres://...: {exc}") from exc
    if database["ENGINE"] == _SQLITE:
        name = Path(database["NAME"])
        database.update(
            # IMMEDIATE: a transaction takes the write lock when it begins, so two threads that
            # read then write (audit appends, key creation) wait for each other instead of
            # failing with "database is locked".
            OPTIONS={"timeout": 20, "transaction_mode": "IMMEDIATE", **database.get("OPTIONS", {})},
            # Every request reads its API key; a thread keeps its connection rather than opening
            # (and closing) one per request.
            CONN_MAX_AGE=env_int("DATABASE_CONN_MAX_AGE", 600),
            TEST={"NAME": str(name.with_name(f"test-{name.name}"))},
        )
    elif database["ENGINE"] == _POSTGRESQL:
        database.update(CONN_MAX_AGE=env_int("DATABASE_CONN_MAX_AGE", 60), CONN_HEALTH_CHECKS=True)
        database["NAME"] = database["NAME"] or "postgres"
    else:
        raise ValueError(f"DATABASE_URL must be sqlite:///path or postgres://..., got engine {database['ENGINE']}")
    return database


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}


def _cache(url: str | None) -> dict:
    if not url:
        # Request-rate windows of every active tenant must fit: the default 300 entries would
        # evict (and so reset) them with a few hundred tenants. Daily quotas are in the database.
        return {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "gateway",
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    if not url.startswith(("redis://", "rediss://")):
        raise ValueError("GATEWAY_CACHE_URL must be redis://... or unset for the local-memory cache")
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}


CACHES = {"default": _cache(os.environ.get("GATEWAY_CACHE_URL"))}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# The console's CSS and JS are served by the gateway itself (WhiteNoise), straight from the
# installed apps, so neither the embedded mode nor a container needs collectstatic or a web server.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# GATEWAY_LOG_FORMAT: plain (default) or json, one object per line (gateway.settings_production's default).
GATEWAY_LOG_FORMAT = os.environ.get("GATEWAY_LOG_FORMAT", "plain")
if GATEWAY_LOG_FORMAT not in {"plain", "json"}:
    raise ValueError(f"GATEWAY_LOG_FORMAT must be plain or json, got {GATEWAY_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "gateway.jsonlog.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": GATEWAY_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": os.environ.get("GATEWAY_LOG_LEVEL", "INFO")},
}

# --- Console, REST API, audit ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.api.authentication.ConsoleTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["tenants.api.permissions.RolePermissions"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # ?limit= (default 100, at most 1000) and ?offset=, bounded: tenants.api.pagination.
    "DEFAULT_PAGINATION_CLASS": "tenants.api.pagination.Pages",
    # ?format= names the audit export's file format, not a renderer.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "otlp-gateway console API",
    "DESCRIPTION": "Tenants, API keys and the audit log of the OTLP gateway.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}
# Proxies in front of the console that append to X-Forwarded-For (0: use the socket address).
GATEWAY_TRUSTED_PROXY_HOPS = env_int("GATEWAY_TRUSTED_PROXY_HOPS", 0)
# Console login attempts allowed per client address (django-ratelimit rate syntax).
GATEWAY_ADMIN_LOGIN_RATE = os.environ.get("GATEWAY_ADMIN_LOGIN_RATE", "10/m")
# Ed25519 private key (PEM) that signs audit exports; generated in the data dir when unset.
GATEWAY_AUDIT_SIGNING_KEY_FILE = os.environ.get("GATEWAY_AUDIT_SIGNING_KEY_FILE") or str(
    DATA_DIR / "audit-signing-key.pem"
)
# The master key that wraps tenants' data keys: GATEWAY_MASTER_KEY (base64 of 32 bytes) or this
# file; the embedded default makes one in the data dir. Never in the database.
GATEWAY_MASTER_KEY_FILE = os.environ.get("GATEWAY_MASTER_KEY_FILE") or str(DATA_DIR / "master.key")
RATELIMIT_VIEW = "tenants.console.login_throttled"
# django-ratelimit asks for a cache shared by every process with atomic increments.
# Embedded mode is one process, so its local-memory cache is shared by construction;
# Django's own RedisCache increments atomically but is not on django-ratelimit's list.
SILENCED_SYSTEM_CHECKS = (
    ["django_ratelimit.E003", "django_ratelimit.W001"]
    if CACHES["default"]["BACKEND"].endswith("LocMemCache")
    else ["django_ratelimit.W001"]
)

# --- Ingestion -------------------------------------------------------------------------------
GATEWAY_HOST = os.environ.get("GATEWAY_HOST", "0.0.0.0")
GATEWAY_HTTP_PORT = env_int("GATEWAY_HTTP_PORT", 4318)
GATEWAY_GRPC_PORT = env_int("GATEWAY_GRPC_PORT", 4317)
# gunicorn threads in the single embedded worker, and gRPC handler threads.
GATEWAY_HTTP_THREADS = env_int("GATEWAY_HTTP_THREADS", 8)
GATEWAY_GRPC_THREADS = env_int("GATEWAY_GRPC_THREADS", 16)
# OTLP/gRPC export calls in flight (queued or running) before more are refused with
# RESOURCE_EXHAUSTED and RetryInfo. Messages are read by the handler threads only.
GATEWAY_GRPC_MAX_IN_FLIGHT = env_int("GATEWAY_GRPC_MAX_IN_FLIGHT", 1024)
# HTTP/2 BDP probing grows stream windows, so grpc core buffers whole messages of calls not yet
# read; off by default (docs/OPERATIONS.md).
GATEWAY_GRPC_BDP_PROBE = env_bool("GATEWAY_GRPC_BDP_PROBE", False)
# The HTTP edge (gateway/edge.py) reads each request whole before it takes one of those threads:
# seconds for a request's head (from its first byte) and for its body, seconds a kept-alive
# connection may sit idle, open connections per worker (more are refused with 503) and requests
# per connection before it is closed.
GATEWAY_HTTP_HEADER_TIMEOUT_SECONDS = env_int("GATEWAY_HTTP_HEADER_TIMEOUT_SECONDS", 10)
GATEWAY_HTTP_BODY_TIMEOUT_SECONDS = env_int("GATEWAY_HTTP_BODY_TIMEOUT_SECONDS", 60)
GATEWAY_HTTP_IDLE_TIMEOUT_SECONDS = env_int("GATEWAY_HTTP_IDLE_TIMEOUT_SECONDS", 30)
GATEWAY_HTTP_MAX_CONNECTIONS = env_int("GATEWAY_HTTP_MAX_CONNECTIONS", 1000)
GATEWAY_HTTP_MAX_REQUESTS_PER_CONNECTION = env_int("GATEWAY_HTTP_MAX_REQUESTS_PER_CONNECTION", 1000)
# Largest accepted request body, compressed or not, and largest size after decompression.
GATEWAY_MAX_REQUEST_BYTES = env_int("GATEWAY_MAX_REQUEST_BYTES", 4 * 1024 * 1024)
GATEWAY_MAX_DECOMPRESSED_BYTES = env_int("GATEWAY_MAX_DECOMPRESSED_BYTES", 4 * 1024 * 1024)
# Items stamped further than this in the future are rejected one by one (a sender's clock that
# is wrong); items older than the tenant's retention are too.
GATEWAY_FUTURE_GRACE_SECONDS = env_int("GATEWAY_FUTURE_GRACE_SECONDS", 600)
# CORS for browser exporters on /v1/*: origins that may send at all (comma-separated; exact,
# https://*.example.com, or *), headers they may send besides Content-Type, Authorization and
# X-Api-Key, and how long a browser may cache a preflight. Each tenant also lists its own origins.
GATEWAY_CORS_ALLOWED_ORIGINS = [
    o.strip() for o in os.environ.get("GATEWAY_CORS_ALLOWED_ORIGINS", "").split(",") if o.strip()
]
GATEWAY_CORS_ALLOWED_HEADERS = [
    h.strip() for h in os.environ.get("GATEWAY_CORS_ALLOWED_HEADERS", "").split(",") if h.strip()
]
GATEWAY_CORS_MAX_AGE_SECONDS = env_int("GATEWAY_CORS_MAX_AGE_SECONDS", 7200)
# Seconds an exporter is told to wait when storage is unavailable.
GATEWAY_RETRY_AFTER_SECONDS = env_int("GATEWAY_RETRY_AFTER_SECONDS", 5)
# TLS on OTLP/gRPC, OTLP/HTTP and the console: PEM certificate chain and private key (both or
# neither). A client CA turns on mutual TLS; GATEWAY_TLS_CLIENT_AUTH says whether a client
# certificate is `optional` (HTTP only: grpcio can only require one or not ask) or `required`.
GATEWAY_TLS_CERT_FILE = os.environ.get("GATEWAY_TLS_CERT_FILE", "")
GATEWAY_TLS_KEY_FILE = os.environ.get("GATEWAY_TLS_KEY_FILE", "")
GATEWAY_TLS_CLIENT_CA_FILE = os.environ.get("GATEWAY_TLS_CLIENT_CA_FILE", "")
GATEWAY_TLS_CLIENT_AUTH = os.environ.get("GATEWAY_TLS_CLIENT_AUTH", "") or "optional"

# --- Storage ---------------------------------------------------------------------------------
GATEWAY_CLICKHOUSE_URL = os.environ.get("GATEWAY_CLICKHOUSE_URL", f"chdb://{DATA_DIR / 'clickhouse'}")
# Batcher (storage.batcher): most rows in one INSERT; how long an INSERT waits for the rows of
# requests being prepared (LINGER) and for requests yet to arrive (WAIT); and how long a
# request waits for its rows to be stored before it is answered 503.
GATEWAY_BATCH_MAX_ROWS = env_int("GATEWAY_BATCH_MAX_ROWS", 50_000)
# 15 ms: under load an INSERT then carries ~3.4 instead of ~2 requests' rows (fewer parts for
# chDB to write and merge: +6% spans/s at the benchmark's maximum). A request alone is not held.
GATEWAY_BATCH_LINGER_MS = env_int("GATEWAY_BATCH_LINGER_MS", 15)
GATEWAY_BATCH_WAIT_MS = env_int("GATEWAY_BATCH_WAIT_MS", 0)
# While more than one tenant is sending, an INSERT takes at most this many rows of each, tenants
# least recently written first (storage.batcher): one tenant's backlog then neither fills every
# INSERT nor makes another tenant's rows wait behind a long one.
GATEWAY_BATCH_FAIR_ROWS = env_int("GATEWAY_BATCH_FAIR_ROWS", 2_000)
# ... and busy tenants' INSERTs go on a second connection, written while the light tenants'
# are (storage.batcher, `_send_busy`), so that a light tenant's request never waits for them.
GATEWAY_BATCH_BUSY_LANE = env_bool("GATEWAY_BATCH_BUSY_LANE", True)
# ... at this much lower CPU priority (nice), so that while the CPUs are all taken the others'
# requests get them first; 0: the same priority as everything else.
GATEWAY_BATCH_BUSY_NICENESS = env_int("GATEWAY_BATCH_BUSY_NICENESS", 10)
GATEWAY_STORE_TIMEOUT_SECONDS = env_int("GATEWAY_STORE_TIMEOUT_SECONDS", 30)
# Worker processes that flatten, protect and encode requests (gateway.otlp.prepare), so that
# Python work is not bound to one GIL. Unset: one per CPU available in the embedded mode, where
# one process serves everything; none with a ClickHouse server, where you run several serving
# processes instead. 0: in the request's own thread.
GATEWAY_PREPARE_PROCESSES = (
    env_int("GATEWAY_PREPARE_PROCESSES", 0) if os.environ.get("GATEWAY_PREPARE_PROCESSES", "") != "" else None
)
# Embedded chDB: threads for its background merges. Unset: half the CPUs available (at least
# one), so that merges, which run whenever parts are waiting, cannot take every core from the
# requests being answered.
GATEWAY_CHDB_MERGE_THREADS = env_int("GATEWAY_CHDB_MERGE_THREADS", 0) or None
# Days a tenant's telemetry is kept when its plan says nothing else.
GATEWAY_DEFAULT_RETENTION_DAYS = env_int("GATEWAY_DEFAULT_RETENTION_DAYS", 30)
# A ClickHouse cluster (a remote_servers name, or the `{cluster}` macro): telemetry tables are
# then ReplicatedMergeTree `<table>_local` ON CLUSTER plus Distributed tables sharded by tenant.
GATEWAY_CLICKHOUSE_CLUSTER = os.environ.get("GATEWAY_CLICKHOUSE_CLUSTER", "")
# INSERTs with async_insert=1 and wait_for_async_insert=1: a ClickHouse server fed by many
# gateway processes batches their INSERTs into fewer parts itself; each INSERT still returns
# only once its rows are written, so nothing is acknowledged before it is stored.
GATEWAY_CLICKHOUSE_ASYNC_INSERT = env_bool("GATEWAY_CLICKHOUSE_ASYNC_INSERT", False)
# Apply ClickHouse migrations when a process builds its pipeline. Unset: the embedded all-in-one
# does; with a ClickHouse server the migrations Job does it once, before new pods start.
GATEWAY_MIGRATE_ON_START = (
    env_bool("GATEWAY_MIGRATE_ON_START", False) if os.environ.get("GATEWAY_MIGRATE_ON_START", "") != "" else None
)

# /readyz is not ready while ClickHouse's disk (the data directory's, embedded) has less free.
GATEWAY_READY_MIN_FREE_MB = env_int("GATEWAY_READY_MIN_FREE_MB", 100)
# ... and for this many seconds after an INSERT failed for a reason that can pass (then it is
# ready again, so that traffic can show whether storage recovered).
GATEWAY_READY_FAILURE_SECONDS = env_int("GATEWAY_READY_FAILURE_SECONDS", 30)

# --- Production processes and metrics (see docs/OPERATIONS.md) ------------------------------
# serve_http: gunicorn workers; 0 = one per CPU available to the container (cgroup quota).
GATEWAY_HTTP_WORKERS = env_int("GATEWAY_HTTP_WORKERS", 0)
# serve_grpc: close client connections after this many seconds (0: never), so that clients
# reconnect and spread over new replicas behind a plain TCP load balancer.
GATEWAY_GRPC_MAX_CONNECTION_AGE_SECONDS = env_int("GATEWAY_GRPC_MAX_CONNECTION_AGE_SECONDS", 0)
# serve_grpc: port of its Prometheus /metrics (the HTTP processes serve /metrics themselves).
GATEWAY_METRICS_PORT = env_int("GATEWAY_METRICS_PORT", 9464)
# Label request metrics with the tenant's slug: one series per tenant, so off by default.
GATEWAY_METRICS_TENANT_LABEL = env_bool("GATEWAY_METRICS_TENANT_LABEL", False)
# When set, /metrics asks for `Authorization: Bearer <token>`.
GATEWAY_METRICS_TOKEN = os.environ.get("GATEWAY_METRICS_TOKEN", "")
