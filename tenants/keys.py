"""API key format: `otlpgw_` + 30 random base62 characters + a 6-character base62 CRC32.

The fixed prefix and the checksum let secret scanners recognise a leaked key and reject
typos without a database lookup (as GitHub's `ghp_` tokens do). Only the SHA-256 of a key is
stored, with its first characters kept visible so people can tell keys apart.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib
from dataclasses import dataclass

KEY_PREFIX = "otlpgw_"
CONSOLE_TOKEN_PREFIX = "otlpgwc_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 30
_CHECKSUM_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        digits.append(_ALPHABET[rem])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the secret exists only here, never in the database."""

    secret: str
    prefix: str
    hashed: str


def _generate(prefix: str) -> NewKey:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    secret = prefix + body + _checksum(body)
    return NewKey(secret=secret, prefix=secret[: len(prefix) + 8], hashed=hash_key(secret))


def generate_key() -> NewKey:
    """An ingestion API key for a tenant's exporters."""
    return _generate(KEY_PREFIX)


def generate_console_token() -> NewKey:
    """A REST API token for a console user (a different prefix, so the two never mix)."""
    return _generate(CONSOLE_TOKEN_PREFIX)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def visible_prefix(secret: str, prefix: str = KEY_PREFIX) -> str:
    return secret[: len(prefix) + 8]


def is_well_formed(secret: str, prefix: str = KEY_PREFIX) -> bool:
    """True when the key has our format and its checksum matches (no database needed)."""
    if len(secret) != len(prefix) + _RANDOM_LENGTH + _CHECKSUM_LENGTH or not secret.startswith(prefix):
        return False
    rest = secret[len(prefix) :]
    if any(ch not in _ALPHABET for ch in rest):
        return False
    body, check = rest[:_RANDOM_LENGTH], rest[_RANDOM_LENGTH:]
    return secrets.compare_digest(_checksum(body), check)
