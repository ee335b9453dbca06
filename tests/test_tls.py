"""TLS and mutual TLS on both transports, with certificates made at test time and the real
OpenTelemetry exporters configured the standard way (OTEL_EXPORTER_OTLP_CERTIFICATE,
OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_KEY): in-process servers on
ephemeral ports, plus one run of `manage.py serve` with TLS."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import requests
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from gateway.edge import ServerThread, limits_from_settings
from gateway.otlp import runtime
from gateway.otlp.grpc_server import build_server
from gateway.tls import ClientAuth, TlsConfig, certificate_sha256
from gateway.wsgi import application
from tenants.audit import Actor
from tenants.authentication import CredentialsRefused, authenticate
from tenants.certificates import register_client_certificate, revoke_client_certificate
from tenants.models import AuditEvent, ClientCertificate
from tenants.services import update_tenant
from tests.clients import grpc_export
from tests.otlp_requests import traces_request
from tests.pki import Issued, Pki, make_pki
from vocabulary import Reason, Signal

ACTOR = Actor.system("tests")
CERT_ENV = ("OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls(pki: Pki, client_auth: ClientAuth | None) -> TlsConfig:
    return TlsConfig(
        cert_file=pki.server.cert_file,
        key_file=pki.server.key_file,
        client_ca_file=pki.ca.cert_file if client_auth else "",
        client_auth=client_auth or ClientAuth.OPTIONAL,
    )


def _grpc_server(pki: Pki, client_auth: ClientAuth | None):
    from django.conf import settings

    server, port = build_server(
        runtime.get_pipeline,
        address="127.0.0.1:0",
        max_message_bytes=settings.GATEWAY_MAX_REQUEST_BYTES,
        threads=4,
        tls=_tls(pki, client_auth),
    )
    server.start()
    return server, port


@pytest.fixture(scope="module")
def grpc_mtls_port(pki, pipeline):
    """OTLP/gRPC requiring a client certificate signed by the test CA."""
    server, port = _grpc_server(pki, ClientAuth.REQUIRED)
    yield port
    server.stop(grace=None)


@pytest.fixture(scope="module")
def grpc_tls_port(pki, pipeline):
    """OTLP/gRPC over TLS, API keys only."""
    server, port = _grpc_server(pki, None)
    yield port
    server.stop(grace=None)


@pytest.fixture(scope="module")
def https_url(pki, pipeline):
    """OTLP/HTTP over TLS with optional client certificates (the mode that serves both kinds),
    behind the production HTTP edge."""
    server = ServerThread(
        application, limits=limits_from_settings(), ssl_context=_tls(pki, ClientAuth.OPTIONAL).server_ssl_context()
    ).start()
    yield f"https://127.0.0.1:{server.port}"
    server.stop()


@pytest.fixture
def otlp_tls_env(monkeypatch, pki):
    """Sets the standard exporter variables: trust the test CA, optionally present a client certificate."""
    # requests lets these override the exporter's own CA file (psf/requests#3829): a machine-wide
    # bundle would hide OTEL_EXPORTER_OTLP_CERTIFICATE from the OTLP/HTTP exporter.
    for name in CERT_ENV + ("OTEL_EXPORTER_OTLP_INSECURE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)

    def configure(client: Issued | None = None, *, trust: str | None = None):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", trust or pki.ca.cert_file)
        for name in CERT_ENV[1:]:
            monkeypatch.delenv(name, raising=False)
        if client is not None:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", client.cert_file)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", client.key_file)

    return configure


def _span(name: str):
    provider = TracerProvider(resource=Resource.create({"service.name": "tls"}))
    with provider.get_tracer("tls").start_as_current_span(name) as span:
        pass
    provider.shutdown()
    return span


def _grpc_export(port: int, span_name: str, key: str | None = None, *, insecure: bool = False) -> SpanExportResult:
    scheme = "http" if insecure else "https"
    exporter = GrpcSpanExporter(
        endpoint=f"{scheme}://localhost:{port}", timeout=3, headers={"authorization": f"Bearer {key}"} if key else None
    )
    try:
        return exporter.export([_span(span_name)])
    finally:
        exporter.shutdown()


def _http_export(base_url: str, span_name: str, key: str | None = None) -> SpanExportResult:
    exporter = HttpSpanExporter(
        endpoint=f"{base_url}/v1/traces", timeout=3, headers={"x-api-key": key} if key else None
    )
    try:
        return exporter.export([_span(span_name)])
    finally:
        exporter.shutdown()


def _span_names(tenant) -> list[str]:
    return [
        row["SpanName"]
        for row in tenant.rows("SELECT SpanName FROM otel_traces WHERE TenantId = {tenant_id:String} ORDER BY SpanName")
    ]


def _register(tenant, issued: Issued, name: str = "collector"):
    return register_client_certificate(actor=ACTOR, tenant=tenant.tenant, pem=issued.pem, name=name)


# --- OTLP/gRPC ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_grpc_tls_with_api_key(grpc_tls_port, tenant, otlp_tls_env):
    otlp_tls_env()
    assert _grpc_export(grpc_tls_port, "over tls", tenant.key) == SpanExportResult.SUCCESS
    assert _grpc_export(grpc_tls_port, "plaintext", tenant.key, insecure=True) == SpanExportResult.FAILURE
    assert _span_names(tenant) == ["over tls"]


@pytest.mark.django_db(transaction=True)
def test_grpc_client_that_does_not_trust_the_server_fails(grpc_tls_port, tenant, otlp_tls_env, pki):
    otlp_tls_env(trust=pki.rogue_ca.cert_file)
    assert _grpc_export(grpc_tls_port, "unverified server", tenant.key) == SpanExportResult.FAILURE
    assert tenant.count("otel_traces") == 0


@pytest.mark.django_db(transaction=True)
def test_grpc_client_certificate_in_place_of_api_key(grpc_mtls_port, tenant, otlp_tls_env, pki):
    _register(tenant, pki.client_a)
    otlp_tls_env(pki.client_a)
    assert _grpc_export(grpc_mtls_port, "by certificate", key=None) == SpanExportResult.SUCCESS
    assert _grpc_export(grpc_mtls_port, "by certificate and key", tenant.key) == SpanExportResult.SUCCESS
    assert _span_names(tenant) == ["by certificate", "by certificate and key"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client", ["none", "plaintext", "untrusted_ca", "expired"])
def test_grpc_mtls_refuses(grpc_mtls_port, tenant, otlp_tls_env, pki, client):
    if client == "expired":  # even when registered: the handshake refuses it before any lookup
        ClientCertificate.objects.create(
            tenant=tenant.tenant,
            name="old",
            sha256=certificate_sha256(pki.expired.der),
            subject="CN=client-expired",
            not_after=timezone.now() - timedelta(days=1),
        )
    otlp_tls_env({"none": None, "plaintext": None, "untrusted_ca": pki.rogue_client, "expired": pki.expired}[client])
    result = _grpc_export(grpc_mtls_port, "refused", tenant.key, insecure=client == "plaintext")
    assert result == SpanExportResult.FAILURE
    assert tenant.count("otel_traces") == 0


def _mtls_channel(pki: Pki, client: Issued, port: int) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        Path(pki.ca.cert_file).read_bytes(), Path(client.key_file).read_bytes(), client.pem
    )
    return grpc.secure_channel(f"localhost:{port}", credentials)


@pytest.mark.django_db(transaction=True)
def test_grpc_certificate_of_another_tenant_cannot_write_as_this_tenant(grpc_mtls_port, make_tenant, otlp_tls_env, pki):
    owner, victim = make_tenant(), make_tenant()
    _register(owner, pki.client_a, name="owner-collector")
    otlp_tls_env(pki.client_a)
    assert _grpc_export(grpc_mtls_port, "as victim", victim.key) == SpanExportResult.FAILURE
    with _mtls_channel(pki, pki.client_a, grpc_mtls_port) as channel, pytest.raises(grpc.RpcError) as refused:
        grpc_export(channel, "traces", traces_request().SerializeToString(), key=victim.key)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == (
        f"the client certificate 'owner-collector' is registered to tenant {owner.tenant.slug}, but the API key "
        f"belongs to tenant {victim.tenant.slug}; send one tenant's credentials only"
    )
    assert victim.count("otel_traces") == 0 and owner.count("otel_traces") == 0


@pytest.mark.django_db(transaction=True)
def test_grpc_unregistered_certificate_without_key_is_unauthenticated(grpc_mtls_port, tenant, pki):
    with (
        _mtls_channel(pki, pki.client_unregistered, grpc_mtls_port) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        grpc_export(channel, "traces", traces_request().SerializeToString(), key=None)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "is not registered to a tenant" in refused.value.details()


# --- OTLP/HTTP ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_http_trusted_client_certificate_in_place_of_api_key(https_url, tenant, otlp_tls_env, pki):
    _register(tenant, pki.client_b)
    otlp_tls_env(pki.client_b)
    assert _http_export(https_url, "http by certificate") == SpanExportResult.SUCCESS
    provider = LoggerProvider(resource=Resource.create({"service.name": "tls"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(HttpLogExporter(endpoint=f"{https_url}/v1/logs")))
    provider.get_logger("tls").emit(body="a log over mutual TLS")
    provider.shutdown()
    assert _span_names(tenant) == ["http by certificate"]
    assert tenant.rows("SELECT Body FROM otel_logs WHERE TenantId = {tenant_id:String}") == [
        {"Body": "a log over mutual TLS"}
    ]


@pytest.mark.django_db(transaction=True)
def test_http_tls_with_api_key_and_no_client_certificate(https_url, tenant, otlp_tls_env):
    otlp_tls_env()
    assert _http_export(https_url, "http by key", tenant.key) == SpanExportResult.SUCCESS
    assert _span_names(tenant) == ["http by key"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client", ["plaintext", "untrusted_ca", "expired", "untrusted_server"])
def test_http_refuses(https_url, tenant, otlp_tls_env, pki, client):
    if client == "untrusted_server":
        otlp_tls_env(trust=pki.rogue_ca.cert_file)
    else:
        otlp_tls_env({"plaintext": None, "untrusted_ca": pki.rogue_client, "expired": pki.expired}[client])
    url = https_url.replace("https://", "http://") if client == "plaintext" else https_url
    assert _http_export(url, "refused", tenant.key) == SpanExportResult.FAILURE
    assert tenant.count("otel_traces") == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("client, alert", [("expired", "certificate expired"), ("untrusted_ca", "unknown ca")])
def test_http_refused_certificate_alert_names_the_cause(https_url, pki, client, alert):
    issued = {"expired": pki.expired, "untrusted_ca": pki.rogue_client}[client]
    context = ssl.create_default_context(cafile=pki.ca.cert_file)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    host, port = https_url.removeprefix("https://").split(":")
    # Under TLS 1.3 the server judges the client's certificate after the client's side of the
    # handshake is done; its alert is the next thing the client reads (sending first could race it).
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        with pytest.raises(ssl.SSLError, match=f"(?i){alert}"):
            connection.recv(1)


@pytest.mark.django_db(transaction=True)
def test_http_certificate_of_another_tenant_cannot_write_as_this_tenant(https_url, make_tenant, otlp_tls_env, pki):
    owner, victim = make_tenant(), make_tenant()
    _register(owner, pki.client_a, name="owner-collector")
    otlp_tls_env(pki.client_a)
    assert _http_export(https_url, "as victim", victim.key) == SpanExportResult.FAILURE
    reply = requests.post(
        f"{https_url}/v1/traces",
        data=traces_request().SerializeToString(),
        timeout=10,
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {victim.key}"},
        verify=pki.ca.cert_file,
        cert=(pki.client_a.cert_file, pki.client_a.key_file),
    )
    assert reply.status_code == 403
    assert (
        f"registered to tenant {owner.tenant.slug}, but the API key belongs to tenant {victim.tenant.slug}"
        in reply.text
    )
    assert victim.count("otel_traces") == 0 and owner.count("otel_traces") == 0


@pytest.mark.django_db(transaction=True)
def test_http_tenant_policy_requires_certificate_and_key(https_url, tenant, otlp_tls_env, pki):
    _register(tenant, pki.client_a)
    update_tenant(actor=ACTOR, tenant=tenant.tenant, require_client_certificate=True)
    otlp_tls_env()
    assert _http_export(https_url, "key only", tenant.key) == SpanExportResult.FAILURE
    otlp_tls_env(pki.client_a)
    assert _http_export(https_url, "certificate only") == SpanExportResult.FAILURE
    assert _http_export(https_url, "both", tenant.key) == SpanExportResult.SUCCESS
    assert _span_names(tenant) == ["both"]


# --- Authentication and registration, without a network --------------------------------------


@pytest.mark.django_db(transaction=True)
def test_authenticate_by_certificate(tenant, pki):
    certificate = _register(tenant, pki.client_a)
    sha = certificate_sha256(pki.client_a.der)
    assert certificate.sha256 == sha
    principal = authenticate(None, Signal.LOGS, client_cert_sha256=sha)
    assert (principal.tenant_id, principal.key_id, principal.client_certificate_id) == (
        str(tenant.tenant.id),
        None,
        certificate.id,
    )
    # An unregistered (but CA-verified) certificate counts for nothing next to a valid key.
    assert (
        authenticate(
            tenant.key, Signal.LOGS, client_cert_sha256=certificate_sha256(pki.client_b.der)
        ).client_certificate_id
        is None
    )
    assert authenticate(tenant.key, Signal.LOGS).key_id is not None  # the old signature still works

    revoke_client_certificate(actor=ACTOR, certificate=certificate)
    for key in (None, tenant.key):
        with pytest.raises(CredentialsRefused, match="was revoked on") as refused:
            authenticate(key, Signal.LOGS, client_cert_sha256=sha)
        assert refused.value.reason == Reason.UNAUTHENTICATED
        assert refused.value.tenant_id == str(tenant.tenant.id)


@pytest.mark.django_db(transaction=True)
def test_expired_registration_is_refused_with_its_date(tenant, pki):
    expired_at = timezone.now() - timedelta(days=1)
    ClientCertificate.objects.create(
        tenant=tenant.tenant,
        name="old",
        sha256=certificate_sha256(pki.expired.der),
        subject="CN=client-expired",
        not_after=expired_at,
    )
    with pytest.raises(CredentialsRefused, match=f"expired on {expired_at:%Y-%m-%d}; register its renewal"):
        authenticate(None, Signal.TRACES, client_cert_sha256=certificate_sha256(pki.expired.der))


@pytest.mark.django_db(transaction=True)
def test_suspended_tenant_certificate_is_refused(tenant, pki):
    from tenants.services import suspend_tenant

    _register(tenant, pki.client_a)
    suspend_tenant(actor=ACTOR, tenant=tenant.tenant)
    with pytest.raises(CredentialsRefused, match="is suspended") as refused:
        authenticate(None, Signal.TRACES, client_cert_sha256=certificate_sha256(pki.client_a.der))
    assert refused.value.reason == Reason.PERMISSION_DENIED


@pytest.mark.django_db(transaction=True)
def test_registration_is_audited_and_validated(make_tenant, pki):
    first, second = make_tenant(), make_tenant()
    certificate = _register(first, pki.client_a, name="edge")
    event = AuditEvent.objects.get(action="client_certificate.registered")
    assert event.target_id == str(certificate.id) and event.actor == "system:tests"
    assert event.changes["after"]["sha256"] == certificate.sha256
    assert event.changes["after"]["subject"] == "CN=client-a,O=otlp-gateway tests"
    with pytest.raises(ValueError, match=f"already registered to tenant {first.tenant.slug} as 'edge'"):
        _register(second, pki.client_a)
    with pytest.raises(ValueError, match="expired on"):
        _register(first, pki.expired)
    with pytest.raises(ValueError, match="is a CA certificate"):
        register_client_certificate(actor=ACTOR, tenant=first.tenant, pem=Path(pki.ca.cert_file).read_text())
    with pytest.raises(ValueError, match="not a PEM certificate"):
        register_client_certificate(actor=ACTOR, tenant=first.tenant, pem="hello")
    revoke_client_certificate(actor=ACTOR, certificate=certificate)
    assert AuditEvent.objects.filter(action="client_certificate.revoked", target_id=str(certificate.id)).exists()


@pytest.mark.django_db(transaction=True)
def test_register_client_certificate_command(tenant, pki, capsys):
    call_command("register_client_certificate", tenant.tenant.slug, pki.client_b.cert_file, name="cmd")
    assert f"sha256 {certificate_sha256(pki.client_b.der)}" in capsys.readouterr().out
    assert ClientCertificate.objects.get(tenant=tenant.tenant).name == "cmd"


def test_tls_settings_are_checked(pki, tmp_path):
    from django.core.exceptions import ImproperlyConfigured

    from gateway.checks import tls_check
    from gateway.processes.gunicorn_app import gunicorn_options

    assert TlsConfig.from_settings() is None and tls_check(None) == []
    with override_settings(
        GATEWAY_TLS_CERT_FILE=pki.server.cert_file,
        GATEWAY_TLS_KEY_FILE=pki.server.key_file,
        GATEWAY_TLS_CLIENT_CA_FILE=pki.ca.cert_file,
        GATEWAY_TLS_CLIENT_AUTH="required",
    ):
        options = gunicorn_options(workers=1)
        assert (options["certfile"], options["keyfile"], options["ca_certs"]) == (
            pki.server.cert_file,
            pki.server.key_file,
            pki.ca.cert_file,
        )
        assert options["cert_reqs"] == ssl.CERT_REQUIRED
    with override_settings(GATEWAY_TLS_CERT_FILE=pki.server.cert_file, GATEWAY_TLS_KEY_FILE=""):
        with pytest.raises(ImproperlyConfigured, match="both GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE"):
            TlsConfig.from_settings()
        assert [error.id for error in tls_check(None)] == ["gateway.E003"]
    with override_settings(GATEWAY_TLS_CERT_FILE=pki.server.cert_file, GATEWAY_TLS_KEY_FILE=pki.client_a.key_file):
        assert "TLS is misconfigured" in tls_check(None)[0].msg  # the key is not the certificate's
    with override_settings(
        GATEWAY_TLS_CERT_FILE=pki.server.cert_file,
        GATEWAY_TLS_KEY_FILE=pki.server.key_file,
        GATEWAY_TLS_CLIENT_CA_FILE=str(tmp_path / "missing.pem"),
    ):
        with pytest.raises(ImproperlyConfigured, match="missing.pem, which is not a readable file"):
            TlsConfig.from_settings()
    with override_settings(
        GATEWAY_TLS_CERT_FILE=pki.server.cert_file,
        GATEWAY_TLS_KEY_FILE=pki.server.key_file,
        GATEWAY_TLS_CLIENT_AUTH="sometimes",
    ):
        with pytest.raises(ImproperlyConfigured, match="optional or required"):
            TlsConfig.from_settings()


# --- manage.py serve with mutual TLS, end to end ---------------------------------------------


@pytest.mark.slow
def test_serve_with_mutual_tls(tmp_path, pki, otlp_tls_env):
    from tests.test_serve import Gateway, _query

    data_dir = tmp_path / "data"
    env = {
        "GATEWAY_TLS_CERT_FILE": pki.server.cert_file,
        "GATEWAY_TLS_KEY_FILE": pki.server.key_file,
        "GATEWAY_TLS_CLIENT_CA_FILE": pki.ca.cert_file,
        "GATEWAY_TLS_CLIENT_AUTH": "required",
    }
    health_credentials = grpc.ssl_channel_credentials(
        Path(pki.ca.cert_file).read_bytes(), Path(pki.client_b.key_file).read_bytes(), pki.client_b.pem
    )
    with Gateway(data_dir, extra_env=env, grpc_credentials=health_credentials) as gateway:
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT=https://localhost:{gateway.grpc_port}" in gateway.text()
        assert "TLS, client certificates required" in gateway.text()
        subprocess.run(
            [
                sys.executable,
                "manage.py",
                "register_client_certificate",
                "demo",
                pki.client_a.cert_file,
                "--name",
                "e2e",
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=gateway.env,
            check=True,
            capture_output=True,
        )
        otlp_tls_env(pki.client_a)
        # No API key: the registered certificate is the credential, on both transports.
        assert _grpc_export(gateway.grpc_port, "grpc over mtls") == SpanExportResult.SUCCESS
        assert _http_export(f"https://127.0.0.1:{gateway.http_port}", "http over mtls") == SpanExportResult.SUCCESS

        console = requests.get(
            f"https://localhost:{gateway.http_port}/admin/login/",
            timeout=10,
            verify=pki.ca.cert_file,
            cert=(pki.client_b.cert_file, pki.client_b.key_file),
        )
        assert console.status_code == 200 and "csrfmiddlewaretoken" in console.text
        with pytest.raises(requests.exceptions.SSLError):  # client certificates are required here
            requests.get(f"https://localhost:{gateway.http_port}/healthz", verify=pki.ca.cert_file, timeout=10)
        with pytest.raises(OSError):  # plaintext HTTP on the TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/healthz", timeout=10)
        otlp_tls_env(None)  # trusts the server, presents no certificate
        assert _grpc_export(gateway.grpc_port, "no client certificate") == SpanExportResult.FAILURE

    rows = _query(data_dir, "SELECT SpanName FROM otel_traces ORDER BY SpanName")
    assert rows == [["grpc over mtls"], ["http over mtls"]]
