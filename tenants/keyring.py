"""A tenant's unwrapped data keys and the AES-GCM sealing of one attribute value. Imports
nothing of Django, so the prepare worker processes (gateway.otlp.prepare) encrypt without
loading it; tenants.encryption keeps the keys themselves."""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v"


class KeyUnavailable(Exception):
    """A value's data key is destroyed or cannot be unwrapped: the value cannot be read."""


class KeyRing:
    """Unwrapped data keys of one tenant, by version (the current one encrypts)."""

    def __init__(self, tenant_id: str, keys: dict[int, bytes]):
        self.tenant_id = tenant_id
        self.keys = keys
        self.current = max(keys) if keys else None
        # Built once: making the cipher object costs more than encrypting a short value.
        self._ciphers = {version: AESGCM(key) for version, key in keys.items()}
        self._prefix = f"{PREFIX}{self.current}:"

    def encrypt(self, attribute: str, value: str) -> str:
        nonce = os.urandom(12)
        sealed = self._ciphers[self.current].encrypt(nonce, value.encode(), f"{self.tenant_id}\x00{attribute}".encode())
        return self._prefix + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, attribute: str, stored: str) -> str:
        version_text, _, payload = stored[len(PREFIX) :].partition(":")
        cipher = self._ciphers.get(int(version_text))
        if cipher is None:
            raise KeyUnavailable(f"data key v{version_text} of tenant {self.tenant_id} is not available")
        raw = base64.b64decode(payload)
        try:
            return cipher.decrypt(raw[:12], raw[12:], self._aad(attribute)).decode()
        except InvalidTag as exc:
            raise KeyUnavailable(f"value of {attribute!r} does not decrypt for tenant {self.tenant_id}") from exc

    def _aad(self, attribute: str) -> bytes:
        return f"{self.tenant_id}\x00{attribute}".encode()
