"""The pipeline's protect step: encrypt the values of a tenant's sensitive attribute keys in
the flattened batches, before they are stored."""
from __future__ import annotations

from storage.flatten import TableBatch
from tenants.encryption import KeyRing


def protect(batches: list[TableBatch], *, ring: KeyRing, sensitive: frozenset[str]) -> int:
    """Encrypt in place; returns how many values were encrypted. Attribute maps are the columns
    named *Attributes (a map per row, or a list of maps for nested events, links, exemplars)."""
    sealed: dict[int, dict] = {}  # resource and scope maps are shared by many rows: seal each once
    count = 0

    def seal(attributes: dict) -> dict:
        nonlocal count
        if not attributes or sensitive.isdisjoint(attributes):
            return attributes
        done = sealed.get(id(attributes))
        if done is None:
            done = dict(attributes)
            for key in sensitive.intersection(attributes):
                done[key] = ring.encrypt(key, done[key])
                count += 1
            sealed[id(attributes)] = done
        return done

    if not sensitive:
        return 0
    isdisjoint = sensitive.isdisjoint
    for batch in batches:
        for name, column in zip(batch.column_names, batch.columns):
            if not name.endswith("Attributes"):
                continue
            if "." in name:
                # Nested (events, links, exemplars): a tuple of maps per row, replaced only when
                # one of its maps changes.
                for i, maps in enumerate(column):
                    for attributes in maps:
                        if attributes and not isdisjoint(attributes):
                            column[i] = tuple(seal(attributes) for attributes in maps)
                            break
            else:
                for i, attributes in enumerate(column):
                    if attributes and not isdisjoint(attributes):
                        column[i] = seal(attributes)
    return count
