"""
Certificates for the webhook server, as pure functions: issue a CA and a serving certificate,
check names, issuers and validity, and make a throwaway self-signed pair for development.

Keys are ECDSA P-256: every API server version accepts them (Dapr forces RSA only because some
refuse Ed25519, `cmd/injector/app/app.go`). Who issues when, and where the result is kept, is
`rotation`'s job.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Renew when less than this share of a certificate's lifetime is left (cert-manager's default).
RENEW_FRACTION: Final = 1 / 3
#: Certificates start this far in the past: an API server whose clock is a little behind the
#: operator's still accepts a certificate issued a moment ago.
BACKDATE: Final = datetime.timedelta(minutes=5)


@dataclass(frozen=True, eq=False)
class Issued:
    """A certificate and its private key (equal when both are: key objects compare by identity)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Issued):
            return NotImplemented
        return self.cert == other.cert and self.key_pem == other.key_pem

    def __hash__(self) -> int:
        return hash(self.cert)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_ca(*, now: datetime.datetime, validity: datetime.timedelta) -> Issued:
    """A new self-signed CA, valid from `now` (backdated) for `validity`."""
    key = ec.generate_private_key(ec.SECP256R1())
    # A distinct subject per CA: during a rotation two CAs sit in one bundle, and names that
    # differ keep chain building unambiguous and tell a human reading the bundle which is which.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "statecar"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"statecar-webhook-ca-{now.strftime('%Y%m%dT%H%M%SZ')}"
            ),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_serving(
    ca: Issued, names: Sequence[str], *, now: datetime.datetime, validity: datetime.timedelta
) -> Issued:
    """A serving certificate for `names` (DNS names or IP addresses), signed by `ca`.

    It never outlives its CA: a certificate valid past its issuer's expiry would not verify then.
    """
    hosts = list(dict.fromkeys(n for n in names if n))
    if not hosts:
        raise ValueError("at least one host name is needed")
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = min(now + validity, ca.cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in hosts]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def service_names(host: str, *, cluster_domain: str = "cluster.local") -> list[str]:
    """
    Every name the API server may use for the webhook Service `host` (`<svc>.<ns>.svc`).

    The API server dials `<svc>.<ns>.svc` for a `service` clientConfig, but the other forms are
    what people type into curl and what some proxies resolve; a host of another form is kept
    as it is.
    """
    parts = host.split(".")
    if len(parts) == 3 and parts[2] == "svc" and all(parts):
        service, namespace = parts[0], parts[1]
        return [
            service,
            f"{service}.{namespace}",
            f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.{cluster_domain}",
        ]
    return [host] if host else []


def serving_names(host: str, extra: Sequence[str]) -> tuple[str, ...]:
    """The SANs of the serving certificate: the Service's names, then the extra ones."""
    names = [*service_names(host), *(e.strip() for e in extra)]
    unique = tuple(dict.fromkeys(n for n in names if n))
    return unique or ("localhost",)


def sans(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(extension.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in extension.get_values_for_type(x509.IPAddress)
    }


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def renewal_time(cert: x509.Certificate) -> datetime.datetime:
    """When a third of the certificate's lifetime is left: from then on it is renewed."""
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - lifetime * RENEW_FRACTION


def fingerprint(pem: bytes) -> str:
    """A short identity of a PEM blob (for logs and Events; never the key material itself)."""
    return hashlib.sha256(pem).hexdigest()[:16]


@dataclass(frozen=True)
class CertificateSet:
    """A CA and a serving certificate made in memory (development mode)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def self_signed(hostnames: Sequence[str], *, days: int = 365) -> CertificateSet:
    """A throwaway CA and a serving certificate for `hostnames`, for running without a cluster CA.

    kopf would self-sign with its optional `certbuilder` extra; `cryptography` is a dependency
    anyway, and this CA's PEM is what goes into a hand-made webhook configuration's caBundle.
    """
    names = list(dict.fromkeys(h for h in hostnames if h))
    if not names:
        raise ValueError("at least one host name is needed")
    now = datetime.datetime.now(datetime.UTC)
    ca = issue_ca(now=now, validity=datetime.timedelta(days=days))
    serving = issue_serving(ca, names, now=now, validity=datetime.timedelta(days=days))
    return CertificateSet(ca_pem=ca.cert_pem, cert_pem=serving.cert_pem, key_pem=serving.key_pem)
