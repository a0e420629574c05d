"""
The webhook certificate at run time: what every replica serves, and what the Lease holder keeps.

Two sources, one interface (`run`, `condition`, `metrics`, `wake`):

* `ManagedCertificates` (`STATECAR_OPERATOR_WEBHOOK_SECRET`, the chart's default mode): every
  replica serves the serving certificate of the Secret and loads a new one in place the moment
  the Secret changes (`server.LiveTLS`: no restart, no closed port). The Lease holder
  also runs the plan of `rotation` (create, renew, rotate the CA with overlap) and keeps the
  `caBundle` of `statecar-injector` and `statecar-validator` equal to the Secret's CAs, patching
  it whenever it differs: empty after a GitOps tool re-applied the chart's manifests (the
  failure Dapr leaves unrepaired, dapr/dapr#6467), a wrong CA, or a stale one.
* `FileCertificates` (modes cert-manager and secret, and the development self-signed pair):
  the files are re-read every `interval` and a changed pair is loaded the same way. caBundle is
  then cert-manager's cainjector's job, or the user's.

Both loops are level-triggered, like the reconciler: each pass reads the current state and
acts on it, so a missed event costs at most one interval. Watches on the Secret and on both
configurations (by name: all the RBAC allows) only wake a pass early, which is what makes a
re-applied configuration heal within a second instead of an interval.

What a replica serves is visible three ways: the `WebhookCertificateReady` condition in
`/readyz` and `/healthz`, Prometheus metrics on `/metrics` (`statecar_webhook_certificate_expiry_seconds`
and friends), and Events on the Secret for every step the Lease holder takes and for a
certificate that is expiring without being renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509

from statecar_operator.cluster import timestamps
from statecar_operator.cluster.events import EventRecorder, EventType, ObjectRef
from statecar_operator.cluster.kube import KubeError
from statecar_operator.manifests import webhooks
from statecar_operator.webhook_tls import ca_bundle, condition, issuing, rotation
from statecar_operator.webhook_tls.server import LiveTLS

logger = logging.getLogger(__name__)

#: The configurations whose caBundle the Lease holder keeps (fixed names, see rendering).
CONFIGURATIONS: Final[tuple[tuple[str, str], ...]] = (
    ("MutatingWebhookConfiguration", webhooks.MUTATING_CONFIGURATION_NAME),
    ("ValidatingWebhookConfiguration", webhooks.VALIDATING_CONFIGURATION_NAME),
)

#: Event reasons of the Lease holder's steps (on the Secret, where `kubectl describe` shows them).
_STEP_REASONS: Final[Mapping[str, str]] = {
    "create": "CertificateCreated",
    "reissue-serving": "ServingCertificateRenewed",
    "start-rotation": "CARotationStarted",
    "switch-serving": "ServingCertificateSwitched",
    "drop-previous": "PreviousCADropped",
}
_BAD_REASONS: Final = frozenset({"Expired", "ExpiringSoon", "UntrustedCertificate"})
#: A watch that ends this soon after it started is not reopened at once (a server refusing it).
_MIN_WATCH_SECONDS: Final = 1.0


class CertificateAPI(Protocol):
    """The calls `ManagedCertificates` makes (implemented by `cluster.kube.Kube`; faked in tests)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def read_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None: ...

    async def patch_webhook_configuration(
        self, kind: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]: ...

    def watch_secret(self, namespace: str, name: str) -> AsyncIterator[str]: ...

    def watch_webhook_configuration(self, kind: str, name: str) -> AsyncIterator[str]: ...


def _now() -> datetime:
    return datetime.now(UTC)


