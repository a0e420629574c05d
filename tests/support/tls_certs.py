"""
Test helper (not a test module): a throwaway private CA with a server certificate for
127.0.0.1 and a client certificate, as PEM files and texts, for TLS `redis-server`s.

`make_certs(directory)` writes `ca.pem`, `server.pem`/`server-key.pem`, `client.pem`/
`client-key.pem` and returns them; `redis_tls_args(certs, auth_clients)` is the matching
`redis-server` command line (`--tls-auth-clients yes|optional|no`).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certs:
    directory: Path
    ca_pem: str
    server_pem: str
    server_key_pem: str
    client_pem: str
    client_key_pem: str

    def path(self, name: str) -> str:
        return str(self.directory / name)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        # Cluster nodes and replicas also connect to each other as clients, with this cert.
        usages = [usage, ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    elif usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path) -> Certs:
    ca_key, server_key, client_key = _key(), _key(), _key()
    ca = _cert("statecar test CA", ca_key, None, ca_key, usage=None)
    server = _cert("redis", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _cert("statecar", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    def pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    certs = Certs(
        directory,
        pem(ca),
        pem(server),
        _key_pem(server_key),
        pem(client),
        _key_pem(client_key),
    )
    for name, text in (
        ("ca.pem", certs.ca_pem),
        ("server.pem", certs.server_pem),
        ("server-key.pem", certs.server_key_pem),
        ("client.pem", certs.client_pem),
        ("client-key.pem", certs.client_key_pem),
    ):
        (directory / name).write_text(text)
    return certs


def redis_tls_args(certs: Certs, auth_clients: str) -> list[str]:
    return [
        "--tls-cert-file",
        certs.path("server.pem"),
        "--tls-key-file",
        certs.path("server-key.pem"),
        "--tls-ca-cert-file",
        certs.path("ca.pem"),
        "--tls-auth-clients",
        auth_clients,
    ]
