"""Envelope encryption at rest: sensitive values are ciphertext in ClickHouse, readable only
through the tenant's scoped reader; data-key and master-key rotation; crypto-shredding on
delete; no secret in logs."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets

import pytest
from cryptography.exceptions import InvalidTag
from django.core.management import call_command

from storage.reader import TenantReader
from tenants import encryption
from tenants.audit import Actor
from tenants.encryption import key_ring, reader_for
from tenants.keyring import KeyUnavailable
from tenants.models import AuditEvent, TenantDataKey
from tenants.services import delete_tenant, update_tenant
from tests import otlp_requests
from tests.clients import http_post

pytestmark = pytest.mark.django_db(transaction=True)
SYSTEM = Actor.system("tests")


def _send(http_url, tenant, **attributes) -> None:
    request = otlp_requests.traces_request(1)
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for key, value in attributes.items():
        span.attributes.append(otlp_requests.kv(key, value))
    request.resource_spans[0].resource.attributes.append(otlp_requests.kv("enduser.id", "u-77"))
    event = span.events.add(name="query", time_unix_nano=otlp_requests.NOW_NS)
    event.attributes.append(otlp_requests.kv("db.statement", "SELECT secret FROM t"))
    assert http_post(http_url, "traces", request.SerializeToString(), key=tenant.key).status == 200


SQL = (
    "SELECT SpanAttributes, ResourceAttributes, Events.Attributes AS EventAttributes FROM otel_traces"
    " WHERE TenantId = {tenant_id:String} ORDER BY Timestamp"
)


def test_sensitive_values_are_ciphertext_at_rest(http_url, tenant, store):
    update_tenant(actor=SYSTEM, tenant=tenant.tenant, sensitive_attribute_keys=["card.last4"])
    _send(http_url, tenant, **{"user.email": "ada@example.com", "card.last4": "4242", "http.route": "/pay"})
    (raw,) = TenantReader(store, str(tenant.tenant.id)).rows(SQL)  # no key: what ClickHouse holds
    assert raw["SpanAttributes"]["http.route"] == "/pay"
    for value in (
        raw["SpanAttributes"]["user.email"],
        raw["SpanAttributes"]["card.last4"],
        raw["ResourceAttributes"]["enduser.id"],
        raw["EventAttributes"][0]["db.statement"],
    ):
        assert value.startswith("enc:v1:")
    # Every column but the random hex ids (one of which could hold "4242" by chance: CI once saw
    # it in a GatewayBlock) of the tenant's rows, so a plaintext copy anywhere in them would be
    # found (other tenants' rows hold numbers and ids that could, too).
    dump = str(
        store.dangerously_query_unscoped(
            "SELECT * EXCEPT (TenantId, GatewayPartition, TraceId, SpanId, ParentSpanId, `Links.TraceId`, "
            "`Links.SpanId`, GatewayBlock) FROM otel_traces WHERE TenantId = {tenant:String}",
            {"tenant": str(tenant.tenant.id)},
            reason="test",
        ).result_rows
    )
    assert "ada@example.com" not in dump and "4242" not in dump and "SELECT secret" not in dump
    (plain,) = tenant.rows(SQL)  # the tenant's scoped reader decrypts
    assert plain["SpanAttributes"] == {
        "i": "0",
        "user.email": "ada@example.com",
        "card.last4": "4242",
        "http.route": "/pay",
    }
    assert plain["ResourceAttributes"]["enduser.id"] == "u-77"
    assert plain["EventAttributes"] == [{"db.statement": "SELECT secret FROM t"}]


def test_another_tenants_key_cannot_open_a_value(http_url, make_tenant, store):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    _send(http_url, alpha, **{"user.email": "a@example.com"})
    _send(http_url, beta, **{"user.email": "b@example.com"})
    (raw,) = TenantReader(store, str(alpha.tenant.id)).rows(SQL)
    stolen = raw["SpanAttributes"]["user.email"]
    with pytest.raises(KeyUnavailable):
        key_ring(str(beta.tenant.id)).decrypt("user.email", stolen)
    with pytest.raises(KeyUnavailable):  # bound to its attribute key too
        key_ring(str(alpha.tenant.id)).decrypt("enduser.id", stolen)


def test_data_key_rotation_keeps_old_data_readable(http_url, tenant):
    _send(http_url, tenant, **{"user.email": "old@example.com"})
    call_command("rotate_data_key", tenant.tenant.slug, stdout=io.StringIO())
    _send(http_url, tenant, **{"user.email": "new@example.com"})
    rows = tenant.reader.rows(SQL)
    assert sorted(r["SpanAttributes"]["user.email"] for r in rows) == ["new@example.com", "old@example.com"]
    raw = TenantReader(tenant.reader._store, str(tenant.tenant.id)).rows(SQL)
    assert sorted(r["SpanAttributes"]["user.email"][:7] for r in raw) == ["enc:v1:", "enc:v2:"]


def test_master_key_rotation_rewraps_without_touching_data(http_url, tenant, tmp_path, monkeypatch):
    _send(http_url, tenant, **{"user.email": "kept@example.com"})
    old_wrapped = bytes(TenantDataKey.objects.get(tenant=tenant.tenant).wrapped_key)
    new_key_file = tmp_path / "new-master.key"
    out = io.StringIO()
    call_command("rotate_master_key", "--new-key-file", str(new_key_file), stdout=out)
    assert "rewrapped" in out.getvalue() and new_key_file.read_text().strip() not in out.getvalue()
    row = TenantDataKey.objects.get(tenant=tenant.tenant)
    assert bytes(row.wrapped_key) != old_wrapped
    new_master = base64.b64decode(new_key_file.read_bytes())
    assert row.master_key_id == encryption.master_key_id(new_master)
    with pytest.raises(InvalidTag):  # the old master key no longer opens it
        encryption._unwrap(encryption.load_master_key(), bytes(row.wrapped_key), str(tenant.tenant.id), 1)
    monkeypatch.setenv("GATEWAY_MASTER_KEY", new_key_file.read_text().strip())
    encryption._rings.clear()
    assert (
        reader_for(tenant.reader._store, tenant.tenant.id).rows(SQL)[0]["SpanAttributes"]["user.email"]
        == "kept@example.com"
    )
    assert AuditEvent.objects.filter(action="master_key.rotated").exists()
    encryption._rings.clear()


def test_deleting_a_tenant_shreds_its_keys(http_url, tenant, store):
    _send(http_url, tenant, **{"user.email": "gone@example.com"})
    (raw,) = TenantReader(store, str(tenant.tenant.id)).rows(SQL)
    ciphertext = raw["SpanAttributes"]["user.email"]
    delete_tenant(actor=SYSTEM, tenant=tenant.tenant, store=store)
    assert all(
        bytes(k.wrapped_key) == b"" and k.destroyed_at for k in TenantDataKey.objects.filter(tenant=tenant.tenant)
    )
    with pytest.raises(KeyUnavailable):
        key_ring(str(tenant.tenant.id)).decrypt("user.email", ciphertext)
    master = encryption.load_master_key()
    for row in TenantDataKey.objects.all():  # no wrapped key anywhere opens this value
        if bytes(row.wrapped_key):
            data_key = encryption._unwrap(master, bytes(row.wrapped_key), str(row.tenant_id), row.version)
            ring = encryption.KeyRing(str(tenant.tenant.id), {1: data_key})
            with pytest.raises(KeyUnavailable):
                ring.decrypt("user.email", ciphertext)
    assert tenant.count("otel_traces") == 0
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"tenant.data_keys_destroyed", "tenant.data_dropped"} <= actions


def test_master_key_is_not_in_the_database(http_url, tenant):
    from django.db import connection

    _send(http_url, tenant, **{"user.email": "x@example.com"})
    master = encryption.load_master_key()
    with connection.cursor() as cursor:
        cursor.execute("SELECT wrapped_key FROM tenants_tenantdatakey")
        blobs = b"".join(bytes(r[0]) for r in cursor.fetchall())
    assert master not in blobs and base64.b64encode(master) not in blobs


def test_secrets_never_reach_the_logs(http_url, tenant, caplog):
    caplog.set_level(logging.DEBUG)
    wrong_key = "otlpgw_" + secrets.token_hex(18)
    assert http_post(http_url, "traces", b"x", key=wrong_key).status == 401
    assert http_post(http_url, "traces", b"\x01garbage", key=tenant.key).status == 400
    _send(http_url, tenant, **{"user.email": "private@example.com"})
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (tenant.key, wrong_key, "private@example.com", "SELECT secret", "Bearer"):
        assert secret not in logged
    audit_text = str(list(AuditEvent.objects.values()))
    assert tenant.key not in audit_text


def test_protect_replaces_only_the_rows_it_encrypts(tenant):
    """Rows without a sensitive key keep their very objects (no copy per request); the one
    event map with a sensitive key is sealed; with no sensitive keys nothing is touched."""
    from storage.flatten.traces import flatten_traces
    from tenants.encryption import sensitive_keys
    from tenants.protect import protect

    request = otlp_requests.traces_request(3)
    spans = request.resource_spans[0].scope_spans[0].spans
    for span, value in zip(spans, ("db.statement", "cache.key", "cache.key")):
        span.events.add(name="e", time_unix_nano=otlp_requests.NOW_NS).attributes.append(
            otlp_requests.kv(value, "SELECT 1")
        )
    tenant_id = str(tenant.tenant.id)
    batches = flatten_traces(request, tenant_id=tenant_id, retention_days=7).batches
    columns = dict(zip(batches[0].column_names, batches[0].columns))
    events, span_maps, resources = (
        list(columns[name]) for name in ("Events.Attributes", "SpanAttributes", "ResourceAttributes")
    )

    assert protect(batches, ring=key_ring(tenant_id), sensitive=frozenset()) == 0
    assert all(a is b for a, b in zip(columns["Events.Attributes"], events))

    assert protect(batches, ring=key_ring(tenant_id), sensitive=sensitive_keys(())) == 1
    sealed = columns["Events.Attributes"]
    assert isinstance(sealed[0], tuple) and sealed[0][0]["db.statement"] != "SELECT 1"
    assert key_ring(tenant_id).decrypt("db.statement", sealed[0][0]["db.statement"]) == "SELECT 1"
    assert sealed[1] is events[1] and sealed[2] is events[2]
    assert all(a is b for a, b in zip(columns["SpanAttributes"], span_maps))
    assert all(a is b for a, b in zip(columns["ResourceAttributes"], resources))


def _kvlist(**values):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

    return AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key=k, value=v if isinstance(v, AnyValue) else AnyValue(string_value=v))
                for k, v in values.items()
            ]
        )
    )


def test_sensitive_keys_at_any_depth_and_in_any_case_are_ciphertext_at_rest(http_url, grpc_channel, tenant, store):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

    from tests.clients import grpc_export

    def body(trace_id: bytes) -> bytes:  # one span per transport: distinct requests, each stored
        request = otlp_requests.traces_request(1, trace_id=trace_id)
        span = request.resource_spans[0].scope_spans[0].spans[0]
        span.attributes.append(KeyValue(key="ctx", value=_kvlist(**{"user.email": "nested@example.com"})))
        span.attributes.append(
            KeyValue(
                key="deep",
                value=AnyValue(
                    array_value=ArrayValue(values=[_kvlist(level=_kvlist(**{"DB.Statement": "SELECT deep_secret"}))])
                ),
            )
        )
        span.attributes.append(otlp_requests.kv("User.Email", "upper@example.com"))
        span.attributes.append(otlp_requests.kv("note", '{"looks": "like json", "but": "is harmless"}'))
        return request.SerializeToString()

    assert http_post(http_url, "traces", body(b"\x01" * 16), key=tenant.key).status == 200
    grpc_export(grpc_channel, "traces", body(b"\x02" * 16), key=tenant.key)

    dump = str(
        store.dangerously_query_unscoped(
            "SELECT * EXCEPT (TraceId, SpanId, ParentSpanId, `Links.TraceId`, `Links.SpanId`) FROM otel_traces",
            reason="test",
        ).result_rows
    )
    for secret in ("nested@example.com", "deep_secret", "upper@example.com"):
        assert secret not in dump
    rows = tenant.rows(SQL)
    assert len(rows) == 2
    for row in rows:  # the tenant's scoped reader gives them back as sent
        attributes = row["SpanAttributes"]
        assert attributes["User.Email"] == "upper@example.com"
        assert json.loads(attributes["ctx"]) == {"user.email": "nested@example.com"}
        assert json.loads(attributes["deep"]) == [{"level": {"DB.Statement": "SELECT deep_secret"}}]
        assert attributes["note"] == '{"looks": "like json", "but": "is harmless"}'
    (raw, _) = TenantReader(store, str(tenant.tenant.id)).rows(SQL)
    assert raw["SpanAttributes"]["note"].startswith("{")  # nothing sensitive in it: left as it is


def test_a_shared_resource_map_is_sealed_on_every_row(tenant):
    """Rows of one resource share its map; each row gets the sealed one."""
    from storage.flatten.traces import flatten_traces
    from tenants.encryption import sensitive_keys
    from tenants.protect import protect

    request = otlp_requests.traces_request(4)
    request.resource_spans[0].resource.attributes.append(otlp_requests.kv("Enduser.Id", "u-1"))
    tenant_id = str(tenant.tenant.id)
    batches = flatten_traces(request, tenant_id=tenant_id, retention_days=7).batches
    columns = dict(zip(batches[0].column_names, batches[0].columns))
    assert protect(batches, ring=key_ring(tenant_id), sensitive=sensitive_keys(())) == 1
    resources = columns["ResourceAttributes"]
    assert len(resources) == 4 and all(r is resources[0] for r in resources)
    assert key_ring(tenant_id).decrypt("Enduser.Id", resources[0]["Enduser.Id"]) == "u-1"