class _Serving:
    """What both sources share: the live context, what it serves, and how that is reported."""

    mode = "files"

    def __init__(
        self,
        tls: LiveTLS,
        *,
        clock: Callable[[], datetime] = _now,
        ca_dump: Path | None = None,
        events: EventRecorder | None = None,
    ) -> None:
        self.tls = tls
        self._clock = clock
        self._ca_dump = ca_dump
        self._dumped: bytes | None = None
        self._events = events
        self.trusted: list[x509.Certificate] = []
        self.rotation: str | None = None
        self.problem: str | None = None
        self.bundle_patches: Counter[str] = Counter()
        self.rotations = 0
        self._reported_reason: str | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Run the next pass now (a watch saw a change, or this replica became the leader)."""
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        # Not asyncio.wait_for: on Python 3.11 it runs the wait in a new Task, which kopf cancels
        # as a "hung" task 5 s after SIGTERM; that ended this loop, and the operator exited 1.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()
        self._wake.clear()

    def _serve(self, cert_pem: bytes, key_pem: bytes, bundle: bytes) -> None:
        if self.tls.load(cert_pem, key_pem):
            cert = self.tls.certificate
            assert cert is not None  # just loaded
            logger.info(
                "Serving webhook certificate %s (issuer %s, valid until %s)",
                issuing.fingerprint(cert_pem),
                cert.issuer.rfc4514_string(),
                timestamps.format_time(cert.not_valid_after_utc),
            )
        if self._ca_dump is not None and bundle and bundle != self._dumped:
            self._ca_dump.write_bytes(bundle)
            self._dumped = bundle

    def condition(self) -> dict[str, Any]:
        """`WebhookCertificateReady` for `/readyz`, with the last problem of the loop if any."""
        result = condition.condition(
            self.tls.certificate,
            self.trusted,
            now=self._clock(),
            rotation=self.rotation,
            check_issuer=self.mode == ManagedCertificates.mode,
        )
        result["mode"] = self.mode
        if self.problem:
            result["lastError"] = self.problem
        return result

    def _report_condition(self, target: ObjectRef | None) -> None:
        """Log (and post as a Warning Event) a condition reason that turned bad, once."""
        current = self.condition()
        reason = str(current["reason"])
        if reason == self._reported_reason:
            return
        self._reported_reason = reason
        if reason in _BAD_REASONS:
            logger.warning("Webhook certificate: %s", current["message"])
            self._record(target, "Warning", f"WebhookCertificate{reason}", str(current["message"]))

    def _record(
        self, target: ObjectRef | None, type_: EventType, reason: str, message: str
    ) -> None:
        if target is not None and self._events is not None:
            self._events.record(target, type=type_, reason=reason, message=message)

    def metrics(self) -> str:
        """Prometheus text exposition (format 0.0.4) of the certificate's state."""
        now = self._clock()
        out = _Exposition()
        expiry = "statecar_webhook_certificate_expiry_seconds"
        stamp = "statecar_webhook_certificate_expiration_timestamp_seconds"
        out.help(
            expiry, "gauge", "Seconds until the webhook certificate expires (negative: expired)."
        )
        served = self.tls.certificate
        cas = [("ca", c) for c in self.trusted[:1]] + [("ca-previous", c) for c in self.trusted[1:]]
        for role, cert in ([("serving", served)] if served else []) + cas:
            labels = {"certificate": role, "subject": cert.subject.rfc4514_string()}
            out.sample(expiry, labels, (cert.not_valid_after_utc - now).total_seconds())
        out.help(stamp, "gauge", "When the webhook certificate expires (Unix time).")
        for role, cert in ([("serving", served)] if served else []) + cas:
            labels = {"certificate": role, "subject": cert.subject.rfc4514_string()}
            out.sample(stamp, labels, cert.not_valid_after_utc.timestamp())
        loaded = "statecar_webhook_certificate_loaded"
        out.help(loaded, "gauge", "1 when the webhook server has a certificate to serve.")
        out.sample(loaded, {"mode": self.mode}, 1.0 if served else 0.0)
        reloads = "statecar_webhook_certificate_reloads_total"
        out.help(reloads, "counter", "Certificates loaded into the running webhook server.")
        out.sample(reloads, {}, float(self.tls.loads))
        patches = "statecar_webhook_ca_bundle_patches_total"
        out.help(patches, "counter", "caBundle patches of a webhook configuration (self-heals).")
        for _, name in CONFIGURATIONS:
            out.sample(patches, {"configuration": name}, float(self.bundle_patches[name]))
        rotations = "statecar_webhook_ca_rotations_total"
        out.help(rotations, "counter", "CA rotations this replica started as the Lease holder.")
        out.sample(rotations, {}, float(self.rotations))
        return out.text()


