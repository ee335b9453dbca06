"""The tamper-evident audit log: append entries to the hash chain, and verify the chain.

Each entry's hash is the SHA-256 of its canonical JSON form, which includes the previous
entry's hash, so editing, deleting or inserting an entry breaks the chain from that point on.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from tenants.models import AuditChainHead, AuditEvent

GENESIS_HASH = "0" * 64
_append_lock = threading.Lock()  # SQLite has no row locks; one process appends at a time


@dataclass(frozen=True)
class Actor:
    """Who did something, from where."""

    name: str
    source_ip: str = ""
    request_id: str = ""

    @classmethod
    def system(cls, what: str) -> Actor:
        return cls(name=f"system:{what}")


# Set by tenants.middleware.RequestContextMiddleware: (request, source address, request id).
current_request: contextvars.ContextVar[tuple[Any, str, str] | None] = contextvars.ContextVar(
    "current_request", default=None
)


def actor_for_user(user, *, fallback: str = "anonymous") -> Actor:
    """The person `user`, with the address and request id of the request being handled."""
    context = current_request.get()
    ip, rid = (context[1], context[2]) if context else ("", "")
    name = f"user:{user.get_username()}" if user is not None and user.is_authenticated else fallback
    return Actor(name=name, source_ip=ip, request_id=rid)


def current_actor(*, fallback: str = "system") -> Actor:
    """Whoever is behind the request being handled (for changes recorded by signals)."""
    context = current_request.get()
    user = getattr(context[0], "user", None) if context else None
    return actor_for_user(user, fallback=fallback)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def timestamp_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_fields(event: AuditEvent) -> dict[str, Any]:
    """Everything an entry's hash covers (all of it but the hash itself)."""
    return {
        "seq": event.seq,
        "time": timestamp_text(event.created_at),
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "changes": event.changes,
        "source_ip": event.source_ip,
        "request_id": event.request_id,
        "prev_hash": event.prev_hash,
    }


def canonical_bytes(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(fields)).hexdigest()


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """{"before": {...}, "after": {...}} holding only the fields that changed."""
    before, after = _jsonable(before or {}), _jsonable(after or {})
    keys = sorted(set(before) | set(after))
    changed = [k for k in keys if before.get(k) != after.get(k)]
    return {
        "before": {k: before[k] for k in changed if k in before},
        "after": {k: after[k] for k in changed if k in after},
    }


def record(
    *,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: Any = "",
    target_repr: str = "",
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one entry to the chain (inside the caller's transaction, if any)."""
    with _append_lock, transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1, defaults={"hash": GENESIS_HASH})
        event = AuditEvent(
            seq=head.seq + 1,
            created_at=timezone.now().replace(tzinfo=UTC),
            actor=actor.name[:200],
            action=action,
            target_type=target_type,
            target_id=str(target_id)[:64],
            target_repr=str(target_repr)[:300],
            changes=_jsonable(changes or {}),
            source_ip=actor.source_ip[:64],
            request_id=actor.request_id[:64],
            prev_hash=head.hash,
        )
        event.hash = entry_hash(canonical_fields(event))
        event.save()
        AuditChainHead.objects.filter(id=1).update(seq=event.seq, hash=event.hash)
        return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    problem: str = ""
    first_bad_seq: int | None = None


def verify_entries(events: Iterable[AuditEvent], *, head: AuditChainHead | None) -> ChainReport:
    expected_prev, expected_seq, checked = GENESIS_HASH, 1, 0
    for event in events:
        if event.seq != expected_seq:
            return ChainReport(
                False, checked, f"entry #{expected_seq} is missing (next present is #{event.seq})", expected_seq
            )
        if event.prev_hash != expected_prev:
            return ChainReport(False, checked, f"entry #{event.seq} does not link to the entry before it", event.seq)
        if entry_hash(canonical_fields(event)) != event.hash:
            return ChainReport(
                False, checked, f"entry #{event.seq} was altered: its content does not match its hash", event.seq
            )
        expected_prev, expected_seq, checked = event.hash, expected_seq + 1, checked + 1
    if head is not None and (head.seq != expected_seq - 1 or head.hash != expected_prev):
        return ChainReport(
            False,
            checked,
            f"the chain should end at entry #{head.seq} but ends at #{expected_seq - 1}"
            " (entries were removed from the end)",
            expected_seq,
        )
    return ChainReport(True, checked)


def verify_chain() -> ChainReport:
    head = AuditChainHead.objects.filter(id=1).first()
    return verify_entries(AuditEvent.objects.order_by("seq").iterator(chunk_size=2000), head=head)
