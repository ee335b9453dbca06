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
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 30
_CHECKSUM_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH
# What is stored in the clear to identify a key: the fixed prefix and 8 random characters.
VISIBLE_PREFIX_LENGTH = len(KEY_PREFIX) + 8


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


def generate_key() -> NewKey:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    secret = KEY_PREFIX + body + _checksum(body)
    return NewKey(secret=secret, prefix=visible_prefix(secret), hashed=hash_key(secret))


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def visible_prefix(secret: str) -> str:
    return secret[:VISIBLE_PREFIX_LENGTH]


def is_well_formed(secret: str) -> bool:
    """True when the key has our format and its checksum matches (no database needed)."""
    if len(secret) != KEY_LENGTH or not secret.startswith(KEY_PREFIX):
        return False
    rest = secret[len(KEY_PREFIX):]
    if any(ch not in _ALPHABET for ch in rest):
        return False
    body, check = rest[:_RANDOM_LENGTH], rest[_RANDOM_LENGTH:]
    return secrets.compare_digest(_checksum(body), check)
