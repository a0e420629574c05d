"""
The webhook server's certificates as pure functions: issuing, the shared Secret, the next step.

The API server calls the webhook over TLS and checks the served certificate against the
`caBundle` of the webhook configurations, so every replica must serve a certificate from one CA
and that CA must be in the bundle at every moment, including while the CA itself is replaced.
Dapr's injector patches the bundle only when its trust anchors change and never notices a
re-applied configuration (dapr/dapr#6467); kopf's self-signed mode makes a CA per replica.
Here, as in the Vault injector's auto-TLS (`hashicorp/vault-k8s` `leader/leader.go`), the Lease
holder keeps one CA and one serving certificate in a Secret of the operator's namespace, and
every replica serves from that Secret.

The Secret (`kubernetes.io/tls`, so `tls.crt`/`tls.key` are where tools expect them):

    ca.crt            the current CA: signs new serving certificates
    ca.key            its private key (never leaves the Secret and the leader's memory)
    tls.crt, tls.key  the serving certificate all replicas present
    ca-previous.crt   only during a CA rotation: the CA being replaced, still trusted

A CA rotation never has a moment in which the served certificate is not trusted:

    1. start-rotation   a new CA becomes current, the old one moves to ca-previous.crt;
                        the caBundle becomes old + new; the serving certificate is unchanged
    2. switch-serving   once the bundle with both CAs is in both webhook configurations and
                        `overlap` has passed (every API server has seen it), a serving
                        certificate signed by the new CA replaces the old one
    3. drop-previous    after another `overlap` (every replica has reloaded it), the old CA
                        leaves the Secret and the bundle

The step in progress is recorded on the Secret (`statecar.io/ca-rotation-step-since`), so a new
Lease holder carries on where the old one stopped. Certificates are renewed when less than a
third of their lifetime is left (cert-manager's default `renewBefore`:
https://cert-manager.io/docs/usage/certificate/#reissuance-triggered-by-expiry-renewal), or the
CA `Policy.ca_renew_before` ahead of its expiry when that is set; and a rotation can be asked
for at any time with `kubectl annotate secret <name> statecar.io/rotate-ca=now`
(a suspected key compromise). Keys are ECDSA P-256: every API server version accepts them
(Dapr forces RSA only because some refuse Ed25519, `cmd/injector/app/app.go`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_KEY: Final = "ca.crt"
CA_KEY_KEY: Final = "ca.key"
TLS_CERT_KEY: Final = "tls.crt"
TLS_KEY_KEY: Final = "tls.key"
PREVIOUS_CA_KEY: Final = "ca-previous.crt"
#: `tls.crt` and `tls.key` are what the type requires (and what `kubectl create secret tls` and
#: cert-manager write), so the other certificate modes' tooling reads this Secret unchanged.
SECRET_TYPE: Final = "kubernetes.io/tls"  # noqa: S105  # a Secret type, not a credential

#: Set by a human to start a CA rotation now; removed by the operator when it starts one.
ROTATE_ANNOTATION: Final = "statecar.io/rotate-ca"
#: When the current step of a CA rotation began (RFC 3339, UTC); absent outside rotations.
STEP_ANNOTATION: Final = "statecar.io/ca-rotation-step-since"
SECRET_LABELS: Final[Mapping[str, str]] = {
    "app.kubernetes.io/managed-by": "statecar",
    "app.kubernetes.io/name": "statecar",
    "app.kubernetes.io/component": "webhook-certificate",
}

#: Renew when less than this share of a certificate's lifetime is left (cert-manager's default).
RENEW_FRACTION: Final = 1 / 3
#: Warn (condition reason ExpiringSoon, a Warning Event) when less than this share is left: late
#: enough that a renewal on time never warns, also under cert-manager's chart default of 1/6.
WARN_FRACTION: Final = 1 / 10
#: Certificates start this far in the past: an API server whose clock is a little behind the
#: operator's still accepts a certificate issued a moment ago.
BACKDATE: Final = datetime.timedelta(minutes=5)
CONDITION_TYPE: Final = "WebhookCertificateReady"


# --- issuing ---------------------------------------------------------------------------------


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


# --- the Secret --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How the Lease holder issues and rotates (from the operator's settings)."""

    names: tuple[str, ...]
    ca_validity: datetime.timedelta = datetime.timedelta(days=365)
    serving_validity: datetime.timedelta = datetime.timedelta(days=90)
    #: How long each step of a CA rotation waits before the next one.
    overlap: datetime.timedelta = datetime.timedelta(minutes=10)
    #: Rotate the CA this long before it expires; None: with a third of its lifetime left.
    ca_renew_before: datetime.timedelta | None = None

    def ca_renewal_time(self, ca: x509.Certificate) -> datetime.datetime:
        if self.ca_renew_before is None:
            return renewal_time(ca)
        return ca.not_valid_after_utc - self.ca_renew_before


