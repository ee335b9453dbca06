"""Browser origins: the shape an allowed origin takes, and whether one matches a list.

An entry is an exact origin (`https://app.example.com`, `http://localhost:3000`), one with a
wildcard for subdomains (`https://*.example.com`), or `*` (any origin)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_PATTERN = re.compile(
    r"^(https?)://(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$"
)


def normalize_origin(entry: str) -> str:
    """An allowed-origin entry in its stored form; ValueError with the reason when it is none."""
    text = entry.strip().lower().rstrip("/")
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{entry!r} is not an origin: give scheme://host[:port] without a path")
    if not _PATTERN.match(text):
        raise ValueError(f"{entry!r} is not an origin like https://app.example.com, https://*.example.com or *")
    return text


def origin_matches(pattern: str, origin: str) -> bool:
    origin = origin.strip().lower().rstrip("/")
    if pattern == "*":
        return True
    if "://*." in pattern:
        scheme, _, rest = pattern.partition("://*.")
        head, sep, tail = origin.partition("://")
        return sep == "://" and head == scheme and tail.endswith("." + rest) and len(tail) > len(rest) + 1
    return pattern == origin
