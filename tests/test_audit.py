"""The audit log: what is recorded, append-only, the hash chain, and signed exports that
verify offline (and fail when anything is changed or left out)."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from tenants import services
from tenants.audit import Actor, verify_chain
from tenants.audit_export import AuditFilters, export_audit_log
from tenants.authentication import CredentialsRefused, authenticate
from tenants.models import ApiKey, AuditEvent
from vocabulary import Reason, Signal

pytestmark = pytest.mark.django_db
ALICE = Actor(name="user:alice", source_ip="203.0.113.7", request_id="req-1")


def _history():
    tenant = services.create_tenant(actor=ALICE, name="Acme")
    issued = services.issue_key(actor=ALICE, tenant=tenant, scopes=["traces"])
    services.update_tenant(actor=ALICE, tenant=tenant, retention_days=90)
    services.suspend_tenant(actor=ALICE, tenant=tenant)
    services.activate_tenant(actor=ALICE, tenant=tenant)
    services.revoke_key(actor=ALICE, key=issued.api_key)
    return tenant


def _run(command: str, *args) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_changes_are_recorded_with_actor_target_and_diff():
    tenant = _history()
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.action for e in events] == [
        "tenant.created",
        "key.created",
        "tenant.updated",
        "tenant.suspended",
        "tenant.activated",
        "key.revoked",
    ]
    update = events[2]
    assert (update.actor, update.source_ip, update.request_id) == ("user:alice", "203.0.113.7", "req-1")
    assert (update.target_type, update.target_id, update.target_repr) == ("tenant", str(tenant.id), "acme")
    assert update.changes == {"before": {"retention_days": 30}, "after": {"retention_days": 90}}
    assert events[3].changes == {"before": {"status": "active"}, "after": {"status": "suspended"}}
    # Keys appear by prefix only; the hash and the secret are never in the log.
    key = ApiKey.objects.get()
    assert key.hashed_key not in str(events[1].changes)
    assert events[1].changes["after"]["prefix"] == key.prefix


def test_log_is_append_only():
    _history()
    event = AuditEvent.objects.first()
    event.actor = "someone else"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(seq=1).update(actor="x")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    assert verify_chain().ok


def _raw(sql: str, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_verify_passes_on_an_intact_chain():
    _history()
    assert "6 entries verified" in _run("verify_audit_log")


@pytest.mark.parametrize(
    "tamper, message",
    [
        ("UPDATE tenants_auditevent SET actor = 'user:mallory' WHERE seq = 3", "entry #3 was altered"),
        ("UPDATE tenants_auditevent SET changes = '{}' WHERE seq = 2", "entry #2 was altered"),
        ("DELETE FROM tenants_auditevent WHERE seq = 4", "entry #4 is missing"),
        ("DELETE FROM tenants_auditevent WHERE seq = 6", "entries were removed from the end"),
        ("UPDATE tenants_auditevent SET seq = seq + 100 WHERE seq >= 3", "entry #3 is missing"),
    ],
)
def test_verify_names_the_first_broken_entry(tamper, message):
    _history()
    _raw(tamper)
    with pytest.raises(CommandError, match=message):
        _run("verify_audit_log")


def test_verify_detects_an_inserted_entry():
    _history()
    forged = AuditEvent.objects.get(seq=3)
    _raw("UPDATE tenants_auditevent SET seq = seq + 1000 WHERE seq >= 3")  # make room at #3, in two steps
    _raw("UPDATE tenants_auditevent SET seq = seq - 999 WHERE seq >= 1000")  # so no two rows share a seq
    _raw(
        "INSERT INTO tenants_auditevent (seq, created_at, actor, action, target_type, target_id, target_repr, changes,"
        " source_ip, request_id, prev_hash, hash) VALUES (3, %s, 'user:mallory', 'key.created', 'api_key', '9', '',"
        " '{}', '', '', %s, %s)",
        [forged.created_at, forged.prev_hash, "f" * 64],
    )
    with pytest.raises(CommandError, match="entry #3 was altered"):
        _run("verify_audit_log")


def _unzip(export, tmp_path: Path) -> tuple[Path, Path]:
    with zipfile.ZipFile(io.BytesIO(export.archive)) as zf:
        zf.extractall(tmp_path)
    return tmp_path / export.manifest["file_name"], tmp_path / "manifest.json"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_verifies_offline_and_is_audited(fmt, tmp_path):
    _history()
    export = export_audit_log(actor=ALICE, filters=AuditFilters(), fmt=fmt)
    data, manifest = _unzip(export, tmp_path)
    assert export.manifest["count"] == 6 and export.manifest["gaps"] == []
    assert "export OK" in _run("verify_audit_export", str(data), str(manifest))
    assert AuditEvent.objects.order_by("-seq").first().action == "audit.exported"
    assert verify_chain().ok


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_altered_by_one_byte_fails(fmt, tmp_path):
    _history()
    data, manifest = _unzip(export_audit_log(actor=ALICE, filters=AuditFilters(), fmt=fmt), tmp_path)
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0x01
    data.write_bytes(bytes(content))
    with pytest.raises(CommandError, match="does not match the manifest's SHA-256"):
        _run("verify_audit_export", str(data), str(manifest))


def test_altered_manifest_fails_signature(tmp_path):
    _history()
    data, manifest = _unzip(export_audit_log(actor=ALICE, filters=AuditFilters()), tmp_path)
    manifest.write_bytes(manifest.read_bytes().replace(b'"count":6', b'"count":5'))
    with pytest.raises(CommandError, match="signature does not verify"):
        _run("verify_audit_export", str(data), str(manifest))


def test_export_with_a_gap_in_the_chain_says_so(tmp_path):
    _history()
    _raw("DELETE FROM tenants_auditevent WHERE seq = 3")
    export = export_audit_log(actor=ALICE, filters=AuditFilters())
    assert export.manifest["gaps"] == [[3, 3]] and export.manifest["chain_verified_at_export"] is False
    data, manifest = _unzip(export, tmp_path)
    with pytest.raises(CommandError, match="the chain has a gap: entries #3–#3 are not in this export"):
        _run("verify_audit_export", str(data), str(manifest))


def test_filtered_export_notes_what_it_left_out(tmp_path):
    _history()
    export = export_audit_log(actor=ALICE, filters=AuditFilters(actions=("key.created", "key.revoked")))
    data, manifest = _unzip(export, tmp_path)
    output = _run("verify_audit_export", str(data), str(manifest))
    assert "left out by the export's filters" in output and "export OK" in output
    assert export.manifest["count"] == 2


def test_export_time_range(tmp_path):
    _history()
    middle = AuditEvent.objects.get(seq=3).created_at
    export = export_audit_log(actor=ALICE, filters=AuditFilters(since=middle))
    assert export.manifest["first_seq"] == 3 and export.manifest["count"] == 4


def test_rotation_grace_period_then_clear_refusal():
    tenant = services.create_tenant(actor=ALICE, name="Rotating")
    old = services.issue_key(actor=ALICE, tenant=tenant)
    new = services.rotate_key(actor=ALICE, key=old.api_key, grace=timedelta(hours=1))
    assert authenticate(old.secret, Signal.TRACES).tenant_id == str(tenant.id)  # still in its grace period
    assert authenticate(new.secret, Signal.TRACES).key_id == new.api_key.id
    ApiKey.objects.filter(pk=old.api_key.pk).update(grace_until=old.api_key.rotated_at)  # grace is over
    with pytest.raises(CredentialsRefused) as caught:
        authenticate(old.secret, Signal.TRACES)
    assert caught.value.reason is Reason.UNAUTHENTICATED
    # Whoever still holds the old key learns nothing of the new one.
    assert "was rotated on" in caught.value.message and new.api_key.prefix not in caught.value.message
    assert [e.action for e in AuditEvent.objects.order_by("seq")][-2:] == ["key.rotated", "key.created"]
    with pytest.raises(ValueError, match="already rotated"):
        services.rotate_key(actor=ALICE, key=ApiKey.objects.get(pk=old.api_key.pk))


def test_last_used_is_written_at_most_once_a_minute():
    tenant = services.create_tenant(actor=ALICE, name="Busy")
    issued = services.issue_key(actor=ALICE, tenant=tenant)
    authenticate(issued.secret, Signal.TRACES)
    first = ApiKey.objects.get(pk=issued.api_key.pk).last_used_at
    assert first is not None
    with connection.cursor():
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            for _ in range(5):
                authenticate(issued.secret, Signal.TRACES)
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at == first
