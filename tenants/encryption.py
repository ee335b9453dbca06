"""Per-tenant envelope encryption of sensitive attribute values.

The master key (KEK) comes from GATEWAY_MASTER_KEY (base64 of 32 bytes) or the file named by
GATEWAY_MASTER_KEY_FILE; it is never stored in the database or logged. The embedded mode makes
one in the data directory on first start, with a warning. Each tenant has AES-256-GCM data
keys, stored wrapped by the KEK. A protected value is stored as
`enc:v<version>:<base64(nonce || ciphertext)>`, with the tenant id and the attribute key bound
as associated data, so a value copied to another tenant or another key does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from tenants import audit
from tenants.audit import Actor
from tenants.keyring import KeyRing
from tenants.models import Tenant, TenantDataKey

log = logging.getLogger(__name__)

DEFAULT_SENSITIVE_KEYS = ("user.email", "enduser.id", "http.request.header.authorization", "db.statement")
KEY_CACHE_SECONDS = 30.0


# --- master key ---------------------------------------------------------------------------------
def decode_master_key(raw: bytes, where: str) -> bytes:
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except ValueError as exc:
        raise ValueError(f"the master key in {where} is not base64") from exc
    if len(key) != 32:
        raise ValueError(f"the master key in {where} must be 32 bytes (base64 of 32 random bytes)")
    return key


def load_master_key() -> bytes:
    if os.environ.get("GATEWAY_MASTER_KEY"):
        return decode_master_key(os.environ["GATEWAY_MASTER_KEY"].encode(), "GATEWAY_MASTER_KEY")
    path = Path(settings.GATEWAY_MASTER_KEY_FILE)
    if not path.exists():
        if path.parent != settings.DATA_DIR:
            raise FileNotFoundError(f"master key file {path} does not exist (GATEWAY_MASTER_KEY_FILE)")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64encode(secrets.token_bytes(32)) + b"\n")
        path.chmod(0o600)
        log.warning(
            "generated a new master key in %s: data encrypted under it is lost with this file; "
            "in production set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE from a secret",
            path,
        )
    return decode_master_key(path.read_bytes(), str(path))


def master_key_id(master: bytes) -> str:
    return hashlib.sha256(b"otlp-gateway master key id\x00" + master).hexdigest()[:32]


def _wrap(master: bytes, data_key: bytes, tenant_id: str, version: int) -> bytes:
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(master).encrypt(nonce, data_key, f"{tenant_id}\x00{version}".encode())


def _unwrap(master: bytes, wrapped: bytes, tenant_id: str, version: int) -> bytes:
    return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], f"{tenant_id}\x00{version}".encode())


# --- data keys ----------------------------------------------------------------------------------
_rings: dict[str, tuple[float, KeyRing]] = {}
_rings_lock = threading.Lock()


def _forget(tenant_id: str) -> None:
    with _rings_lock:
        _rings.pop(tenant_id, None)


def key_ring(tenant_id: str) -> KeyRing:
    """The tenant's usable data keys (made on first use), cached briefly in this process."""
    now = time.monotonic()
    cached = _rings.get(tenant_id)
    if cached and cached[0] > now:
        return cached[1]
    master = load_master_key()
    rows = list(TenantDataKey.objects.filter(tenant_id=tenant_id, destroyed_at__isnull=True))
    if not rows and not TenantDataKey.objects.filter(tenant_id=tenant_id).exists():
        with _rings_lock:  # one first key per tenant, even when its first requests come together
            try:
                _new_version(tenant_id, master)
            except IntegrityError:  # another process made it first
                pass
        rows = list(TenantDataKey.objects.filter(tenant_id=tenant_id, destroyed_at__isnull=True))
    keys = {row.version: _unwrap(master, bytes(row.wrapped_key), tenant_id, row.version) for row in rows}
    ring = KeyRing(tenant_id, keys)
    with _rings_lock:
        _rings[tenant_id] = (now + KEY_CACHE_SECONDS, ring)
    return ring


