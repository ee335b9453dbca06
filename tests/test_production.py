"""The production processes as the container runs them (deploy/entrypoint.sh roles), with
gateway.settings_production, against the PostgreSQL and Redis of this machine: `check
--deploy`, the migrations role, the HTTP role (gunicorn) and the gRPC role, and metrics summed
across gunicorn workers. ClickHouse is embedded chDB here (no server runs on this machine),
one directory per process; the multi-worker test points at an unreachable server instead.

PostgreSQL and Redis default to 127.0.0.1 (GATEWAY_TEST_POSTGRES_URL, GATEWAY_TEST_REDIS_URL
override); tests that need them skip, saying why, when they are unreachable."""

from __future__ import annotations

import json
import os
import re
import runpy
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client.parser import text_string_to_metric_families

from tests import otlp_requests
from tests.clients import http_post

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
ALLOWED_HOST = "otlp.example.com"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment the Helm chart gives a pod, for this machine."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_", "DATABASE_", "PROMETHEUS_"))
    }
    env = {
        **inherited,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "gateway.settings_production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": ALLOWED_HOST,
        "GATEWAY_POD_IP": "127.0.0.1",
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_AUDIT_SIGNING_KEY_FILE": str(data_dir.parent / "secrets" / "audit-signing-key.pem"),
        "GATEWAY_HOST": "127.0.0.1",
    }
    env.update(overrides)
    return env


def run_role(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(ENTRYPOINT), *args], env=env, cwd="/", capture_output=True, text=True, timeout=timeout)


