"""System checks for configurations that run but cannot work as deployed.

The deploy checks run with `manage.py check --deploy` (the migrations Job runs it first)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

import storage
from storage.schema import Layout


def _embedded() -> bool:
    try:
        return storage.store_from_settings().embedded  # not connected: asking costs nothing
    except ValueError:  # an unusable URL or cluster: clickhouse_cluster_check says which
        return False


@register(Tags.database)
def clickhouse_cluster_check(app_configs, **kwargs):
    cluster = settings.GATEWAY_CLICKHOUSE_CLUSTER
    if not cluster:
        return []
    try:
        Layout(cluster)
    except ValueError as exc:
        return [Error(str(exc), hint="letters, digits, '_', '.', '-' or a {macro}", id="gateway.E001")]
    try:
        storage.store_from_settings()
    except ValueError:
        return [
            Error(
                "GATEWAY_CLICKHOUSE_CLUSTER is set but GATEWAY_CLICKHOUSE_URL is embedded chDB",
                hint="point GATEWAY_CLICKHOUSE_URL at a server of the cluster (http(s)://...)",
                id="gateway.E002",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def production_services_check(app_configs, **kwargs):
    problems = []
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        problems.append(
            Warning(
                "the database is SQLite in the data directory: every replica would have its own",
                hint="set DATABASE_URL=postgres://...",
                id="gateway.W001",
            )
        )
    if settings.CACHES["default"]["BACKEND"].endswith("LocMemCache"):
        problems.append(
            Warning(
                "the cache is local memory: rate limits and quotas would count per process",
                hint="set GATEWAY_CACHE_URL=redis://...",
                id="gateway.W002",
            )
        )
    if _embedded():
        problems.append(
            Warning(
                "ClickHouse is embedded chDB: only one process may write it",
                hint="set GATEWAY_CLICKHOUSE_URL=https://user:password@host:8443/database",
                id="gateway.W003",
            )
        )
    signing_key = getattr(settings, "GATEWAY_AUDIT_SIGNING_KEY_FILE", None)
    if signing_key and Path(signing_key).parent == Path(settings.DATA_DIR):
        problems.append(
            Warning(
                "the audit signing key is generated in the data directory: each replica would sign "
                "exports with its own key",
                hint="mount one Ed25519 key from a Secret and set GATEWAY_AUDIT_SIGNING_KEY_FILE",
                id="gateway.W004",
            )
        )
    return problems


@register(Tags.security)
def tls_check(app_configs, **kwargs):
    from django.core.exceptions import ImproperlyConfigured

    from gateway.tls import TlsConfig

    try:
        TlsConfig.from_settings()
    except (ImproperlyConfigured, OSError) as exc:  # OSError/ssl.SSLError: unreadable or mismatched PEM
        return [
            Error(
                f"TLS is misconfigured: {exc}",
                hint="GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE name a PEM certificate chain and its "
                "key; GATEWAY_TLS_CLIENT_CA_FILE the PEM CA(s) of client certificates",
                id="gateway.E003",
            )
        ]
    return []
