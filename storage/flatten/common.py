"""Shared pieces of flattening: attribute values as strings, batches, rejection bookkeeping."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

# DateTime64(9) holds signed 64-bit nanoseconds; OTLP sends unsigned 64-bit.
MAX_TIMESTAMP_NS = 2**63 - 1
MAX_REJECTION_EXAMPLES = 3


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
        more = "" if self.rejected <= len(self.rejection_examples) else f" (and {self.rejected - len(self.rejection_examples)} more)"
        return "; ".join(self.rejection_examples) + more


class Rejections:
    def __init__(self) -> None:
        self.count = 0
        self.examples: list[str] = []

    def add(self, message: str, items: int = 1) -> None:
        self.count += items
        if len(self.examples) < MAX_REJECTION_EXAMPLES:
            self.examples.append(message)


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
    return json.dumps(any_value_json(value), separators=(",", ":"), ensure_ascii=False)


def attributes(key_values) -> dict[str, str]:
    # [:]: iterating a protobuf (upb) repeated field directly ends in an IndexError raised and
    # caught inside Python; a slice is a plain list (storage/flatten/raw.py says more).
    return {kv.key: any_value_str(kv.value) for kv in key_values[:]}


def valid_id(raw: bytes, size: int, *, optional: bool) -> bool:
    n = len(raw)
    if n == 0:
        return optional
    return n == size and raw != b"\x00" * size