def _new_version(tenant_id: str, master: bytes) -> TenantDataKey:
    # No read-then-write transaction: on SQLite that deadlocks against concurrent writers. The
    # unique (tenant, version) constraint settles a race; the loser gets IntegrityError.
    latest = TenantDataKey.objects.filter(tenant_id=tenant_id).order_by("-version").values_list("version", flat=True)
    version = (latest.first() or 0) + 1
    return TenantDataKey.objects.create(
        tenant_id=tenant_id,
        version=version,
        master_key_id=master_key_id(master),
        wrapped_key=_wrap(master, secrets.token_bytes(32), tenant_id, version),
    )


def create_first_data_key(tenant: Tenant) -> None:
    """Called when a tenant is created, so no ingest request has to make the key."""
    _new_version(str(tenant.id), load_master_key())


def rotate_data_key(*, actor: Actor, tenant: Tenant) -> TenantDataKey:
    """New data is encrypted with a new key version; old versions stay to read old data."""
    if tenant.status == Tenant.Status.DELETED:
        raise ValueError(f"tenant {tenant.slug} is deleted; its keys are destroyed")
    try:
        created = _new_version(str(tenant.id), load_master_key())
    except IntegrityError:
        raise ValueError(f"the data key of tenant {tenant.slug} is being rotated already; try again") from None
    _forget(str(tenant.id))
    audit.record(
        actor=actor,
        action="tenant.data_key_rotated",
        target_type="tenant",
        target_id=tenant.id,
        target_repr=tenant.slug,
        changes={"before": {}, "after": {"version": created.version}},
    )
    return created


def destroy_data_keys(*, actor: Actor, tenant: Tenant) -> int:
    """Crypto-shredding: every version's wrapped key is erased, so stored values are unreadable."""
    with transaction.atomic():
        destroyed = TenantDataKey.objects.filter(tenant=tenant, destroyed_at__isnull=True).update(
            wrapped_key=b"", destroyed_at=timezone.now()
        )
        audit.record(
            actor=actor,
            action="tenant.data_keys_destroyed",
            target_type="tenant",
            target_id=tenant.id,
            target_repr=tenant.slug,
            changes={"before": {}, "after": {"versions_destroyed": destroyed}},
        )
    _forget(str(tenant.id))
    return destroyed


@transaction.atomic
def rewrap_all(*, actor: Actor, old_master: bytes, new_master: bytes) -> int:
    """Wrap every live data key under `new_master` (stored data is untouched)."""
    count = 0
    for row in TenantDataKey.objects.select_for_update().filter(destroyed_at__isnull=True):
        tenant_id = str(row.tenant_id)
        data_key = _unwrap(old_master, bytes(row.wrapped_key), tenant_id, row.version)
        row.wrapped_key = _wrap(new_master, data_key, tenant_id, row.version)
        row.master_key_id = master_key_id(new_master)
        row.save(update_fields=["wrapped_key", "master_key_id"])
        count += 1
    audit.record(
        actor=actor,
        action="master_key.rotated",
        target_type="master_key",
        target_repr=master_key_id(new_master),
        changes={
            "before": {"master_key_id": master_key_id(old_master)},
            "after": {"master_key_id": master_key_id(new_master), "data_keys_rewrapped": count},
        },
    )
    with _rings_lock:
        _rings.clear()
    return count


def sensitive_keys(extra) -> frozenset[str]:
    return frozenset(DEFAULT_SENSITIVE_KEYS) | frozenset(extra or ())


def reader_for(store, tenant_id: str):
    """The tenant-scoped reader that decrypts this tenant's protected values (and only its)."""
    from storage.reader import TenantReader
    from tenants.models import Tenant

    tenant_id = str(tenant_id)
    if Tenant.objects.filter(pk=tenant_id, status=Tenant.Status.DELETED).exists():
        # Its rows may still be in shared partitions while their deletion runs: nobody reads them.
        raise PermissionError(f"tenant {tenant_id} is deleted; its data cannot be read")
    return TenantReader(store, tenant_id, decrypt=lambda key, value: key_ring(tenant_id).decrypt(key, value))
