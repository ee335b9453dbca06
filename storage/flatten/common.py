"""Shared pieces of flattening: attribute values as strings, batches, rejection bookkeeping."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# DateTime64(9) holds signed 64-bit nanoseconds; OTLP sends unsigned 64-bit.
MAX_TIMESTAMP_NS = 2**63 - 1
MAX_REJECTION_EXAMPLES = 3
DEFAULT_FUTURE_GRACE_SECONDS = 600
_DAY_NS = 86_400 * 10**9


def _iso(ns: int) -> str:
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{ns} ns since 1970"


@dataclass(frozen=True)
class TimeWindow:
    """The item timestamps a tenant's tables keep: none older than its retention (the TTL would
    drop them unseen) and none further in the future than the grace (a sender's clock that is
    wrong). Items outside are rejected one by one, as Loki and Mimir reject old samples."""

    oldest_ns: int
    newest_ns: int
    retention_days: int
    future_grace_seconds: int

    @classmethod
    def at(
        cls, now_ns: int, *, retention_days: int, future_grace_seconds: int = DEFAULT_FUTURE_GRACE_SECONDS
    ) -> TimeWindow:
        return cls(
            oldest_ns=now_ns - retention_days * _DAY_NS,
            newest_ns=min(MAX_TIMESTAMP_NS, now_ns + future_grace_seconds * 10**9),
            retention_days=retention_days,
            future_grace_seconds=future_grace_seconds,
        )

    @classmethod
    def now(cls, *, retention_days: int, future_grace_seconds: int = DEFAULT_FUTURE_GRACE_SECONDS) -> TimeWindow:
        return cls.at(time.time_ns(), retention_days=retention_days, future_grace_seconds=future_grace_seconds)

    def problem(self, what: str, timestamp_ns: int) -> str | None:
        """Why an item stamped `timestamp_ns` is rejected, or None."""
        if timestamp_ns < self.oldest_ns:
            return (
                f"{what}: timestamp {_iso(timestamp_ns)} is older than the tenant's retention of "
                f"{self.retention_days} days (oldest kept: {_iso(self.oldest_ns)}), so it would never be visible"
            )
        if timestamp_ns > self.newest_ns:
            minutes = self.future_grace_seconds / 60
            return (
                f"{what}: timestamp {_iso(timestamp_ns)} is more than {minutes:g} minutes in the future "
                f"(latest accepted: {_iso(self.newest_ns)}); check the sender's clock"
            )
        return None


@dataclass
class TableBatch:
    """Rows for one table, column by column, in `column_names` order."""

    table: str
    column_names: tuple[str, ...]
    columns: list[list]

    @property
    def rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0


@dataclass
class Flattened:
    batches: list[TableBatch]
    accepted: int
    rejected: int = 0
    rejection_examples: list[str] = field(default_factory=list)

    @property
    def rejection_message(self) -> str:
        if not self.rejected:
            return ""
        more = (
            ""
            if self.rejected <= len(self.rejection_examples)
            else f" (and {self.rejected - len(self.rejection_examples)} more)"
        )
        return "; ".join(self.rejection_examples) + more


class Rejections:
    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, message: str, items: int = 1) -> None:
        self.count += items
        if len(self.examples) < MAX_REJECTION_EXAMPLES:
            self.examples.append(message)


class NestedValue(str):
    """An array or map attribute value, stored as JSON text. Its type tells the protect step
    which values hold keys of their own, without reading every value (tenants.protect)."""

    __slots__ = ()


def any_value_json(value) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_json(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_json(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def _double(value: float) -> str:
    return repr(value)


_SCALAR = {
    "string_value": lambda v: v.string_value,
    "bool_value": lambda v: "true" if v.bool_value else "false",
    "int_value": lambda v: str(v.int_value),
    "double_value": lambda v: _double(v.double_value),
    "bytes_value": lambda v: base64.b64encode(v.bytes_value).decode(),
}


def any_value_str(value) -> str:
    """An AnyValue as the string the Collector's exporter stores: scalars as text, arrays and
    maps as JSON, bytes as base64."""
    kind = value.WhichOneof("value")
    if kind == "string_value":  # by far the most common; skip the dispatch
        return value.string_value
    if kind is None:
        return ""
    convert = _SCALAR.get(kind)
    if convert is not None:
        return convert(value)
    return NestedValue(json.dumps(any_value_json(value), separators=(",", ":"), ensure_ascii=False))


def attributes(key_values) -> dict[str, str]:
    # [:]: iterating a protobuf (upb) repeated field directly ends in an IndexError raised and
    # caught inside Python; a slice is a plain list (storage/flatten/raw.py says more).
    return {kv.key: any_value_str(kv.value) for kv in key_values[:]}


def valid_id(raw: bytes, size: int, *, optional: bool) -> bool:
    """A required id must be `size` bytes and not all zero; an optional one may also be empty
    or all zero (OTLP's "no id": stored as empty, as the Collector does)."""
    n = len(raw)
    if n == 0:
        return optional
    return n == size and (optional or raw != b"\x00" * size)


def optional_id_hex(raw: bytes) -> str:
    """An optional id as stored: hex, or empty for none (empty or all zero)."""
    return raw.hex() if raw.strip(b"\x00") else ""