@dataclass(frozen=True)
class WebhookPKI:
    """What the Secret holds, parsed. Anything unusable is absent and named in `problems`."""

    ca: Issued | None = None
    previous_ca: x509.Certificate | None = None
    serving: Issued | None = None
    step_since: datetime.datetime | None = None
    rotate_requested: bool = False
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any] | None) -> WebhookPKI:
        if secret is None:
            return cls(problems=("the Secret does not exist",))
        data = secret.get("data") or {}
        metadata = secret.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        problems: list[str] = []
        raw = {key: _decode(data, key, problems) for key in data if isinstance(key, str)}
        ca = _pair(raw, CA_CERT_KEY, CA_KEY_KEY, problems)
        serving = _pair(raw, TLS_CERT_KEY, TLS_KEY_KEY, problems)
        previous = _certificate(raw.get(PREVIOUS_CA_KEY), PREVIOUS_CA_KEY, problems)
        step_since = _parse_time(annotations.get(STEP_ANNOTATION))
        return cls(
            ca=ca,
            previous_ca=previous,
            serving=serving,
            step_since=step_since,
            rotate_requested=ROTATE_ANNOTATION in annotations,
            problems=tuple(problems),
        )

    def trusted(self) -> list[x509.Certificate]:
        """The CAs in the caBundle: the current one, and the previous one during a rotation."""
        return [c for c in (self.ca.cert if self.ca else None, self.previous_ca) if c is not None]

    def bundle(self) -> bytes:
        """The caBundle of both webhook configurations (PEM, current CA first)."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.trusted())

    def rotation_step(self) -> str | None:
        """None outside a rotation; else `trusting-new` (step 1 done) or `serving-new` (2 done)."""
        if self.previous_ca is None:
            return None
        if (
            self.serving is not None
            and self.ca is not None
            and issued_by(self.serving.cert, self.ca.cert)
        ):
            return "serving-new"
        return "trusting-new"


def _decode(data: Mapping[str, Any], key: str, problems: list[str]) -> bytes | None:
    value = data.get(key)
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        problems.append(f"{key} is not base64")
        return None


def _certificate(pem: bytes | None, key: str, problems: list[str]) -> x509.Certificate | None:
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        problems.append(f"{key} is not a PEM certificate")
        return None


def _pair(
    raw: Mapping[str, bytes | None], cert_key: str, key_key: str, problems: list[str]
) -> Issued | None:
    cert = _certificate(raw.get(cert_key), cert_key, problems)
    pem = raw.get(key_key)
    if cert is None or not pem:
        if cert is not None or pem:
            problems.append(f"{cert_key} and {key_key} must both be present")
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        problems.append(f"{key_key} is not an unencrypted PEM private key")
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        problems.append(f"{key_key} is not an ECDSA key")
        return None
    if key.public_key().public_numbers() != _public_numbers(cert):
        problems.append(f"{key_key} does not belong to {cert_key}")
        return None
    return Issued(cert, key)


def _public_numbers(cert: x509.Certificate) -> object:
    public = cert.public_key()
    return public.public_numbers() if isinstance(public, ec.EllipticCurvePublicKey) else None


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def secret_body(
    pki: WebhookPKI, *, name: str, namespace: str, existing: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """
    The Secret holding `pki`: a create body, or (with `existing`) an optimistic-concurrency
    update that keeps what others put into its metadata.
    """
    if pki.ca is None or pki.serving is None:
        raise ValueError("a Secret needs a CA and a serving certificate")
    files = {
        CA_CERT_KEY: pki.ca.cert_pem,
        CA_KEY_KEY: pki.ca.key_pem,
        TLS_CERT_KEY: pki.serving.cert_pem,
        TLS_KEY_KEY: pki.serving.key_pem,
    }
    if pki.previous_ca is not None:
        files[PREVIOUS_CA_KEY] = pki.previous_ca.public_bytes(serialization.Encoding.PEM)
    old = (existing or {}).get("metadata") or {}
    labels = {**(old.get("labels") or {}), **SECRET_LABELS}
    annotations = dict(old.get("annotations") or {})
    annotations.pop(STEP_ANNOTATION, None)
    if pki.step_since is not None:
        # Microseconds: a time cut to the second would end every overlap up to a second early.
        annotations[STEP_ANNOTATION] = pki.step_since.astimezone(datetime.UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
    if not pki.rotate_requested:
        annotations.pop(ROTATE_ANNOTATION, None)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    if "resourceVersion" in old:
        # A concurrent writer (an old leader that has not noticed yet) makes this fail with 409.
        metadata["resourceVersion"] = old["resourceVersion"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SECRET_TYPE,
        "metadata": metadata,
        "data": {k: base64.b64encode(v).decode("ascii") for k, v in files.items()},
    }


# --- what the Lease holder does next ------------------------------------------------------------

Action = Literal[
    "create", "reissue-serving", "start-rotation", "switch-serving", "drop-previous", "none"
]


@dataclass(frozen=True)
class Plan:
    action: Action
    reason: str
    #: When the next step is due (the loop wakes up then); None: nothing is scheduled.
    due: datetime.datetime | None = None


def _serving_problem(
    pki: WebhookPKI, policy: Policy, signer: x509.Certificate, now: datetime.datetime
) -> str | None:
    serving = pki.serving
    if serving is None:
        return "there is no serving certificate"
    if not issued_by(serving.cert, signer):
        return "the serving certificate is not signed by the CA"
    if not valid_at(serving.cert, now):
        return f"the serving certificate is not valid now (until {format_time(serving.cert.not_valid_after_utc)})"
    missing = set(policy.names) - sans(serving.cert)
    if missing:
        return f"the serving certificate lacks the names {sorted(missing)}"
    return None


def plan(
    pki: WebhookPKI, policy: Policy, *, now: datetime.datetime, bundle_published: bool
) -> Plan:
    """
    The next step for the Lease holder, given the Secret as read and whether both webhook
    configurations already carry `pki.bundle()` (`bundle_published`).
    """
    ca = pki.ca
    if ca is None or not valid_at(ca.cert, now):
        why = "; ".join(pki.problems) or "the CA has expired"
        return Plan("create", f"a new CA and serving certificate: {why}")
    if pki.previous_ca is not None:
        return _plan_rotation(pki, ca, policy, now=now, bundle_published=bundle_published)
    if pki.rotate_requested:
        return Plan("start-rotation", f"a CA rotation was requested ({ROTATE_ANNOTATION})")
    if now >= policy.ca_renewal_time(ca.cert):
        return Plan(
            "start-rotation",
            f"the CA expires at {format_time(ca.cert.not_valid_after_utc)}: rotating it",
        )
    problem = _serving_problem(pki, policy, ca.cert, now)
    if problem is not None:
        return Plan("reissue-serving", problem)
    assert pki.serving is not None  # no problem means there is one
    if now >= renewal_time(pki.serving.cert):
        expiry = format_time(pki.serving.cert.not_valid_after_utc)
        return Plan("reissue-serving", f"the serving certificate expires at {expiry}")
    return Plan(
        "none", "", due=min(policy.ca_renewal_time(ca.cert), renewal_time(pki.serving.cert))
    )


def _plan_rotation(
    pki: WebhookPKI,
    ca: Issued,
    policy: Policy,
    *,
    now: datetime.datetime,
    bundle_published: bool,
) -> Plan:
    previous = pki.previous_ca
    assert previous is not None  # only called during a rotation
    if not valid_at(previous, now):
        return Plan("drop-previous", "the previous CA has expired")
    # A lost step time (someone edited the annotations) must not stall the rotation forever.
    due = (pki.step_since or now - policy.overlap) + policy.overlap
    step = pki.rotation_step()
    serving = pki.serving
    if step == "trusting-new":
        if (
            serving is None
            or not issued_by(serving.cert, previous)
            or not valid_at(serving.cert, now)
        ):
            return Plan("switch-serving", "the serving certificate is unusable: issuing a new one")
        if not bundle_published:
            return Plan("none", "waiting until the caBundle with both CAs is published")
        if now < due:
            return Plan("none", "both CAs are trusted; serving the new one next", due=due)
        return Plan("switch-serving", "both CAs have been trusted for the overlap")
    if _serving_problem(pki, policy, ca.cert, now) is not None:
        return Plan("switch-serving", "the serving certificate is unusable: issuing a new one")
    if now < due:
        return Plan("none", "serving the new CA's certificate; dropping the old CA next", due=due)
    return Plan("drop-previous", "every replica has served the new certificate for the overlap")


def carry_out(plan: Plan, pki: WebhookPKI, policy: Policy, *, now: datetime.datetime) -> WebhookPKI:
    """The Secret's content after `plan` (new keys are generated here)."""

    def serving_by(ca: Issued) -> Issued:
        return issue_serving(ca, policy.names, now=now, validity=policy.serving_validity)

    if plan.action == "none":
        return pki
    if plan.action == "create":
        ca = issue_ca(now=now, validity=policy.ca_validity)
        return WebhookPKI(ca=ca, serving=serving_by(ca), rotate_requested=False)
    assert pki.ca is not None  # every other action starts from a usable CA
    if plan.action == "reissue-serving":
        return replace(pki, serving=serving_by(pki.ca))
    if plan.action == "start-rotation":
        new = issue_ca(now=now, validity=policy.ca_validity)
        return replace(pki, ca=new, previous_ca=pki.ca.cert, step_since=now, rotate_requested=False)
    if plan.action == "switch-serving":
        return replace(pki, serving=serving_by(pki.ca), step_since=now)
    # drop-previous: and a serving certificate of the previous CA (it expired with it) goes too.
    serving = pki.serving
    if serving is None or not issued_by(serving.cert, pki.ca.cert):
        serving = serving_by(pki.ca)
    return replace(pki, previous_ca=None, serving=serving, step_since=None)


