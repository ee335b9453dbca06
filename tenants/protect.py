"""The pipeline's protect step: encrypt the values of a tenant's sensitive attribute keys in
the flattened batches, before they are stored.

A key is sensitive whatever its case (`User.Email` as `user.email`), and at any depth: a map or
array value (stored as JSON) that holds a sensitive key anywhere inside is encrypted whole, under
its own top-level key, which the tenant-scoped reader decrypts like any other.

Most maps hold neither, and are passed over with two checks that run in C: every key is one
already seen not to be sensitive, and no value is a NestedValue (what flattening makes of an
array or map value). Only the rest are looked at key by key (bench/protect.py measures it)."""

from __future__ import annotations

import json
from typing import Any

from storage.flatten import TableBatch
from storage.flatten.common import NestedValue
from tenants.keyring import KeyRing

_NESTED_TYPES = frozenset({NestedValue})
# Per set of sensitive keys: attribute keys seen not to be sensitive in any case. Keys repeat
# from request to request, so after a few requests a map's keys are all here.
_safe_keys: dict[frozenset[str], set[str]] = {}
_MAX_SAFE_SETS, _MAX_SAFE_KEYS = 256, 50_000


def _safe_keys_for(lowered: frozenset[str]) -> set[str]:
    safe = _safe_keys.get(lowered)
    if safe is None or len(safe) > _MAX_SAFE_KEYS:
        if len(_safe_keys) >= _MAX_SAFE_SETS:
            _safe_keys.clear()
        safe = _safe_keys[lowered] = set()
    return safe


def _holds_sensitive(value: str, lowered: frozenset[str]) -> bool:
    """Whether a map/array value, as the JSON flattening made of it, has a sensitive key at
    any depth. A cheap text screen first: most values name no sensitive key at all."""
    text = value.lower()
    if not any(key in text for key in lowered):
        return False
    try:
        document: Any = json.loads(value)
    except ValueError:
        return False  # a string that starts like JSON but is not: nothing nested in it
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if key.lower() in lowered:
                    return True
                if isinstance(child, (dict, list)):
                    stack.append(child)
        elif isinstance(node, list):
            stack.extend(child for child in node if isinstance(child, (dict, list)))
    return False


def protect(batches: list[TableBatch], *, ring: KeyRing, sensitive: frozenset[str]) -> int:
    """Encrypt in place; returns how many values were encrypted. Attribute maps are the columns
    named *Attributes (a map per row, or a list of maps for nested events, links, exemplars)."""
    if not sensitive:
        return 0
    lowered = frozenset(key.lower() for key in sensitive)
    safe = _safe_keys_for(lowered)
    sealed: dict[int, dict] = {}  # resource and scope maps are shared by many rows: seal each once
    count = 0

    def to_seal(attributes: dict[str, str]) -> list[str] | None:
        found = None
        for key, value in attributes.items():
            if key not in safe:
                if key.lower() in lowered:
                    found = (found or []) + [key]
                    continue
                safe.add(key)
            if type(value) is NestedValue and _holds_sensitive(value, lowered):
                found = (found or []) + [key]
        return found

    def seal(attributes: dict) -> dict:
        nonlocal count
        done = sealed.get(id(attributes))
        if done is None:
            keys = to_seal(attributes)
            done = dict(attributes) if keys else attributes
            for key in keys or ():
                done[key] = ring.encrypt(key, done[key])
                count += 1
            sealed[id(attributes)] = done  # every map lives as long as the batch: ids stay unique
        return done

    # The common case, decided in C for each map: every key already known not to be sensitive,
    # and no value a NestedValue.
    known, plain = safe.issuperset, _NESTED_TYPES.isdisjoint
    for batch in batches:
        for name, column in zip(batch.column_names, batch.columns):
            if not name.endswith("Attributes"):
                continue
            if "." in name:
                # Nested (events, links, exemplars): a tuple of maps per row, replaced only when
                # one of its maps changes.
                for i, maps in enumerate(column):
                    for attributes in maps:
                        if attributes and not (known(attributes) and plain(map(type, attributes.values()))):
                            replaced = tuple(seal(attributes) for attributes in maps)
                            if any(new is not old for new, old in zip(replaced, maps)):
                                column[i] = replaced
                            break
            else:
                previous = result = None  # resource and scope maps: one object for a run of rows
                for i, attributes in enumerate(column):
                    if attributes is previous:
                        if result is not attributes:
                            column[i] = result
                        continue
                    previous = result = attributes
                    if attributes and not (known(attributes) and plain(map(type, attributes.values()))):
                        result = column[i] = seal(attributes)
    return count