# --- settings and checks (no services needed) ------------------------------------------------
def test_check_deploy_passes_with_production_settings(tmp_path):
    env = production_env(
        tmp_path / "data",
        DATABASE_URL="postgres://gateway:pw@db.internal:5432/gateway",
        GATEWAY_CACHE_URL="redis://redis.internal:6379/0",
        GATEWAY_CLICKHOUSE_URL="https://gateway:pw@clickhouse.internal:8443/otel",
        GATEWAY_CLICKHOUSE_CLUSTER="gw",
    )
    out = run_role(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout
    assert not (tmp_path / "data").exists()  # production writes nothing into a data directory


def test_check_deploy_names_what_production_still_lacks(tmp_path):
    env = production_env(tmp_path / "data")
    del env["GATEWAY_AUDIT_SIGNING_KEY_FILE"]
    out = run_role(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert out.returncode != 0
    for check_id in ("gateway.W001", "gateway.W002", "gateway.W003", "gateway.W004"):
        assert check_id in out.stderr, out.stderr


def test_production_settings_refuse_a_missing_secret_key_and_wildcard_hosts(tmp_path):
    env = production_env(tmp_path / "data")
    del env["DJANGO_SECRET_KEY"]
    out = run_role(env, "manage.py", "check")
    assert out.returncode != 0 and "needs DJANGO_SECRET_KEY" in out.stderr
    out = run_role(production_env(tmp_path / "data", DJANGO_ALLOWED_HOSTS="*"), "manage.py", "check")
    assert out.returncode != 0 and "must name the hosts" in out.stderr


def test_migrate_on_start_defaults_to_embedded_only(monkeypatch):
    from django.test import override_settings

    from gateway.otlp.runtime import migrate_on_start
    from storage.clickhouse import Store

    monkeypatch.delenv("GATEWAY_MIGRATE_ON_START", raising=False)
    assert runpy.run_path(str(ROOT / "gateway" / "settings.py"))["GATEWAY_MIGRATE_ON_START"] is None
    with override_settings(GATEWAY_MIGRATE_ON_START=None):
        assert migrate_on_start(Store("chdb:///tmp/otlpgw-settings-test")) is True
        assert migrate_on_start(Store("https://u:p@clickhouse:8443/db")) is False
    monkeypatch.setenv("GATEWAY_MIGRATE_ON_START", "true")
    assert runpy.run_path(str(ROOT / "gateway" / "settings.py"))["GATEWAY_MIGRATE_ON_START"] is True
    with override_settings(GATEWAY_MIGRATE_ON_START=True):
        assert migrate_on_start(Store("https://u:p@clickhouse:8443/db")) is True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "sqlite:////srv/gateway/db.sqlite3",
            {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/gateway/db.sqlite3"},
        ),
        (
            "postgres://gw:p%40ss@db.internal:6432/gateway?sslmode=require",
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "gateway",
                "USER": "gw",
                "PASSWORD": "p@ss",
                "HOST": "db.internal",
                "PORT": 6432,
                "OPTIONS": {"sslmode": "require"},
            },
        ),
        ("postgresql://db.internal/", {"ENGINE": "django.db.backends.postgresql", "NAME": "postgres"}),
    ],
)
def test_database_url_takes_sqlite_and_postgresql(monkeypatch, url, expected):
    monkeypatch.setenv("DATABASE_URL", url)
    database = runpy.run_path(str(ROOT / "gateway" / "settings.py"))["DATABASES"]["default"]
    assert expected.items() <= database.items(), database
    if "sqlite" in url:
        assert database["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
        assert database["TEST"]["NAME"] == "/srv/gateway/test-db.sqlite3"


def test_database_url_of_another_kind_is_refused_with_what_is_taken(monkeypatch):
    for url in ("mysql://root@localhost/gw", "nonsense://x"):
        monkeypatch.setenv("DATABASE_URL", url)
        with pytest.raises(ValueError, match="DATABASE_URL must be sqlite:///path or postgres://"):
            runpy.run_path(str(ROOT / "gateway" / "settings.py"))


# --- PostgreSQL and Redis ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres_database():
    """A fresh PostgreSQL database for this module, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}".strip())
    name = f"otlpgw_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgres://", 1)
    yield f"{base}/{name}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="module")
def redis_client():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {exc}")
    yield client
    for key in client.scan_iter("*gateway:readyz:*"):
        client.delete(key)


@pytest.fixture(scope="module")
def migrated(postgres_database, redis_client, tmp_path_factory):
    """The migrations role run once against the module's PostgreSQL database."""
    root = tmp_path_factory.mktemp("production")
    env = production_env(
        root / "data",
        DATABASE_URL=postgres_database,
        GATEWAY_CACHE_URL=REDIS_URL,
        GATEWAY_CLICKHOUSE_URL=f"chdb://{root / 'clickhouse-migrations'}",
    )
    out = run_role(env, "migrate")
    assert out.returncode == 0, out.stdout + out.stderr
    return env, out


def test_migrate_role_applies_every_migration_to_postgresql(migrated, postgres_database):
    import psycopg

    env, first = migrated
    assert "Applied ClickHouse migrations [1, 2, 3, 4, 5, 6, 7]" in first.stdout
    with psycopg.connect(postgres_database.replace("postgres://", "postgresql://", 1)) as connection:
        apps = {app for (app,) in connection.execute("SELECT DISTINCT app FROM django_migrations")}
        tables = {name for (name,) in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"auth", "admin", "sessions", "tenants"} <= apps
    assert {"tenants_tenant", "tenants_apikey"} <= tables
    # Nothing left to apply, and the role is safe to run again (every upgrade runs it).
    assert run_role(env, "manage.py", "migrate", "--check").returncode == 0
    again = run_role(env, "migrate")
    assert again.returncode == 0, again.stderr
    assert "No migrations to apply" in again.stdout and "is up to date" in again.stdout


class Process:
    """A role of the image, started in the background, stopped with SIGTERM like a pod."""

    def __init__(self, env: dict, log: Path, *args: str):
        self.log = log
        self.output = open(log, "w")
        self.process = subprocess.Popen(
            [str(ENTRYPOINT), *args], env=env, cwd="/", stdout=self.output, stderr=subprocess.STDOUT
        )

    def wait_until(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"{what} exited:\n{self.text()}"
            assert time.monotonic() < deadline, f"{what} did not start:\n{self.text()}"
            time.sleep(0.2)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(40)
        self.output.close()
        return code


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _http_up(port: int):
    def check() -> bool:
        try:
            return _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        except OSError:
            return False

    return check


def _grpc_serving(port: int):
    def check() -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    return check


def _metric(text: str, name: str, **labels) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _chdb_rows(directory: Path, sql: str) -> list:
    script = (
        "import json, sys, clickhouse_connect\n"
        f"client = clickhouse_connect.get_client(dsn='chdb://{directory}')\n"
        "print(json.dumps(client.query(sys.argv[1]).result_rows, default=str))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, sql], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _new_tenant(env: dict) -> tuple[str, str]:
    out = run_role(env, "manage.py", "create_tenant", f"Production {uuid.uuid4().hex[:6]}")
    assert out.returncode == 0, out.stderr
    key = re.search(r"otlpgw_\w+", out.stdout).group(0)
    tenant_id = re.search(r"id ([0-9a-f-]{36})", out.stdout).group(1)
    return key, tenant_id


@pytest.mark.slow
def test_http_and_grpc_roles_on_postgresql_and_redis(migrated, redis_client, tmp_path):
    env, _ = migrated
    key, tenant_id = _new_tenant(env)
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    http_env = {**env, "GATEWAY_HTTP_PORT": str(http_port), "GATEWAY_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch-http'}"}
    grpc_env = {
        **env,
        "GATEWAY_GRPC_PORT": str(grpc_port),
        "GATEWAY_METRICS_PORT": str(metrics_port),
        "GATEWAY_GRPC_MAX_CONNECTION_AGE_SECONDS": "60",
        "GATEWAY_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch-grpc'}",
    }
    http = Process(http_env, tmp_path / "http.log", "http", "--workers", "1")
    grpc_process = Process(grpc_env, tmp_path / "grpc.log", "grpc")
    try:
        http.wait_until(_http_up(http_port), "the HTTP role")
        grpc_process.wait_until(_grpc_serving(grpc_port), "the gRPC role")
        base = f"http://127.0.0.1:{http_port}"

        status, _, body = _get(f"{base}/readyz")
        assert (status, json.loads(body)["checks"]) == (
            200,
            {"database": "ok", "cache": "ok", "clickhouse": "ok", "clickhouse_writes": "ok"},
        )
        assert list(redis_client.scan_iter("*gateway:readyz:*")), "readyz did not go through Redis"
        # Hosts: the pod IP (probes, scrapes) and the configured names pass, others do not.
        assert _get(f"{base}/healthz", {"Host": "evil.example"})[0] == 400
        assert _get(f"{base}/healthz", {"Host": ALLOWED_HOST})[0] == 200
        # HTTPS: the console redirects, HSTS is sent over TLS (as the ingress reports it).
        status, headers, _ = _get(f"{base}/admin/login/", {"Host": ALLOWED_HOST})
        assert status == 301 and headers["Location"] == f"https://{ALLOWED_HOST}/admin/login/"
        _, headers, _ = _get(f"{base}/healthz", {"Host": ALLOWED_HOST, "X-Forwarded-Proto": "https"})
        assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"

        # OTLP/HTTP over plain HTTP inside the cluster is not redirected.
        reply = http_post(
            base, "traces", otlp_requests.dumps(otlp_requests.traces_json()), key=key, content_type="application/json"
        )
        assert reply.status == 200, reply.body
        provider = TracerProvider(resource=Resource.create({"service.name": "prod-grpc"}))
        provider.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(
                    endpoint=f"127.0.0.1:{grpc_port}", insecure=True, headers={"authorization": f"Bearer {key}"}
                )
            )
        )
        with provider.get_tracer("prod").start_as_current_span("over-grpc"):
            pass
        provider.shutdown()

        http_metrics = _get(f"{base}/metrics")[2].decode()
        assert _metric(http_metrics, "otlp_gateway_requests_total", transport="http", outcome="accepted") == 1
        grpc_metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")[2].decode()
        assert _metric(grpc_metrics, "otlp_gateway_requests_total", transport="grpc", outcome="accepted") == 1
        assert _metric(grpc_metrics, "otlp_gateway_clickhouse_rows_total", result="stored", table="otel_traces") == 1
    finally:
        http_code, grpc_code = http.stop(), grpc_process.stop()
    assert http_code == 0, http.text()
    assert grpc_code == 0, grpc_process.text()

    # Logs are JSON lines, gunicorn's included.
    for process in (http, grpc_process):
        records = [json.loads(line) for line in process.text().splitlines() if line.startswith("{")]
        assert records and all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    assert any(
        record["logger"] == "gunicorn.error"
        for record in (json.loads(line) for line in http.text().splitlines() if line.startswith("{"))
    )
    assert _chdb_rows(tmp_path / "ch-http", "SELECT TenantId, ServiceName FROM otel_traces") == [
        [tenant_id, "json-svc"]
    ]
    assert _chdb_rows(tmp_path / "ch-grpc", "SELECT TenantId, SpanName FROM otel_traces") == [[tenant_id, "over-grpc"]]


@pytest.mark.slow
def test_http_workers_count_into_one_set_of_metrics_and_report_clickhouse_down(migrated, tmp_path):
    env, _ = migrated
    key, _ = _new_tenant(env)
    port = _free_port()
    unreachable = f"http://default:pw@127.0.0.1:{_free_port()}/default"
    multiproc = tmp_path / "prometheus"
    server = Process(
        {
            **env,
            "GATEWAY_HTTP_PORT": str(port),
            "GATEWAY_CLICKHOUSE_URL": unreachable,
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "GATEWAY_RETRY_AFTER_SECONDS": "7",
        },
        tmp_path / "http.log",
        "http",
        "--workers",
        "2",
    )
    try:
        server.wait_until(_http_up(port), "the HTTP role")
        base = f"http://127.0.0.1:{port}"
        status, _, body = _get(f"{base}/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {
            "database": "ok",
            "cache": "ok",
            "clickhouse": "unreachable",
            "clickhouse_writes": "error: ClickHouse is unreachable",
        }

        body = otlp_requests.traces_request(2).SerializeToString()
        requests = 0

        def workers_counted() -> set[str]:  # counter_<pid>.db: written by a worker that counted a request
            return {path.stem.split("_")[-1] for path in multiproc.glob("counter_*.db")}

        # One connection each; the kernel hands them to either worker. Go on until both counted.
        while requests < 8 or len(workers_counted()) < 2:
            assert requests < 200, "every request went to one worker"
            reply = http_post(base, "traces", body, key=key)
            assert (reply.status, reply.headers["retry-after"]) == (503, "7")
            requests += 1
        for _ in range(4):  # whichever worker answers the scrape, it reports every worker's counts
            text = _get(f"{base}/metrics")[2].decode()
            assert _metric(text, "otlp_gateway_requests_total", outcome="storage_unavailable") == requests
            assert (
                _metric(text, "otlp_gateway_clickhouse_rows_total", result="failed", table="otel_traces")
                == 2 * requests
            )
            assert _metric(text, "otlp_gateway_batcher_queue_depth") == 0
    finally:
        code = server.stop()
    assert code == 0, server.text()
    assert "2 worker(s)" in server.text()
