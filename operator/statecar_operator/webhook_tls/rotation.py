"""
The operator-managed webhook certificate Secret and its CA rotation, as pure functions: what the
Secret holds (`WebhookPKI`), its body, and what the Lease holder does next (`plan`, `carry_out`).

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
(a suspected key compromise).

The certificates themselves come from `issuing`; the caBundle of the webhook configurations
from `ca_bundle`. Pure: `sources.ManagedCertificates` reads and writes the Secret.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from statecar_operator.cluster.timestamps import format_time
from statecar_operator.webhook_tls.issuing import (
    Issued,
    issue_ca,
    issue_serving,
    issued_by,
    renewal_time,
    sans,
    valid_at,
)

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