# --- the webhook configurations -------------------------------------------------------------------


def decode_bundle(encoded: object) -> bytes:
    """A `caBundle` as stored (base64 in JSON); anything unreadable counts as empty."""
    if not isinstance(encoded, str) or not encoded:
        return b""
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return b""


def bundle_certificates(bundle: bytes) -> list[x509.Certificate]:
    if not bundle.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(bundle)
    except ValueError:
        return []


def describe_bundle(bundle: bytes, wanted: bytes) -> str:
    """Why a configuration's bundle is not `wanted`, for Events and logs."""
    if not bundle.strip():
        return "empty"
    have = {c.fingerprint(hashes.SHA256()) for c in bundle_certificates(bundle)}
    want = {c.fingerprint(hashes.SHA256()) for c in bundle_certificates(wanted)}
    if not have:
        return "not PEM certificates"
    if have == want:
        return "the right CAs, formatted differently"
    if have < want:
        return "missing the new CA"
    if have > want:
        return "still trusting a CA that was dropped"
    return "a different CA" if not have & want else "a different set of CAs"


def ca_bundle_patch(configuration: Mapping[str, Any], bundle: bytes) -> list[dict[str, Any]] | None:
    """
    A JSON patch (RFC 6902) that sets `bundle` as the caBundle of every webhook of a
    configuration, or None when all already have it.

    The `test` operations make it apply only to the version that was read (resourceVersion)
    and to the webhooks where they were (by name): a configuration re-applied meanwhile makes
    the patch fail instead of writing a bundle into the wrong place; the next pass re-reads.
    Other fields are never touched, so selectors and policies stay whatever the chart (or
    GitOps) says.
    """
    encoded = base64.b64encode(bundle).decode("ascii")
    version = (configuration.get("metadata") or {}).get("resourceVersion")
    operations: list[dict[str, Any]] = []
    for index, hook in enumerate(configuration.get("webhooks") or []):
        client_config = hook.get("clientConfig") or {}
        if decode_bundle(client_config.get("caBundle")) == bundle:
            continue
        operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]})
        # "add" sets an object member whether or not it exists (RFC 6902 section 4.1).
        operations.append(
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": encoded}
        )
    if not operations:
        return None
    if version:
        operations.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return operations