class _Exposition:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def help(self, name: str, kind: str, text: str) -> None:
        self._lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: Mapping[str, str], value: float) -> None:
        rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self._lines.append(f"{name}{{{rendered}}} {value!r}" if rendered else f"{name} {value!r}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class FileCertificates(_Serving):
    """Serve a certificate given as files (cert-manager, a user's Secret, or self-signed)."""

    def __init__(
        self,
        tls: LiveTLS,
        *,
        cert: Path,
        key: Path,
        ca: Path | None,
        interval: float,
        mode: str = "files",
        clock: Callable[[], datetime] = _now,
        ca_dump: Path | None = None,
    ) -> None:
        super().__init__(tls, clock=clock, ca_dump=ca_dump)
        self.mode = mode
        self._cert, self._key, self._ca = cert, key, ca
        self._interval = interval

    def sync_once(self) -> None:
        """Load the files if they changed. A half-updated pair (the kubelet swaps a mounted
        Secret's files as one symlink, but a read can straddle it) fails to load and the old
        pair keeps serving until the next pass."""
        try:
            cert_pem, key_pem = self._cert.read_bytes(), self._key.read_bytes()
            bundle = self._ca.read_bytes() if self._ca is not None else b""
            self.trusted = ca_bundle.bundle_certificates(bundle)
            self._serve(cert_pem, key_pem, bundle)
        except (OSError, ValueError) as exc:
            self.problem = f"cannot load {self._cert} and {self._key}: {exc}"
            logger.warning("%s", self.problem)
        else:
            self.problem = None
        self._report_condition(None)

    async def run(self) -> None:
        while True:
            self.sync_once()
            await self._sleep(self._interval)


class ManagedCertificates(_Serving):
    """The Secret's certificate on every replica; the Secret and the caBundle on the leader."""

    mode = "operator"

    def __init__(
        self,
        api: CertificateAPI,
        tls: LiveTLS,
        *,
        namespace: str,
        secret_name: str,
        policy: rotation.Policy,
        is_leader: Callable[[], bool],
        interval: float,
        events: EventRecorder | None = None,
        clock: Callable[[], datetime] = _now,
        ca_dump: Path | None = None,
        configurations: Sequence[tuple[str, str]] = CONFIGURATIONS,
    ) -> None:
        super().__init__(tls, clock=clock, ca_dump=ca_dump, events=events)
        self._api = api
        self._namespace = namespace
        self._name = secret_name
        self._policy = policy
        self._is_leader = is_leader
        self._interval = interval
        self._configurations = tuple(configurations)
        self._secret_ref: ObjectRef | None = None
        self.passes = 0

    async def run(self) -> None:
        watches = [
            asyncio.create_task(
                self._watch(lambda: self._api.watch_secret(self._namespace, self._name)),
                name="watch webhook Secret",
            ),
            *(
                asyncio.create_task(self._watch(self._configuration_watch(kind, name)))
                for kind, name in self._configurations
            ),
        ]
        try:
            while True:
                await self._sleep(await self.sync_once())
        finally:
            for task in watches:
                task.cancel()
            for task in watches:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _configuration_watch(self, kind: str, name: str) -> Callable[[], AsyncIterator[str]]:
        return lambda: self._api.watch_webhook_configuration(kind, name)

    async def _watch(self, start: Callable[[], AsyncIterator[str]]) -> None:
        """Wake the loop on every event; reopen the watch when the server ends it."""
        while True:
            started = time.monotonic()
            try:
                async for _ in start():
                    self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # a broken watch only delays wake-ups to the interval
                # A refusal (RBAC, a wrong name) is worth a warning; a dropped connection is not.
                level = logging.WARNING if isinstance(exc, KubeError) else logging.DEBUG
                logger.log(level, "Watch ended: %s; reopening in %.0fs", exc, self._interval)
                await asyncio.sleep(self._interval)
                continue
            if time.monotonic() - started < _MIN_WATCH_SECONDS:
                await asyncio.sleep(_MIN_WATCH_SECONDS)

    async def sync_once(self) -> float:
        """One pass; returns how long to wait before the next one (unless woken earlier)."""
        self.passes += 1
        delay = self._interval
        problems: list[str] = []
        try:
            secret = await self._api.read_secret(self._namespace, self._name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # reported, retried on the next pass
            self.problem = f"cannot read Secret {self._namespace}/{self._name}: {exc}"
            logger.warning("%s", self.problem)
            self._report_condition(self._secret_ref)
            return min(delay, 2.0)
        if self._is_leader():
            try:
                secret, delay = await self._lead(secret)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # reported, retried on the next pass
                problems.append(f"{type(exc).__name__}: {exc}")
                logger.warning("Webhook certificate (Lease holder's part) failed: %s", exc)
                delay = min(delay, 2.0)
        # Serving never depends on the Lease holder's part having worked: what was read is served.
        served = self._serve_secret(secret)
        if served is not None:
            problems.append(served)
        self.problem = "; ".join(problems) or None
        self._report_condition(self._secret_ref)
        return delay

    def _serve_secret(self, secret: Mapping[str, Any] | None) -> str | None:
        """Serve the Secret's certificate; returns what is wrong with it, if anything."""
        if secret is not None:
            metadata = secret.get("metadata") or {}
            self._secret_ref = ObjectRef(
                "v1", "Secret", self._name, self._namespace, metadata.get("uid") or None
            )
        pki = rotation.WebhookPKI.from_secret(secret)
        if pki.serving is None:
            # Keep serving what was loaded: the Lease holder repairs the Secret.
            problems = "; ".join(pki.problems) or "no serving certificate"
            return f"Secret {self._namespace}/{self._name} is unusable ({problems}); waiting for the Lease holder to write it"
        self.trusted = pki.trusted()
        self.rotation = pki.rotation_step()
        self._serve(pki.serving.cert_pem, pki.serving.key_pem, pki.bundle())
        return None

    async def _lead(self, secret: dict[str, Any] | None) -> tuple[dict[str, Any] | None, float]:
        """The Lease holder's part: one step of the plan, then the caBundle of both configurations."""
        now = self._clock()
        pki = rotation.WebhookPKI.from_secret(secret)
        configurations = [
            await self._api.read_webhook_configuration(kind, name)
            for kind, name in self._configurations
        ]
        published = pki.ca is not None and ca_bundle.bundle_published(configurations, pki.bundle())
        decision = rotation.plan(pki, self._policy, now=now, bundle_published=published)
        delay = self._interval
        if decision.action != "none":
            pki = rotation.carry_out(decision, pki, self._policy, now=now)
            body = rotation.secret_body(
                pki, name=self._name, namespace=self._namespace, existing=secret
            )
            if secret is None:
                secret = await self._api.create_secret(self._namespace, body)
            else:
                secret = await self._api.replace_secret(self._namespace, self._name, body)
            if decision.action == "start-rotation":
                self.rotations += 1
            uid = (secret.get("metadata") or {}).get("uid") or None
            self._secret_ref = ObjectRef("v1", "Secret", self._name, self._namespace, uid)
            message = (
                f"{decision.reason} (CA {_subject(pki)}, step {pki.rotation_step() or 'none'})"
            )
            logger.info("Webhook certificate: %s: %s", decision.action, message)
            self._record(self._secret_ref, "Normal", _STEP_REASONS[decision.action], message)
            # Plan again soon: the next step may already be due (or waits for the bundle below).
            delay = min(delay, 1.0)
        elif decision.due is not None:
            delay = min(delay, max(0.05, (decision.due - now).total_seconds()))
        await self._publish(pki.bundle(), configurations)
        return secret, delay

    async def _publish(
        self, bundle: bytes, configurations: Sequence[Mapping[str, Any] | None]
    ) -> None:
        for (kind, name), configuration in zip(self._configurations, configurations, strict=True):
            if configuration is None:
                continue  # not installed (development): nothing calls the webhook through it
            operations = ca_bundle.ca_bundle_patch(configuration, bundle)
            if operations is None:
                continue
            hooks = configuration.get("webhooks") or []
            before = next(
                (
                    ca_bundle.decode_bundle((h.get("clientConfig") or {}).get("caBundle"))
                    for h in hooks
                    if ca_bundle.decode_bundle((h.get("clientConfig") or {}).get("caBundle"))
                    != bundle
                ),
                b"",
            )
            await self._api.patch_webhook_configuration(kind, name, operations)
            self.bundle_patches[name] += 1
            message = (
                f"caBundle of {kind} {name} was {ca_bundle.describe_bundle(before, bundle)}; "
                f"set to the {len(ca_bundle.bundle_certificates(bundle))} CA(s) of this Secret"
            )
            logger.info("%s", message)
            self._record(self._secret_ref, "Normal", "CABundlePatched", message)


def _subject(pki: rotation.WebhookPKI) -> str:
    if pki.ca is None:
        return "-"
    return pki.ca.cert.subject.rfc4514_string()
