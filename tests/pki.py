"""Certificates made at test time with `cryptography`: a client/server CA, a server certificate
for localhost and 127.0.0.1, client certificates (valid, expired), and an untrusted CA's client."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_NOW = datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files."""

    cert_file: str
    key_file: str
    der: bytes

    @property
    def pem(self) -> bytes:
        return Path(self.cert_file).read_bytes()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "otlp-gateway tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


class CertificateAuthority:
    def __init__(self, directory: Path, name: str):
        self.directory, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(days=1))
            .not_valid_after(_NOW + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = str(directory / f"{name}.pem")
        Path(self.cert_file).write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool = False, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = _NOW - datetime.timedelta(days=1), _NOW + datetime.timedelta(days=90)
        if expired:
            not_before, not_after = _NOW - datetime.timedelta(days=30), _NOW - datetime.timedelta(days=1)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        stem = self.directory / f"{self.name}-{common_name}"
        cert_file, key_file = f"{stem}.pem", f"{stem}.key"
        Path(cert_file).write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        Path(key_file).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return Issued(cert_file, key_file, certificate.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority  # signs the server's and the trusted clients' certificates
    server: Issued
    client_a: Issued
    client_b: Issued
    client_unregistered: Issued
    expired: Issued
    rogue_ca: CertificateAuthority  # not trusted by the gateway
    rogue_client: Issued


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, rogue = CertificateAuthority(directory, "ca"), CertificateAuthority(directory, "rogue-ca")
    return Pki(
        ca=ca,
        server=ca.issue("server", server=True),
        client_a=ca.issue("client-a"),
        client_b=ca.issue("client-b"),
        client_unregistered=ca.issue("client-unregistered"),
        expired=ca.issue("client-expired", expired=True),
        rogue_ca=rogue,
        rogue_client=rogue.issue("client-a"),
    )
