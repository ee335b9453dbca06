"""TLS for both OTLP transports and the console: the configuration read from the settings, the
server credentials for grpcio and gunicorn, and the client certificate's SHA-256 fingerprint as
each transport exposes it (the tenant it belongs to is looked up in tenants.authentication)."""

from __future__ import annotations

import enum
import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class ClientAuth(enum.StrEnum):
    OPTIONAL = "optional"  # a client certificate is asked for and verified if sent
    REQUIRED = "required"  # the handshake fails without a certificate the client CA signed


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key_file: str
    client_ca_file: str = ""
    client_auth: ClientAuth = ClientAuth.OPTIONAL

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca_file)

    @classmethod
    def from_settings(cls) -> TlsConfig | None:
        """The configured TLS, None for plaintext; ImproperlyConfigured names what is wrong."""
        cert, key = settings.GATEWAY_TLS_CERT_FILE, settings.GATEWAY_TLS_KEY_FILE
        client_ca = settings.GATEWAY_TLS_CLIENT_CA_FILE
        if not cert and not key:
            if client_ca:
                raise ImproperlyConfigured(
                    "GATEWAY_TLS_CLIENT_CA_FILE needs TLS: set GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE too"
                )
            return None
        if not cert or not key:
            raise ImproperlyConfigured("TLS needs both GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE")
        try:
            client_auth = ClientAuth(settings.GATEWAY_TLS_CLIENT_AUTH)
        except ValueError:
            raise ImproperlyConfigured(
                f"GATEWAY_TLS_CLIENT_AUTH must be optional or required, got {settings.GATEWAY_TLS_CLIENT_AUTH!r}"
            ) from None
        for variable, path in (
            ("GATEWAY_TLS_CERT_FILE", cert),
            ("GATEWAY_TLS_KEY_FILE", key),
            ("GATEWAY_TLS_CLIENT_CA_FILE", client_ca),
        ):
            if path and not Path(path).is_file():
                raise ImproperlyConfigured(f"{variable} names {path}, which is not a readable file")
        config = cls(cert_file=cert, key_file=key, client_ca_file=client_ca, client_auth=client_auth)
        config.server_ssl_context()  # a key that does not match its certificate fails here, at start
        return config

    def server_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.mutual:
            context.load_verify_locations(cafile=self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED if self.client_auth is ClientAuth.REQUIRED else ssl.CERT_OPTIONAL
        return context

    def grpc_server_credentials(self) -> grpc.ServerCredentials:
        """grpcio either requires a verified client certificate or does not ask for one, so in the
        `optional` mode OTLP/gRPC clients authenticate with API keys only."""
        return grpc.ssl_server_credentials(
            [(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())],
            root_certificates=Path(self.client_ca_file).read_bytes() if self.mutual else None,
            require_client_auth=self.mutual and self.client_auth is ClientAuth.REQUIRED,
        )

    def gunicorn_options(self) -> dict[str, Any]:
        """gunicorn builds the same context as server_ssl_context() from these."""
        options: dict[str, Any] = {"certfile": self.cert_file, "keyfile": self.key_file}
        if self.mutual:
            options["ca_certs"] = self.client_ca_file
            options["cert_reqs"] = self.server_ssl_context().verify_mode
        return options

    def describe(self) -> str:
        if not self.mutual:
            return "TLS"
        return f"TLS, client certificates {self.client_auth.value}" + (
            " (HTTP; OTLP/gRPC takes API keys)" if self.client_auth is ClientAuth.OPTIONAL else ""
        )


def certificate_sha256(der: bytes) -> str:
    """The fingerprint client certificates are registered under: SHA-256 of the DER, lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def grpc_peer_certificate_sha256(context: grpc.ServicerContext) -> str | None:
    """The verified client certificate of a gRPC call (present only under mutual TLS)."""
    pem = context.auth_context().get("x509_pem_cert")
    if not pem:
        return None
    return certificate_sha256(ssl.PEM_cert_to_DER_cert(pem[0].decode("ascii")))


def wsgi_peer_certificate_sha256(environ: Mapping[str, Any]) -> str | None:
    """The verified client certificate of an HTTP request: the edge (gateway/edge.py) puts its
    DER in the environ; gunicorn's own workers hand the application the connection's socket as
    `gunicorn.socket`, over TLS an ssl.SSLSocket."""
    if "gateway.peer_certificate_der" in environ:
        der = environ["gateway.peer_certificate_der"]
        return certificate_sha256(der) if der else None
    getpeercert = getattr(environ.get("gunicorn.socket"), "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        der = getpeercert(binary_form=True)
    except (ValueError, OSError):  # not connected any more, or no handshake done
        return None
    return certificate_sha256(der) if der else None
