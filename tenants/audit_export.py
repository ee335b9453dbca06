"""Audit log exports for auditors: JSONL or CSV, with a manifest signed with Ed25519, and the
offline verification of such an export.

An export is a zip holding the entries file, `manifest.json` (canonical JSON: these exact bytes
are what is signed), `manifest.json.sig` (the raw Ed25519 signature) and the public key.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.utils import timezone

from tenants import audit
from tenants.audit import Actor
from tenants.models import AuditEvent

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = (
    "seq",
    "time",
    "actor",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "changes",
    "source_ip",
    "request_id",
    "prev_hash",
    "hash",
)


# --- signing key --------------------------------------------------------------------------------
def signing_key() -> Ed25519PrivateKey:
    path = Path(settings.GATEWAY_AUDIT_SIGNING_KEY_FILE)
    if not path.exists():
        if path.parent != settings.DATA_DIR:
            raise FileNotFoundError(f"audit signing key {path} does not exist (GATEWAY_AUDIT_SIGNING_KEY_FILE)")
        # Embedded mode: one key per data directory, made on first use.
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def public_key_pem() -> bytes:
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def key_fingerprint(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()


# --- export -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditFilters:
    since: datetime | None = None
    until: datetime | None = None
    actions: tuple[str, ...] = ()
    actor: str = ""
    target_type: str = ""
    target_id: str = ""

    def apply(self, queryset):
        if self.since:
            queryset = queryset.filter(created_at__gte=self.since)
        if self.until:
            queryset = queryset.filter(created_at__lt=self.until)
        if self.actions:
            queryset = queryset.filter(action__in=self.actions)
        if self.actor:
            queryset = queryset.filter(actor=self.actor)
        if self.target_type:
            queryset = queryset.filter(target_type=self.target_type)
        if self.target_id:
            queryset = queryset.filter(target_id=self.target_id)
        return queryset

    def describe(self) -> dict[str, Any]:
        return {
            "since": audit.timestamp_text(self.since) if self.since else None,
            "until": audit.timestamp_text(self.until) if self.until else None,
            "actions": list(self.actions),
            "actor": self.actor,
            "target_type": self.target_type,
            "target_id": self.target_id,
        }


@dataclass(frozen=True)
class AuditExport:
    filename: str
    archive: bytes  # the zip an auditor downloads
    manifest: dict[str, Any]


def entry_record(event: AuditEvent) -> dict[str, Any]:
    return {**audit.canonical_fields(event), "hash": event.hash}


def _render(records: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "jsonl":
        return b"".join(audit.canonical_bytes(record) + b"\n" for record in records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        row = dict(record, changes=audit.canonical_bytes(record["changes"]).decode())
        writer.writerow([row[column] for column in CSV_COLUMNS])
    return out.getvalue().encode()


def _gaps(seqs: list[int]) -> list[list[int]]:
    return [[a + 1, b - 1] for a, b in zip(seqs, seqs[1:]) if b != a + 1]


def export_audit_log(*, actor: Actor, filters: AuditFilters, fmt: str = "jsonl") -> AuditExport:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {FORMATS}")
    events = list(filters.apply(AuditEvent.objects.all()).order_by("seq"))
    records = [entry_record(event) for event in events]
    data = _render(records, fmt)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    data_name = f"audit-{stamp}.{fmt}"
    public_pem = public_key_pem()
    seqs = [record["seq"] for record in records]
    manifest = {
        "format": fmt,
        "file_name": data_name,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "count": len(records),
        "filters": filters.describe(),
        "first_seq": seqs[0] if seqs else None,
        "last_seq": seqs[-1] if seqs else None,
        "first_prev_hash": records[0]["prev_hash"] if records else None,
        "first_hash": records[0]["hash"] if records else None,
        "last_hash": records[-1]["hash"] if records else None,
        "gaps": _gaps(seqs),
        "chain_verified_at_export": audit.verify_chain().ok,
        "created_at": audit.timestamp_text(timezone.now()),
        "exported_by": actor.name,
        "algorithm": "Ed25519",
        "public_key_sha256": key_fingerprint(public_pem),
    }
    manifest_bytes = audit.canonical_bytes(manifest)
    signature = signing_key().sign(manifest_bytes)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(data_name, data)
        zf.writestr("manifest.json", manifest_bytes)
        zf.writestr("manifest.json.sig", signature)
        zf.writestr("audit-public-key.pem", public_pem)
    audit.record(
        actor=actor,
        action="audit.exported",
        target_type="audit_log",
        target_repr=f"{len(records)} entries as {fmt}",
        changes={
            "before": {},
            "after": {"filters": filters.describe(), "count": len(records), "file_sha256": manifest["file_sha256"]},
        },
    )
    return AuditExport(filename=f"audit-export-{stamp}.zip", archive=archive.getvalue(), manifest=manifest)


# --- offline verification -----------------------------------------------------------------------
@dataclass
class ExportReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse(data: bytes, fmt: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in data.decode().splitlines() if line]
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    for row in rows:
        row["seq"] = int(row["seq"])
        row["changes"] = json.loads(row["changes"])
    return rows


def _filters_narrow(described: dict[str, Any]) -> bool:
    """True when the export's filters leave out entries inside its time range on purpose."""
    return any(described.get(name) for name in ("actions", "actor", "target_type", "target_id"))


def verify_export(data: bytes, manifest_bytes: bytes, signature: bytes, public_key: bytes) -> ExportReport:
    """Check an export against its signed manifest and the chain inside it. `public_key` is the
    PEM published by the gateway (GET /api/v1/audit/public-key)."""
    report = ExportReport()
    key = serialization.load_pem_public_key(public_key)
    if not isinstance(key, Ed25519PublicKey):
        report.problems.append("the public key is not an Ed25519 key")
        return report
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        report.problems.append(
            "the manifest signature does not verify: the manifest was altered or signed by another key"
        )
        return report
    manifest = json.loads(manifest_bytes)
    if hashlib.sha256(data).hexdigest() != manifest["file_sha256"]:
        report.problems.append("the file does not match the manifest's SHA-256: it was altered")
        return report
    try:
        records = _parse(data, manifest["format"])
    except (ValueError, KeyError) as exc:
        report.problems.append(f"the file cannot be read as {manifest['format']}: {exc}")
        return report
    if len(records) != manifest["count"]:
        report.problems.append(f"the manifest says {manifest['count']} entries, the file has {len(records)}")
    previous = None
    for record in records:
        claimed = record.pop("hash")
        if audit.entry_hash(record) != claimed:
            report.problems.append(f"entry #{record['seq']} does not match its hash")
        if previous is not None:
            if record["seq"] == previous["seq"] + 1 and record["prev_hash"] != previous["hash"]:
                report.problems.append(f"entry #{record['seq']} does not link to entry #{previous['seq']}")
            elif record["seq"] > previous["seq"] + 1:
                gap = f"entries #{previous['seq'] + 1}–#{record['seq'] - 1} are not in this export"
                if _filters_narrow(manifest["filters"]):
                    report.notes.append(gap + " (left out by the export's filters)")
                else:
                    report.problems.append(f"the chain has a gap: {gap}, though no filter left them out")
        record["hash"] = claimed
        previous = record
    if records and (records[0]["hash"], records[-1]["hash"]) != (manifest["first_hash"], manifest["last_hash"]):
        report.problems.append("the first or last entry differs from the manifest")
    if not manifest.get("chain_verified_at_export", True):
        report.problems.append("the gateway's own chain did not verify when this export was made")
    return report
