"""The REST API under /api/v1/: the tenant lifecycle for admins, read-only for auditors, a valid
OpenAPI schema."""

from __future__ import annotations

import io
import zipfile

import pytest
import yaml
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from billing.limits import SIGNAL_FIELDS, TENANT_FIELDS
from tenants.api.pagination import Pages
from tenants.audit import Actor
from tenants.authentication import CredentialsRefused, authenticate
from tenants.models import ApiKey, AuditEvent, Tenant
from tenants.roles import AUDITOR, GATEWAY_ADMIN
from tenants.services import create_console_token, create_tenant_with_key
from vocabulary import Reason, Signal

SYSTEM = Actor.system("tests")


def _client(user, *, token: bool = True) -> APIClient:
    client = APIClient()
    if token:
        secret = create_console_token(actor=SYSTEM, user=user).secret
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}", HTTP_X_REQUEST_ID="test-request-1")
    else:
        client.force_login(user)
    return client


@pytest.fixture
def admin_api(console_user):
    return _client(console_user(GATEWAY_ADMIN))


@pytest.fixture
def auditor_api(console_user):
    return _client(console_user(AUDITOR))


@pytest.mark.django_db
def test_tenant_and_key_lifecycle(admin_api):
    created = admin_api.post("/api/v1/tenants/", {"name": "Acme Corp", "retention_days": 14}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["slug"] == "acme-corp" and created.json()["status"] == "active"

    key = admin_api.post(
        "/api/v1/tenants/acme-corp/keys/", {"name": "prod", "scopes": ["traces", "logs"]}, format="json"
    )
    assert key.status_code == 201 and key["Cache-Control"] == "no-store"
    secret = key.json()["secret"]
    assert authenticate(secret, Signal.LOGS).tenant_slug == "acme-corp"
    listed = admin_api.get("/api/v1/tenants/acme-corp/keys/").json()
    assert listed["count"] == 1 and "secret" not in listed["results"][0]
    assert [k["prefix"] for k in listed["results"]] == [key.json()["prefix"]]
    assert secret not in admin_api.get(f"/api/v1/keys/{key.json()['id']}/").content.decode()

    patched = admin_api.patch("/api/v1/tenants/acme-corp/", {"retention_days": 60}, format="json")
    assert patched.status_code == 200 and patched.json()["retention_days"] == 60

    assert admin_api.post("/api/v1/tenants/acme-corp/suspend/").json()["status"] == "suspended"
    with pytest.raises(CredentialsRefused, match="suspended") as caught:
        authenticate(secret, Signal.LOGS)
    assert caught.value.reason is Reason.PERMISSION_DENIED
    assert admin_api.post("/api/v1/tenants/acme-corp/activate/").json()["status"] == "active"

    rotated = admin_api.post(f"/api/v1/keys/{key.json()['id']}/rotate/", {"grace_seconds": 0}, format="json")
    assert rotated.status_code == 201
    with pytest.raises(CredentialsRefused, match="was rotated on"):
        authenticate(secret, Signal.LOGS)
    new_secret = rotated.json()["secret"]
    assert authenticate(new_secret, Signal.LOGS).tenant_slug == "acme-corp"
    revoked = admin_api.post(f"/api/v1/keys/{rotated.json()['id']}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    with pytest.raises(CredentialsRefused, match="revoked"):
        authenticate(new_secret, Signal.LOGS)

    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions[-8:] == [
        "tenant.created",
        "key.created",
        "tenant.updated",
        "tenant.suspended",
        "tenant.activated",
        "key.rotated",
        "key.created",
        "key.revoked",
    ]
    event = AuditEvent.objects.get(action="tenant.updated")
    assert event.actor == "user:gateway-admin" and event.request_id == "test-request-1"
    assert event.source_ip == "127.0.0.1"


@pytest.mark.django_db
def test_bad_requests_get_clear_errors(admin_api):
    create_tenant_with_key(actor=SYSTEM, name="Taken", slug="taken")
    duplicate = admin_api.post("/api/v1/tenants/", {"name": "Taken"}, format="json")
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["detail"]
    bad_scope = admin_api.post("/api/v1/tenants/taken/keys/", {"scopes": ["profiles"]}, format="json")
    assert bad_scope.status_code == 400 and "scopes" in bad_scope.json()
    bad_time = admin_api.get("/api/v1/audit-events/", {"since": "yesterday"})
    assert bad_time.status_code == 400 and "ISO 8601" in str(bad_time.json())
    assert admin_api.get("/api/v1/tenants/nobody/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "field", "words"),
    [
        ("/api/v1/audit-events/?offset=9223372036854775808", "offset", "from 0 to"),
        ("/api/v1/tenants/?offset=9223372036854775808", "offset", "from 0 to"),
        ("/api/v1/keys/?limit=-1", "limit", "from 0 to 1000"),
        ("/api/v1/invoices/?limit=ten", "limit", "not a whole number"),
        ("/api/v1/audit-events/?since=2026-02-30T10:00:00Z", "since", "ISO 8601"),
        ("/api/v1/audit-events/?until=2026-02-10T25:00:00Z", "until", "ISO 8601"),
        ("/api/v1/audit-events/?since=2026-02-10T10:00:00%2B25:00", "since", "ISO 8601"),
        ("/api/v1/tenants/taken/usage/?since=0999-01-01", "since", "outside 1970-01-02"),
    ],
)
def test_numbers_and_times_out_of_range_are_400(admin_api, url, field, words):
    """Each of these was once a 500 (the paginator's OFFSET beyond int64, a time that does not
    exist); now a 400 naming the parameter and what it takes."""
    create_tenant_with_key(actor=SYSTEM, name="Taken", slug="taken")
    response = admin_api.get(url)
    assert response.status_code == 400, response.content
    assert words in str(response.json()[field])


@pytest.mark.django_db
def test_pages_are_capped_and_every_list_is_paginated(admin_api, monkeypatch):
    for number in range(3):
        create_tenant_with_key(actor=SYSTEM, name=f"T{number}", slug=f"t{number}")
    monkeypatch.setattr(Pages, "max_limit", 4)  # the cap (1000), made small enough to reach
    for limit in (100000, 2**63):  # capped, not refused
        page = admin_api.get("/api/v1/audit-events/", {"limit": limit}).json()
        assert page["count"] >= 6 and len(page["results"]) == 4
    monkeypatch.undo()
    keys = admin_api.get("/api/v1/tenants/t1/keys/", {"limit": 1}).json()
    assert keys["count"] == 1 and len(keys["results"]) == 1
    schema = yaml.safe_load(admin_api.get("/api/v1/schema/").content)
    limit = next(p for p in schema["paths"]["/api/v1/audit-events/"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000


@pytest.mark.django_db
def test_limit_overrides_are_typed_and_checked(admin_api):
    create_tenant_with_key(actor=SYSTEM, name="Taken", slug="taken")
    url = "/api/v1/tenants/taken/"
    ok = admin_api.patch(url, {"limit_overrides": {"traces": {"items_per_second": 5}}}, format="json")
    assert ok.status_code == 200 and ok.json()["limit_overrides"] == {"traces": {"items_per_second": 5}}
    too_big = admin_api.patch(url, {"limit_overrides": {"max_request_bytes": 2**63}}, format="json")
    assert too_big.status_code == 400 and "max_request_bytes" in too_big.json()["limit_overrides"]
    misspelt = admin_api.patch(url, {"limit_overrides": {"traces": {"items_per_sec": 5}}}, format="json")
    assert misspelt.status_code == 400 and "items_per_sec" in str(misspelt.json())
    retention = admin_api.patch(url, {"retention_days": 2**63 - 1}, format="json")
    assert retention.status_code == 400 and "retention_days" in retention.json()
    schema = yaml.safe_load(admin_api.get("/api/v1/schema/").content)["components"]["schemas"]
    assert set(schema["LimitOverrides"]["properties"]) == {*TENANT_FIELDS, "traces", "metrics", "logs"}
    assert set(schema["SignalLimits"]["properties"]) == set(SIGNAL_FIELDS)
    assert schema["ApiKey"]["properties"]["replaced_by"]["nullable"] is True


@pytest.mark.django_db(transaction=True)
def test_deleting_a_tenant_drops_its_data(admin_api, make_tenant, http_url):
    from tests import otlp_requests
    from tests.clients import http_post

    doomed, other = make_tenant("doomed"), make_tenant("kept")
    for tenant in (doomed, other):
        assert (
            http_post(http_url, "traces", otlp_requests.traces_request(4).SerializeToString(), key=tenant.key).status
            == 200
        )
    response = admin_api.delete(f"/api/v1/tenants/{doomed.tenant.slug}/")
    assert response.status_code == 200 and response.json()["status"] == "deleted"
    assert doomed.count("otel_traces") == 0 and other.count("otel_traces") == 4
    assert http_post(http_url, "traces", b"", key=doomed.key).status == 401  # its keys are revoked
    dropped = AuditEvent.objects.get(action="tenant.data_dropped")
    assert dropped.changes["after"]["partitions_dropped"] >= 1


STATE_CHANGES = [
    ("post", "/api/v1/tenants/", {"name": "Nope"}),
    ("patch", "/api/v1/tenants/acme/", {"retention_days": 1}),
    ("put", "/api/v1/tenants/acme/", {"name": "Acme", "slug": "acme"}),
    ("delete", "/api/v1/tenants/acme/", None),
    ("post", "/api/v1/tenants/acme/suspend/", None),
    ("post", "/api/v1/tenants/acme/activate/", None),
    ("post", "/api/v1/tenants/acme/keys/", {"name": "x"}),
    ("post", "/api/v1/keys/{key}/revoke/", None),
    ("post", "/api/v1/keys/{key}/rotate/", {}),
]


@pytest.mark.django_db
@pytest.mark.parametrize("method, url, body", STATE_CHANGES)
@pytest.mark.parametrize("auth", ["token", "session"])
def test_auditor_cannot_change_anything(method, url, body, auth, console_user):
    issued = create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    client = _client(console_user(AUDITOR), token=auth == "token")
    before = AuditEvent.objects.count()
    response = getattr(client, method)(url.format(key=issued.api_key.id), body, format="json")
    assert response.status_code == 403
    assert Tenant.objects.get(slug="acme").status == "active"
    assert ApiKey.objects.get(pk=issued.api_key.pk).state == "active"
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_auditor_reads_and_exports_the_audit_log(auditor_api, tmp_path):
    create_tenant_with_key(actor=SYSTEM, name="Acme", slug="acme")
    listed = auditor_api.get("/api/v1/audit-events/", {"action": "tenant.created"})
    assert listed.status_code == 200
    assert [e["target_repr"] for e in listed.json()["results"]] == ["acme"]
    assert auditor_api.get("/api/v1/tenants/").status_code == 403
    exported = auditor_api.get("/api/v1/audit-events/export/", {"format": "csv"})
    assert exported.status_code == 200 and exported["Content-Type"] == "application/zip"
    public_key = APIClient().get("/api/v1/audit/public-key")  # public: anyone may verify
    assert public_key.status_code == 200 and public_key.content.startswith(b"-----BEGIN PUBLIC KEY-----")
    with zipfile.ZipFile(io.BytesIO(exported.content)) as zf:
        zf.extractall(tmp_path)
    (tmp_path / "trusted.pem").write_bytes(public_key.content)
    data = next(tmp_path.glob("audit-*.csv"))
    from django.core.management import call_command

    out = io.StringIO()
    call_command(
        "verify_audit_export",
        str(data),
        str(tmp_path / "manifest.json"),
        "--public-key",
        str(tmp_path / "trusted.pem"),
        stdout=out,
    )
    assert "export OK" in out.getvalue()
    assert AuditEvent.objects.filter(action="audit.exported", actor="user:auditor").exists()


@pytest.mark.django_db
def test_unauthenticated_and_bad_tokens_are_refused():
    assert APIClient().get("/api/v1/tenants/").status_code in (401, 403)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer otlpgwc_nonsense")
    response = client.get("/api/v1/tenants/")
    assert response.status_code == 401 and "console API token" in response.json()["detail"]


@pytest.mark.django_db
def test_openapi_schema_is_served_and_valid(admin_api):
    response = admin_api.get("/api/v1/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate(schema)
    assert {"/api/v1/tenants/", "/api/v1/keys/{id}/rotate/", "/api/v1/audit-events/export/"} <= set(schema["paths"])