def bundle_published(configurations: Sequence[Mapping[str, Any] | None], bundle: bytes) -> bool:
    """Whether every existing configuration already carries `bundle` in all its webhooks."""
    return all(c is None or ca_bundle_patch(c, bundle) is None for c in configurations)


# --- what a replica reports ----------------------------------------------------------------------


def condition(
    serving: x509.Certificate | None,
    trusted: Sequence[x509.Certificate],
    *,
    now: datetime.datetime,
    rotation: str | None = None,
    check_issuer: bool = True,
) -> dict[str, Any]:
    """
    The `WebhookCertificateReady` condition (metav1.Condition's type/status/reason/message)
    of the certificate this replica serves, with the expiry times it is judged on.
    `check_issuer`: whether `trusted` must hold the serving certificate's direct issuer (true
    for the operator's own CA; a certificate from files may chain through intermediates).
    """
    result: dict[str, Any] = {"type": CONDITION_TYPE}
    if serving is None:
        return {
            **result,
            "status": "False",
            "reason": "NotLoaded",
            "message": "no webhook certificate is loaded yet",
        }
    not_after = serving.not_valid_after_utc
    result["servingNotAfter"] = format_time(not_after)
    ca_expiries = [c.not_valid_after_utc for c in trusted]
    if ca_expiries:
        result["caNotAfter"] = format_time(max(ca_expiries))
    lifetime = not_after - serving.not_valid_before_utc
    if now >= not_after:
        return {
            **result,
            "status": "False",
            "reason": "Expired",
            "message": f"the webhook certificate expired at {format_time(not_after)}",
        }
    if check_issuer and trusted and not any(issued_by(serving, ca) for ca in trusted):
        return {
            **result,
            "status": "False",
            "reason": "UntrustedCertificate",
            "message": "the served certificate is not signed by a CA of the caBundle",
        }
    soonest = min([not_after, *ca_expiries])
    if now >= not_after - lifetime * WARN_FRACTION or any(
        now
        >= c.not_valid_after_utc - (c.not_valid_after_utc - c.not_valid_before_utc) * WARN_FRACTION
        for c in trusted
    ):
        return {
            **result,
            "status": "True",
            "reason": "ExpiringSoon",
            "message": f"a webhook certificate expires at {format_time(soonest)} and has not been renewed",
        }
    if rotation is not None:
        return {
            **result,
            "status": "True",
            "reason": "Rotating",
            "message": f"the CA is being rotated ({rotation}); both CAs are trusted",
        }
    return {
        **result,
        "status": "True",
        "reason": "Valid",
        "message": f"valid until {format_time(not_after)}",
    }
