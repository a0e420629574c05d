"""
The pure certificate logic of `statecar_operator.webhook_tls` (pki, rotation, ca_bundle, condition), with real keys and real TLS handshakes.

Handshakes run between two `ssl.SSLObject`s over memory BIOs (OpenSSL's own chain building and
host name checks, no sockets), so "the API server trusts this certificate" is tested the way a
TLS client decides it, not by re-implementing the checks. The rotation test walks a CA rotation
step by step and proves the property the overlap exists for: across every step, the certificate
of either side of the step verifies under the caBundle of either side, so API servers and
replicas may each see a step in any order.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime
import itertools
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from statecar_operator.webhook_tls import ca_bundle, condition, issuing, rotation
from statecar_operator.webhook_tls.rotation import Plan, Policy, WebhookPKI

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
NAMES = issuing.serving_names("sc-statecar-webhook.ops.svc", ["127.0.0.1"])
POLICY = Policy(
    names=NAMES,
    ca_validity=datetime.timedelta(days=365),
    serving_validity=datetime.timedelta(days=90),
    overlap=datetime.timedelta(minutes=10),
)


# --- helpers ----------------------------------------------------------------------------------


def handshake(serving: issuing.Issued, bundle: bytes, hostname: str) -> str | None:
    """A TLS handshake of a client trusting `bundle` with a server presenting `serving`.

    Returns None when the client accepts the server, else OpenSSL's reason. The key and
    certificate go through files only because `load_cert_chain` reads nothing else.
    """
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as scratch:
        cert_file, key_file = Path(scratch, "tls.crt"), Path(scratch, "tls.key")
        cert_file.write_bytes(serving.cert_pem)
        key_file.write_bytes(serving.key_pem)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cadata=bundle.decode())
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context.wrap_bio(client_in, client_out, server_hostname=hostname)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLCertVerificationError as exc:
                return str(exc.verify_message)
            except ssl.SSLError as exc:
                if name == "client":
                    return str(exc)
                break  # the server learns of the client's refusal; the client's reason counts
        client_in.write(server_out.read())
        server_in.write(client_out.read())
        if all(done.values()):
            return None
    return "no handshake"


def secret_of(pki: WebhookPKI, **metadata: Any) -> dict[str, Any]:
    body = rotation.secret_body(pki, name="tls", namespace="ops")
    body["metadata"].update(metadata)
    return body


def fresh(now: datetime.datetime = T0, policy: Policy = POLICY) -> WebhookPKI:
    return rotation.carry_out(Plan("create", "test"), WebhookPKI(), policy, now=now)


def configuration(*bundles: bytes | None, version: str = "7") -> dict[str, Any]:
    hooks = []
    for index, bundle in enumerate(bundles):
        client: dict[str, Any] = {"url": f"https://127.0.0.1:9443/hook-{index}"}
        if bundle is not None:
            client["caBundle"] = base64.b64encode(bundle).decode()
        hooks.append({"name": f"hook-{index}.statecar.io", "clientConfig": client})
    return {
        "metadata": {"name": "statecar-injector", "resourceVersion": version},
        "webhooks": hooks,
    }


def apply_json_patch(document: Mapping[str, Any], operations: Sequence[Mapping[str, Any]]) -> Any:
    """The two RFC 6902 operations `ca_bundle_patch` uses, as the API server applies them."""
    result = copy.deepcopy(dict(document))
    for operation in operations:
        *parents, last = [p for p in operation["path"].split("/")[1:]]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if operation["op"] == "test":
            assert node[last] == operation["value"], f"test failed at {operation['path']}"
        elif operation["op"] == "add":
            node[last] = operation["value"]
        else:  # pragma: no cover - only test and add are ever produced
            raise AssertionError(operation)
    return result


def ca_of(pki: WebhookPKI) -> issuing.Issued:
    assert pki.ca is not None, "the Secret holds a CA"
    return pki.ca


def serving_of(pki: WebhookPKI) -> issuing.Issued:
    assert pki.serving is not None, "the Secret holds a serving certificate"
    return pki.serving


def rotating_previous(pki: WebhookPKI) -> x509.Certificate:
    assert pki.previous_ca is not None, "a rotation is in progress"
    return pki.previous_ca


# --- issuing ----------------------------------------------------------------------------------


def test_a_ca_is_an_ecdsa_p256_ca_valid_for_its_validity() -> None:
    ca = issuing.issue_ca(now=T0, validity=DAY * 365)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp256r1"
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    ca.cert.verify_directly_issued_by(ca.cert)  # self-signed
    assert ca.cert.not_valid_after_utc == T0 + DAY * 365
    assert ca.cert.not_valid_before_utc == T0 - issuing.BACKDATE
    other = issuing.issue_ca(now=T0 + DAY, validity=DAY)
    assert other.cert.subject != ca.cert.subject, "two CAs in one bundle are told apart"


def test_the_serving_certificate_names_the_service_and_extra_sans_and_serves_tls() -> None:
    assert NAMES == (
        "sc-statecar-webhook",
        "sc-statecar-webhook.ops",
        "sc-statecar-webhook.ops.svc",
        "sc-statecar-webhook.ops.svc.cluster.local",
        "127.0.0.1",
    )
    now = datetime.datetime.now(datetime.UTC)
    ca = issuing.issue_ca(now=now, validity=DAY * 365)
    serving = issuing.issue_serving(ca, NAMES, now=now, validity=DAY * 90)
    assert issuing.sans(serving.cert) == set(NAMES)
    assert issuing.issued_by(serving.cert, ca.cert)
    usage = serving.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert serving.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    authority = serving.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    subject_key = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert authority.value.key_identifier == subject_key.value.digest
    # What the API server does: dial <svc>.<ns>.svc (or the URL's IP) and trust only caBundle.
    assert handshake(serving, ca.cert_pem, "sc-statecar-webhook.ops.svc") is None
    assert handshake(serving, ca.cert_pem, "127.0.0.1") is None
    assert "mismatch" in (handshake(serving, ca.cert_pem, "evil.ops.svc") or "")
    stranger = issuing.issue_ca(now=now, validity=DAY)
    assert "unable to get local issuer" in (
        handshake(serving, stranger.cert_pem, "sc-statecar-webhook.ops.svc") or ""
    )


def test_a_serving_certificate_never_outlives_its_ca() -> None:
    ca = issuing.issue_ca(now=T0, validity=DAY * 10)
    serving = issuing.issue_serving(ca, ["a"], now=T0, validity=DAY * 90)
    assert serving.cert.not_valid_after_utc == ca.cert.not_valid_after_utc
    with pytest.raises(ValueError, match="at least one host name"):
        issuing.issue_serving(ca, ["", ""], now=T0, validity=DAY)


@pytest.mark.parametrize(
    ("host", "extra", "expected"),
    [
        ("hook.ns.svc", [], ("hook", "hook.ns", "hook.ns.svc", "hook.ns.svc.cluster.local")),
        (
            "hook.ns.svc",
            [" 10.0.0.1 ", "hook"],
            ("hook", "hook.ns", "hook.ns.svc", "hook.ns.svc.cluster.local", "10.0.0.1"),
        ),
        ("webhook.example.com", ["127.0.0.1"], ("webhook.example.com", "127.0.0.1")),
        ("", [], ("localhost",)),
        ("", ["::1"], ("::1",)),
    ],
)
def test_serving_names(host: str, extra: list[str], expected: tuple[str, ...]) -> None:
    assert issuing.serving_names(host, extra) == expected


def test_the_development_pair_is_signed_by_its_ca() -> None:
    pair = issuing.self_signed(["statecar.ops.svc", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate(pair.ca_pem)
    leaf = x509.load_pem_x509_certificate(pair.cert_pem)
    assert issuing.issued_by(leaf, ca)
    assert issuing.sans(leaf) == {"statecar.ops.svc", "127.0.0.1"}


# --- the Secret ---------------------------------------------------------------------------------


def test_the_secret_round_trips_and_is_a_tls_secret() -> None:
    pki = fresh()
    body = rotation.secret_body(pki, name="sc-statecar-webhook-tls", namespace="ops")
    assert body["type"] == "kubernetes.io/tls"
    assert set(body["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "statecar"
    assert "annotations" not in body["metadata"]
    back = WebhookPKI.from_secret(body)
    assert back == pki
    assert back.problems == ()
    assert back.bundle() == ca_of(pki).cert_pem


def test_an_update_keeps_foreign_metadata_and_the_resource_version() -> None:
    pki = fresh()
    existing = secret_of(
        pki,
        resourceVersion="42",
        labels={"team": "platform"},
        annotations={"note": "keep me", rotation.ROTATE_ANNOTATION: "now"},
    )
    rotated = rotation.carry_out(
        Plan("start-rotation", "test"), WebhookPKI.from_secret(existing), POLICY, now=T0
    )
    body = rotation.secret_body(rotated, name="tls", namespace="ops", existing=existing)
    metadata = body["metadata"]
    assert metadata["resourceVersion"] == "42"
    assert metadata["labels"]["team"] == "platform"
    assert metadata["annotations"]["note"] == "keep me"
    assert rotation.ROTATE_ANNOTATION not in metadata["annotations"], "the request was honoured"
    assert metadata["annotations"][rotation.STEP_ANNOTATION] == "2030-01-01T00:00:00.000000Z"
    assert WebhookPKI.from_secret(body).step_since == T0
    assert set(body["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key", "ca-previous.crt"}


def test_unusable_secret_content_is_named_not_trusted() -> None:
    pki = fresh()
    body = secret_of(pki)
    other = fresh()
    body["data"]["tls.key"] = base64.b64encode(serving_of(other).key_pem).decode()
    body["data"]["ca.crt"] = "%%%"
    parsed = WebhookPKI.from_secret(body)
    assert parsed.ca is None
    assert parsed.serving is None
    assert "ca.crt is not base64" in parsed.problems
    assert "tls.key does not belong to tls.crt" in parsed.problems
    assert WebhookPKI.from_secret(None).problems == ("the Secret does not exist",)
    rsa_free = secret_of(pki)
    rsa_free["data"]["ca.key"] = base64.b64encode(b"not a key").decode()
    assert (
        "ca.key is not an unencrypted PEM private key" in WebhookPKI.from_secret(rsa_free).problems
    )
    only_cert = secret_of(pki)
    del only_cert["data"]["tls.key"]
    assert "tls.crt and tls.key must both be present" in WebhookPKI.from_secret(only_cert).problems


# --- the plan ---------------------------------------------------------------------------------


def test_no_secret_or_an_expired_ca_means_a_new_ca() -> None:
    decision = rotation.plan(WebhookPKI.from_secret(None), POLICY, now=T0, bundle_published=False)
    assert decision.action == "create"
    assert "does not exist" in decision.reason
    expired = rotation.plan(fresh(), POLICY, now=T0 + DAY * 366, bundle_published=True)
    assert expired.action == "create"


def test_a_healthy_secret_needs_nothing_until_a_third_of_a_lifetime_is_left() -> None:
    pki = fresh()
    decision = rotation.plan(pki, POLICY, now=T0 + DAY, bundle_published=True)
    assert decision == Plan("none", "", due=issuing.renewal_time(serving_of(pki).cert))
    # The serving certificate (90 days) is due first: renewed by the same CA, no bundle change.
    late = T0 + DAY * 61
    renew = rotation.plan(pki, POLICY, now=late, bundle_published=True)
    assert renew.action == "reissue-serving"
    assert "expires at 2030-04-01" in renew.reason
    renewed = rotation.carry_out(renew, pki, POLICY, now=late)
    assert renewed.ca == pki.ca
    assert renewed.bundle() == pki.bundle()
    assert issuing.issued_by(serving_of(renewed).cert, ca_of(pki).cert)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("names", "lacks the names ['10.9.9.9']"),
        ("foreign", "not signed by the CA"),
        ("missing", "no serving certificate"),
    ],
)
def test_a_serving_certificate_that_does_not_fit_is_reissued(change: str, reason: str) -> None:
    pki = fresh()
    policy = POLICY
    if change == "names":
        policy = Policy(names=(*NAMES, "10.9.9.9"))
    elif change == "foreign":
        pki = WebhookPKI(ca=pki.ca, serving=fresh().serving)
    else:
        pki = WebhookPKI(ca=pki.ca)
    decision = rotation.plan(pki, policy, now=T0, bundle_published=True)
    assert decision.action == "reissue-serving"
    assert reason in decision.reason
    fixed = rotation.carry_out(decision, pki, policy, now=T0)
    assert rotation.plan(fixed, policy, now=T0, bundle_published=True).action == "none"


def test_a_short_lived_ca_is_rotated_with_a_third_of_its_life_left() -> None:
    short = Policy(names=NAMES, ca_validity=datetime.timedelta(seconds=60))
    pki = fresh(policy=short)
    lifetime = ca_of(pki).cert.not_valid_after_utc - ca_of(pki).cert.not_valid_before_utc
    before = ca_of(pki).cert.not_valid_after_utc - lifetime / 3 - datetime.timedelta(seconds=1)
    assert rotation.plan(pki, short, now=before, bundle_published=True).action == "none"
    decision = rotation.plan(
        pki, short, now=before + datetime.timedelta(seconds=2), bundle_published=True
    )
    assert decision.action == "start-rotation"
    assert "the CA expires at" in decision.reason


def test_a_configured_window_rotates_the_ca_that_long_before_it_expires() -> None:
    policy = Policy(names=NAMES, ca_renew_before=DAY * 30)
    pki = fresh(policy=policy)
    assert policy.ca_renewal_time(ca_of(pki).cert) == T0 + DAY * 335

    def at(day: int) -> Plan:
        now = T0 + DAY * day
        serving = issuing.issue_serving(ca_of(pki), NAMES, now=now - DAY, validity=DAY * 90)
        current = dataclasses.replace(pki, serving=serving)
        return rotation.plan(current, policy, now=now, bundle_published=True)

    assert at(334).action == "none"
    assert at(334).due == T0 + DAY * 335
    assert at(336).action == "start-rotation"


def test_a_rotation_can_be_requested_by_annotation() -> None:
    requested = WebhookPKI.from_secret(
        secret_of(fresh(), annotations={rotation.ROTATE_ANNOTATION: "now"})
    )
    decision = rotation.plan(requested, POLICY, now=T0, bundle_published=True)
    assert decision.action == "start-rotation"
    assert rotation.ROTATE_ANNOTATION in decision.reason


def test_a_ca_rotation_keeps_every_certificate_trusted_at_every_step() -> None:
    # Real handshakes check validity against the real clock: start now, with a short overlap
    # so certificates issued at a later step (backdated 5 minutes) are already valid.
    now = datetime.datetime.now(datetime.UTC)
    policy = Policy(names=NAMES, overlap=datetime.timedelta(minutes=1))
    host = "sc-statecar-webhook.ops.svc"
    requested = secret_of(fresh(now, policy), annotations={rotation.ROTATE_ANNOTATION: "now"})
    states = [WebhookPKI.from_secret(requested)]
    published = {states[0].bundle()}
    actions: list[str] = []
    clock = now
    while len(actions) < 10:
        pki = states[-1]
        decision = rotation.plan(pki, policy, now=clock, bundle_published=pki.bundle() in published)
        if decision.action != "none":
            states.append(rotation.carry_out(decision, pki, policy, now=clock))
            actions.append(decision.action)
        elif pki.previous_ca is None:
            break  # the rotation is over
        elif decision.due is None:
            published.add(pki.bundle())  # what the leader's pass does next: patch both configs
        else:
            clock = decision.due
    assert actions == ["start-rotation", "switch-serving", "drop-previous"], actions
    old, trusting, serving_new, done = states
    assert [s.rotation_step() for s in states] == [None, "trusting-new", "serving-new", None]
    assert ca_bundle.bundle_certificates(trusting.bundle()) == [
        ca_of(trusting).cert,
        ca_of(old).cert,
    ]
    assert trusting.serving == old.serving, "step 1 changes only the bundle"
    assert issuing.issued_by(serving_of(serving_new).cert, ca_of(trusting).cert)
    assert done.bundle() == ca_of(trusting).cert_pem
    # Across each step, every certificate either side serves verifies under either bundle.
    for before, after in itertools.pairwise(states):
        for serving in (before.serving, after.serving):
            for bundle in (before.bundle(), after.bundle()):
                assert serving is not None
                assert handshake(serving, bundle, host) is None
    # And that is why the overlap waits: the old serving certificate is not trusted at the end.
    assert handshake(serving_of(old), done.bundle(), host) is not None


def rotating(now: datetime.datetime = T0) -> WebhookPKI:
    pki = fresh(now)
    return rotation.carry_out(Plan("start-rotation", "test"), pki, POLICY, now=now)


def test_the_first_rotation_step_waits_for_the_bundle_and_the_overlap() -> None:
    pki = rotating()
    unpublished = rotation.plan(pki, POLICY, now=T0 + DAY, bundle_published=False)
    assert unpublished == Plan("none", "waiting until the caBundle with both CAs is published")
    early = rotation.plan(
        pki, POLICY, now=T0 + datetime.timedelta(minutes=5), bundle_published=True
    )
    assert early.action == "none"
    assert early.due == T0 + POLICY.overlap
    due = rotation.plan(pki, POLICY, now=T0 + POLICY.overlap, bundle_published=True)
    assert due.action == "switch-serving"


def test_the_second_rotation_step_waits_for_the_overlap() -> None:
    pki = rotation.carry_out(Plan("switch-serving", "test"), rotating(), POLICY, now=T0)
    early = rotation.plan(
        pki, POLICY, now=T0 + datetime.timedelta(minutes=1), bundle_published=True
    )
    assert early.action == "none"
    assert early.due == T0 + POLICY.overlap
    assert rotation.plan(pki, POLICY, now=T0 + POLICY.overlap, bundle_published=True).action == (
        "drop-previous"
    )


def test_a_rotation_survives_a_lost_step_time_and_an_unusable_certificate() -> None:
    lost = WebhookPKI.from_secret(secret_of(rotating(), annotations={}))
    assert lost.step_since is None
    assert rotation.plan(lost, POLICY, now=T0, bundle_published=True).action == "switch-serving"
    broken = WebhookPKI(ca=rotating().ca, previous_ca=rotating().previous_ca, step_since=T0)
    decision = rotation.plan(broken, POLICY, now=T0, bundle_published=False)
    assert decision.action == "switch-serving"
    assert "unusable" in decision.reason


def test_an_expired_previous_ca_is_dropped_with_the_certificate_it_signed() -> None:
    short = Policy(names=NAMES, ca_validity=datetime.timedelta(days=3), overlap=DAY * 30)
    old = fresh(policy=short)
    pki = rotation.carry_out(Plan("start-rotation", "test"), old, short, now=T0 + DAY * 2)
    later = T0 + DAY * 4
    decision = rotation.plan(pki, short, now=later, bundle_published=True)
    assert decision == Plan("drop-previous", "the previous CA has expired")
    dropped = rotation.carry_out(decision, pki, short, now=later)
    assert dropped.previous_ca is None
    assert issuing.issued_by(serving_of(dropped).cert, ca_of(dropped).cert)


# --- the caBundle ------------------------------------------------------------------------------


def test_the_bundle_patch_fills_only_webhooks_that_lack_the_bundle() -> None:
    pki = rotating()
    bundle = pki.bundle()
    config = configuration(bundle, None, b"garbage")
    operations = ca_bundle.ca_bundle_patch(config, bundle)
    assert operations is not None
    assert operations[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    paths = [o["path"] for o in operations if o["op"] == "add"]
    assert paths == ["/webhooks/1/clientConfig/caBundle", "/webhooks/2/clientConfig/caBundle"]
    patched = apply_json_patch(config, operations)
    assert ca_bundle.ca_bundle_patch(patched, bundle) is None
    assert ca_bundle.bundle_published([patched, None], bundle)
    assert not ca_bundle.bundle_published([config], bundle)
    # Applied to a configuration re-applied meanwhile (another version), the patch fails.
    with pytest.raises(AssertionError, match="resourceVersion"):
        apply_json_patch(configuration(None, None, None, version="8"), operations)


@pytest.mark.parametrize(
    ("have", "expected"),
    [
        ("empty", "empty"),
        ("junk", "not PEM certificates"),
        ("stranger", "a different CA"),
        ("old-only", "missing the new CA"),
        ("both", "still trusting a CA that was dropped"),
        ("same-reformatted", "the right CAs, formatted differently"),
    ],
)
def test_what_was_wrong_with_a_bundle_is_said(have: str, expected: str) -> None:
    pki = rotating()
    new = ca_of(pki).cert_pem
    old = rotating_previous(pki).public_bytes(serialization.Encoding.PEM)
    bundles = {
        "empty": b"",
        "junk": b"hello",
        "stranger": fresh().bundle(),
        "old-only": old,
        "both": new + old,
        "same-reformatted": b"\n" + new,
    }
    assert (
        ca_bundle.describe_bundle(bundles[have], new if have != "old-only" else new + old)
        == expected
    )
    assert ca_bundle.decode_bundle("%%%") == b""
    assert ca_bundle.decode_bundle(None) == b""


# --- the condition ----------------------------------------------------------------------------


def test_the_condition_reports_expiry() -> None:
    pki = fresh()
    serving, ca = serving_of(pki).cert, ca_of(pki).cert
    assert condition.condition(None, [], now=T0)["reason"] == "NotLoaded"
    valid = condition.condition(serving, [ca], now=T0 + DAY)
    assert (valid["status"], valid["reason"]) == ("True", "Valid")
    assert valid["servingNotAfter"] == "2030-04-01T00:00:00Z"
    assert valid["caNotAfter"] == "2031-01-01T00:00:00Z"
    soon = condition.condition(serving, [ca], now=T0 + DAY * 85)
    assert (soon["status"], soon["reason"]) == ("True", "ExpiringSoon")
    expired = condition.condition(serving, [ca], now=T0 + DAY * 91)
    assert (expired["status"], expired["reason"]) == ("False", "Expired")
    untrusted = condition.condition(serving, [ca_of(fresh()).cert], now=T0)
    assert untrusted["reason"] == "UntrustedCertificate"
    # From files, a certificate may chain through intermediates: its issuer is not checked.
    chained = condition.condition(serving, [ca_of(fresh()).cert], now=T0 + DAY, check_issuer=False)
    assert chained["reason"] == "Valid"
    rotation = rotating()
    during = condition.condition(
        serving_of(rotation).cert,
        rotation.trusted(),
        now=T0,
        rotation=rotation.rotation_step(),
    )
    assert (during["reason"], during["status"]) == ("Rotating", "True")
    assert "trusting-new" in during["message"]
