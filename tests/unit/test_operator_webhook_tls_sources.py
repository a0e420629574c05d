"""
The webhook certificate at run time: `LiveTLS` over real sockets, the webhook server that never
restarts for a new certificate, `ManagedCertificates` against an in-memory API (the Lease
holder's steps, a follower serving the same certificate, caBundle self-heal, a forced CA
rotation, conflicts), `FileCertificates`, and the settings, RBAC and `/metrics` of the mode.
The e2e tier (tests/e2e/test_helm_e2e.py) runs the same code against a real API server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from tests.support.ports import free_port

from statecar_operator import health_server
from statecar_operator.cluster.events import EventRecorder
from statecar_operator.cluster.kube import ConflictError, ForbiddenError, Kube, KubeError
from statecar_operator.manifests import rbac
from statecar_operator.settings import OperatorSettings, SettingsError
from statecar_operator.webhook_tls import ca_bundle, issuing, rotation
from statecar_operator.webhook_tls.server import LiveTLS, StatecarWebhookServer
from statecar_operator.webhook_tls.sources import (
    CONFIGURATIONS,
    FileCertificates,
    ManagedCertificates,
)

NAMESPACE = "ops"
SECRET = "sc-statecar-webhook-tls"
NAMES = issuing.serving_names("sc-statecar-webhook.ops.svc", ["127.0.0.1", "localhost"])


# --- an in-memory API server ----------------------------------------------------------------------


class FakeAPI:
    """Secrets and the two webhook configurations, with resourceVersions and JSON patches."""

    def __init__(self) -> None:
        self.version = 0
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.configurations: dict[tuple[str, str], dict[str, Any]] = {}
        self.changes: asyncio.Queue[str] = asyncio.Queue()
        self.fail_next_replace = False
        self.forbid_configurations = False
        for kind, name in CONFIGURATIONS:
            hooks = [{"name": f"{name}.statecar.io", "clientConfig": {"url": "https://x/"}}]
            self.configurations[kind, name] = self._stamp(
                {"metadata": {"name": name}, "webhooks": hooks}
            )

    def _stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return body

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.secrets.get((namespace, name))
        return copy.deepcopy(found) if found else None

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        if (namespace, name) in self.secrets:
            raise ConflictError(409, "AlreadyExists", name)
        stored = self._stamp(copy.deepcopy(dict(body)))
        stored["metadata"]["uid"] = "uid-1"
        self.secrets[namespace, name] = stored
        self.changes.put_nowait("secret")
        return copy.deepcopy(stored)

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        current = self.secrets[namespace, name]
        if (
            self.fail_next_replace
            or body["metadata"].get("resourceVersion") != (current["metadata"]["resourceVersion"])
        ):
            self.fail_next_replace = False
            raise ConflictError(409, "Conflict", "the object has been modified")
        stored = self._stamp(copy.deepcopy(dict(body)))
        stored["metadata"]["uid"] = current["metadata"]["uid"]
        self.secrets[namespace, name] = stored
        self.changes.put_nowait("secret")
        return copy.deepcopy(stored)

    async def read_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        if self.forbid_configurations:
            raise ForbiddenError(403, "Forbidden", f"cannot get {kind} {name}")
        found = self.configurations.get((kind, name))
        return copy.deepcopy(found) if found else None

    async def patch_webhook_configuration(
        self, kind: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        document = copy.deepcopy(self.configurations[kind, name])
        for operation in operations:
            *parents, last = operation["path"].split("/")[1:]
            node: Any = document
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            if operation["op"] == "test" and node.get(last) != operation["value"]:
                raise KubeError(422, "Invalid", f"test failed at {operation['path']}")
            if operation["op"] == "add":
                node[last] = operation["value"]
        self.configurations[kind, name] = self._stamp(document)
        self.changes.put_nowait(name)
        return copy.deepcopy(document)

    def reapply(self, kind: str, name: str, bundle: bytes | None) -> None:
        """What `kubectl replace` (or a GitOps sync) of the chart's manifest does."""
        document = copy.deepcopy(self.configurations[kind, name])
        for hook in document["webhooks"]:
            hook["clientConfig"].pop("caBundle", None)
            if bundle is not None:
                hook["clientConfig"]["caBundle"] = base64.b64encode(bundle).decode()
        self.configurations[kind, name] = self._stamp(document)
        self.changes.put_nowait(name)

    def bundle(self, kind: str = CONFIGURATIONS[0][0], name: str = CONFIGURATIONS[0][1]) -> bytes:
        hooks = self.configurations[kind, name]["webhooks"]
        return ca_bundle.decode_bundle(hooks[0]["clientConfig"].get("caBundle"))

    def pki(self) -> rotation.WebhookPKI:
        return rotation.WebhookPKI.from_secret(self.secrets.get((NAMESPACE, SECRET)))

    async def watch_secret(self, namespace: str, name: str) -> AsyncIterator[str]:
        # One watch stream for everything: good enough to wake the loop in `run`.
        while True:
            yield await self.changes.get()

    async def watch_webhook_configuration(self, kind: str, name: str) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""  # pragma: no cover - never reached


class Clock:
    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


def managed(
    api: FakeAPI,
    tmp_path: Path,
    *,
    leader: bool,
    clock: Callable[[], datetime.datetime] | None = None,
    overlap: float = 600,
    events: EventRecorder | None = None,
    interval: float = 10,
) -> ManagedCertificates:
    scratch = tmp_path / ("leader" if leader else "follower")
    scratch.mkdir(exist_ok=True)
    return ManagedCertificates(
        api,
        LiveTLS(scratch),
        namespace=NAMESPACE,
        secret_name=SECRET,
        policy=rotation.Policy(names=NAMES, overlap=datetime.timedelta(seconds=overlap)),
        is_leader=lambda: leader,
        interval=interval,
        events=events,
        clock=clock or Clock(),
    )


def queued_events(recorder: EventRecorder) -> list[tuple[str, str]]:
    """(reason, message) of every Event waiting to be posted."""
    queue = recorder._queue  # the test reads what would be posted (a private attribute)
    items = []
    while not queue.empty():
        _, _, reason, message = queue.get_nowait()
        items.append((reason, message))
    return items


def ca_of(pki: rotation.WebhookPKI) -> issuing.Issued:
    assert pki.ca is not None, "the Secret holds a CA"
    return pki.ca


def serving_of(pki: rotation.WebhookPKI) -> issuing.Issued:
    assert pki.serving is not None, "the Secret holds a serving certificate"
    return pki.serving


# --- ManagedCertificates -------------------------------------------------------------------------


async def test_the_leader_creates_the_secret_and_bundle_and_every_replica_serves_it(
    tmp_path: Path,
) -> None:
    api = FakeAPI()
    events = EventRecorder(instance="test")
    follower = managed(api, tmp_path, leader=False)
    await follower.sync_once()
    assert not follower.tls.loaded
    assert "waiting for the Lease holder" in (follower.problem or "")
    assert follower.condition()["reason"] == "NotLoaded"

    leader = managed(api, tmp_path, leader=True, events=events)
    await leader.sync_once()
    pki = api.pki()
    assert pki.ca is not None
    assert pki.serving is not None
    assert issuing.sans(pki.serving.cert) == set(NAMES)
    for kind, name in CONFIGURATIONS:
        assert api.bundle(kind, name) == pki.bundle() == pki.ca.cert_pem
    assert leader.tls.certificate == pki.serving.cert
    assert leader.bundle_patches == {name: 1 for _, name in CONFIGURATIONS}
    reasons = [reason for reason, _ in queued_events(events)]
    assert reasons == ["CertificateCreated", "CABundlePatched", "CABundlePatched"]

    await follower.sync_once()
    assert follower.tls.certificate == pki.serving.cert, "followers serve the leader's certificate"
    assert follower.problem is None
    assert follower.condition()["reason"] == "Valid"
    # Nothing to do on the next pass: no write, no patch.
    version = api.version
    await leader.sync_once()
    assert api.version == version


@pytest.mark.parametrize("bundle", ["empty", "wrong"])
async def test_a_reapplied_configuration_is_healed(tmp_path: Path, bundle: str) -> None:
    api = FakeAPI()
    ticks = iter(range(0, 10_000, 100))
    # Repeats of one Event within a minute are dropped (a GitOps tool fighting the operator
    # yields one Event, not hundreds); this heal comes later than that.
    events = EventRecorder(instance="test", clock=lambda: float(next(ticks)))
    leader = managed(api, tmp_path, leader=True, events=events)
    await leader.sync_once()
    queued_events(events)
    kind, name = CONFIGURATIONS[0]
    stranger = issuing.self_signed(["x"]).ca_pem
    api.reapply(kind, name, None if bundle == "empty" else stranger)
    assert not ca_bundle.bundle_published([api.configurations[kind, name]], api.pki().bundle())
    await leader.sync_once()
    assert api.bundle(kind, name) == api.pki().bundle()
    assert leader.bundle_patches[name] == 2
    ((reason, message),) = queued_events(events)
    assert reason == "CABundlePatched"
    assert ("was empty" if bundle == "empty" else "was a different CA") in message


async def test_a_forced_rotation_moves_leader_and_follower_through_every_step(
    tmp_path: Path,
) -> None:
    api = FakeAPI()
    clock = Clock()
    leader = managed(api, tmp_path, leader=True, clock=clock, overlap=30, interval=60)
    follower = managed(api, tmp_path, leader=False, clock=clock, overlap=30)
    await leader.sync_once()
    await follower.sync_once()
    old = api.pki()
    assert old.ca is not None
    secret = api.secrets[NAMESPACE, SECRET]
    secret["metadata"].setdefault("annotations", {})[rotation.ROTATE_ANNOTATION] = "now"

    await leader.sync_once()  # step 1: new CA, both trusted, old certificate still served
    trusting = api.pki()
    assert trusting.rotation_step() == "trusting-new"
    assert trusting.previous_ca == old.ca.cert
    assert ca_bundle.bundle_certificates(api.bundle()) == [ca_of(trusting).cert, ca_of(old).cert]
    assert (
        rotation.ROTATE_ANNOTATION not in api.secrets[NAMESPACE, SECRET]["metadata"]["annotations"]
    )
    assert leader.rotations == 1
    delay = await leader.sync_once()
    assert 29 <= delay <= 30, "the next pass is when the step is due"
    await follower.sync_once()
    assert follower.condition()["reason"] == "Rotating"
    assert follower.tls.certificate == serving_of(old).cert

    clock.advance(30)
    await leader.sync_once()  # step 2: the new CA's serving certificate
    serving_new = api.pki()
    assert serving_new.rotation_step() == "serving-new"
    assert issuing.issued_by(serving_of(serving_new).cert, ca_of(trusting).cert)
    assert len(ca_bundle.bundle_certificates(api.bundle())) == 2
    await follower.sync_once()
    assert follower.tls.certificate == serving_of(serving_new).cert

    clock.advance(30)
    await leader.sync_once()  # step 3: the old CA leaves the Secret and the bundle
    done = api.pki()
    assert done.previous_ca is None
    for kind, name in CONFIGURATIONS:
        assert api.bundle(kind, name) == ca_of(done).cert_pem
    await follower.sync_once()
    assert follower.condition()["reason"] == "Valid"
    assert follower.tls.loads == 2


async def test_a_conflicting_write_is_reported_and_retried(tmp_path: Path) -> None:
    api = FakeAPI()
    leader = managed(api, tmp_path, leader=True)
    await leader.sync_once()
    api.secrets[NAMESPACE, SECRET]["metadata"]["annotations"] = {rotation.ROTATE_ANNOTATION: "x"}
    api.fail_next_replace = True
    delay = await leader.sync_once()
    assert delay <= 2
    assert "ConflictError" in (leader.problem or "")
    assert leader.condition()["lastError"] == leader.problem
    await leader.sync_once()
    assert leader.problem is None
    assert api.pki().rotation_step() == "trusting-new"


async def test_a_leader_that_cannot_do_its_part_still_serves(tmp_path: Path) -> None:
    api = FakeAPI()
    await managed(api, tmp_path, leader=True).sync_once()
    api.forbid_configurations = True
    newcomer = managed(api, tmp_path, leader=True)  # e.g. a new leader with broken RBAC
    delay = await newcomer.sync_once()
    assert newcomer.tls.certificate == serving_of(api.pki()).cert
    assert "ForbiddenError" in (newcomer.problem or "")
    assert delay <= 2


async def test_the_loop_heals_at_once_when_a_watch_sees_the_change(tmp_path: Path) -> None:
    api = FakeAPI()
    leader = managed(api, tmp_path, leader=True, interval=60)
    task = asyncio.create_task(leader.run())
    try:
        for _ in range(200):
            if leader.tls.loaded and api.bundle():
                break
            await asyncio.sleep(0.01)
        assert leader.tls.loaded
        kind, name = CONFIGURATIONS[1]
        api.reapply(kind, name, None)
        for _ in range(200):  # far less than the 60 s interval: the watch woke the loop
            if api.bundle(kind, name):
                break
            await asyncio.sleep(0.01)
        assert api.bundle(kind, name) == api.pki().bundle()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_metrics_expose_expiry_loading_and_repairs(tmp_path: Path) -> None:
    api = FakeAPI()
    leader = managed(api, tmp_path, leader=True)
    text = leader.metrics()
    assert 'statecar_webhook_certificate_loaded{mode="operator"} 0.0' in text
    await leader.sync_once()
    text = leader.metrics()
    lines = {line.split(" ")[0]: line.split(" ")[1] for line in text.splitlines() if line[0] != "#"}
    serving = next(
        k
        for k in lines
        if k.startswith('statecar_webhook_certificate_expiry_seconds{certificate="serving"')
    )
    assert 89 * 86400 < float(lines[serving]) <= 90 * 86400
    ca = next(
        k
        for k in lines
        if k.startswith('statecar_webhook_certificate_expiry_seconds{certificate="ca"')
    )
    assert 364 * 86400 < float(lines[ca]) <= 365 * 86400
    assert lines['statecar_webhook_certificate_loaded{mode="operator"}'] == "1.0"
    assert (
        lines['statecar_webhook_ca_bundle_patches_total{configuration="statecar-injector"}']
        == "1.0"
    )
    assert "# TYPE statecar_webhook_certificate_expiry_seconds gauge" in text


class FakeResponse:
    def __init__(self, status: int, lines: list[bytes]) -> None:
        self.status = status
        self.reason = "Forbidden" if status == 403 else "OK"
        self.closed = False
        self._lines = lines
        self.content = self

    async def readline(self) -> bytes:
        return self._lines.pop(0) if self._lines else b""

    async def read(self) -> bytes:
        return b"".join(self._lines)

    def close(self) -> None:
        self.closed = True


class FakeClient:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call_api(self, path: str, method: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((path, kwargs))
        return self.response


async def test_a_named_watch_yields_event_types_and_reports_refusals() -> None:
    events = [b'{"type": "ADDED", "object": {}}\n', b"\n", b'{"type": "MODIFIED", "object": {}}\n']
    client = FakeClient(FakeResponse(200, events))
    kube = Kube(client)
    seen = [e async for e in kube.watch_webhook_configuration("MutatingWebhookConfiguration", "x")]
    assert seen == ["ADDED", "MODIFIED"]
    path, kwargs = client.calls[0]
    assert path == "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
    assert ("fieldSelector", "metadata.name=x") in kwargs["query_params"]
    assert client.response.closed
    refused = FakeClient(FakeResponse(403, [b'{"message": "secrets \\"x\\" is forbidden"}']))
    with pytest.raises(ForbiddenError, match="forbidden"):
        async for _ in Kube(refused).watch_secret("ops", "x"):
            pass  # pragma: no cover - nothing is yielded
    gone = FakeClient(
        FakeResponse(200, [b'{"type": "ERROR", "object": {"code": 410, "reason": "Gone"}}\n'])
    )
    with pytest.raises(KubeError, match="410 Gone"):
        async for _ in Kube(gone).watch_secret("ops", "x"):
            pass  # pragma: no cover - nothing is yielded


# --- LiveTLS and the webhook server ------------------------------------------------------------


def write_pair(directory: Path, pair: issuing.CertificateSet) -> None:
    (directory / "tls.crt").write_bytes(pair.cert_pem)
    (directory / "tls.key").write_bytes(pair.key_pem)
    (directory / "ca.crt").write_bytes(pair.ca_pem)


async def peer_certificate(port: int, ca_pem: bytes) -> x509.Certificate:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def test_live_tls_serves_a_new_certificate_without_a_new_listener(tmp_path: Path) -> None:
    first, second = issuing.self_signed(["localhost"]), issuing.self_signed(["localhost"])
    changes: list[int] = []
    tls = LiveTLS(tmp_path, on_change=lambda: changes.append(1))

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()
        writer.close()

    assert tls.load(first.cert_pem, first.key_pem) is True
    assert tls.load(first.cert_pem, first.key_pem) is False, "the same pair is not reloaded"
    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert (await peer_certificate(port, first.ca_pem)).serial_number == (
            x509.load_pem_x509_certificate(first.cert_pem).serial_number
        )
        # A connection opened before the reload keeps working afterwards.
        context = ssl.create_default_context(cadata=first.ca_pem.decode())
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="localhost"
        )
        assert tls.load(second.cert_pem, second.key_pem) is True
        writer.write(b"ping")
        assert await reader.read(4) == b"ping"
        writer.close()
        served = await peer_certificate(port, second.ca_pem)
        assert served == x509.load_pem_x509_certificate(second.cert_pem)
        # A key that does not match is refused and the good pair keeps being served.
        with pytest.raises(ssl.SSLError):
            tls.load(first.cert_pem, second.key_pem)
        assert await peer_certificate(port, second.ca_pem) == served
        assert tls.loads == 2
        assert changes == [1, 1]
        assert list(tmp_path.iterdir()) == [], "no key material is left on disk"
    finally:
        server.close()
        await server.wait_closed()


async def test_the_webhook_server_admits_over_the_live_certificate_and_never_restarts(
    tmp_path: Path,
) -> None:
    tls = LiveTLS(tmp_path)
    listening = asyncio.Event()
    port = free_port()
    server = StatecarWebhookServer(
        on_listening=listening.set, tls=tls, addr="127.0.0.1", port=port, host="127.0.0.1"
    )
    configs: list[Any] = []

    async def fn(request: Any, **_: Any) -> Any:
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": request["request"]["uid"], "allowed": True},
        }

    async def run() -> None:
        async for config in server(fn):
            configs.append(config)

    async def admit(ca_pem: bytes) -> int:
        review = {"request": {"uid": "1", "namespace": "shop", "object": {"metadata": {}}}}
        context = ssl.create_default_context(cadata=ca_pem.decode())
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"https://127.0.0.1:{port}/inject-pods", data=json.dumps(review), ssl=context
            ) as response,
        ):
            return response.status

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(listening.wait(), 10)
        first = issuing.self_signed(["127.0.0.1"])
        with pytest.raises(aiohttp.ClientError):
            await admit(first.ca_pem)  # listening, but nothing to present yet
        tls.load(first.cert_pem, first.key_pem)
        assert await admit(first.ca_pem) == 200
        second = issuing.self_signed(["127.0.0.1"])
        tls.load(second.cert_pem, second.key_pem)
        assert await admit(second.ca_pem) == 200
        assert len(configs) == 1, "kopf's restart-on-new-files loop never ran"
        assert "caBundle" not in configs[0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_file_certificates_reload_changed_files_and_keep_a_good_pair(tmp_path: Path) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    first = issuing.self_signed(["localhost"])
    write_pair(mounted, first)
    dump = tmp_path / "ca-dump.pem"
    source = FileCertificates(
        LiveTLS(tmp_path),
        cert=mounted / "tls.crt",
        key=mounted / "tls.key",
        ca=mounted / "ca.crt",
        interval=1,
        mode="cert-manager",
        ca_dump=dump,
    )
    source.sync_once()
    assert source.tls.certificate == x509.load_pem_x509_certificate(first.cert_pem)
    assert dump.read_bytes() == first.ca_pem
    assert source.condition()["reason"] == "Valid"
    assert source.condition()["mode"] == "cert-manager"
    second = issuing.self_signed(["localhost"])
    write_pair(mounted, second)
    source.sync_once()
    assert source.tls.certificate == x509.load_pem_x509_certificate(second.cert_pem)
    (mounted / "tls.key").write_bytes(first.key_pem)  # a half-updated pair
    source.sync_once()
    assert source.problem is not None
    assert source.tls.certificate == x509.load_pem_x509_certificate(second.cert_pem)


# --- settings, RBAC, /metrics -------------------------------------------------------------------


def test_the_managed_mode_settings() -> None:
    env = {
        "STATECAR_OPERATOR_NAMESPACE": "ops",
        "STATECAR_OPERATOR_WEBHOOK_SECRET": SECRET,
        "STATECAR_OPERATOR_WEBHOOK_EXTRA_SANS": " 127.0.0.1, ,hook.example ",
        "STATECAR_OPERATOR_WEBHOOK_CA_OVERLAP_SECONDS": "2.5",
        "STATECAR_OPERATOR_WEBHOOK_CERT_SYNC_SECONDS": "1",
    }
    settings = OperatorSettings.from_env(env)
    assert settings.webhook_secret == SECRET
    assert settings.extra_sans == ("127.0.0.1", "hook.example")
    assert settings.webhook_ca_overlap == 2.5
    assert settings.webhook_ca_validity == 365 * 86400
    both = {**env, "STATECAR_OPERATOR_WEBHOOK_CERT": "/c", "STATECAR_OPERATOR_WEBHOOK_KEY": "/k"}
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
        OperatorSettings.from_env(both)
    short = {**env, "STATECAR_OPERATOR_WEBHOOK_CA_VALIDITY_SECONDS": "10"}
    with pytest.raises(SettingsError, match="more than six times"):
        OperatorSettings.from_env(short)
    window = {**env, "STATECAR_OPERATOR_WEBHOOK_CA_RENEW_BEFORE_SECONDS": "4"}
    with pytest.raises(SettingsError, match="more than twice WEBHOOK_CA_OVERLAP_SECONDS"):
        OperatorSettings.from_env(window)
    window["STATECAR_OPERATOR_WEBHOOK_CA_RENEW_BEFORE_SECONDS"] = str(400 * 86400)
    with pytest.raises(SettingsError, match="less than WEBHOOK_CA_VALIDITY_SECONDS"):
        OperatorSettings.from_env(window)
    window["STATECAR_OPERATOR_WEBHOOK_CA_RENEW_BEFORE_SECONDS"] = str(30 * 86400)
    assert OperatorSettings.from_env(window).webhook_ca_renew_before == 30 * 86400
    with pytest.raises(SettingsError, match="WEBHOOK_CERT_SYNC_SECONDS"):
        OperatorSettings.from_env({**env, "STATECAR_OPERATOR_WEBHOOK_CERT_SYNC_SECONDS": "0"})


def test_the_managed_mode_rbac_is_by_name_only() -> None:
    plain = rbac.manifests(namespace="ops", service_account="op")
    documented = rbac.manifests(namespace="ops", service_account="op", webhook_secret=SECRET)
    cluster = documented[0]["rules"][len(plain[0]["rules"]) :]
    assert cluster == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["statecar-injector"],
            "verbs": ["get", "watch", "patch"],
        },
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["validatingwebhookconfigurations"],
            "resourceNames": ["statecar-validator"],
            "verbs": ["get", "watch", "patch"],
        },
    ]
    namespaced = documented[2]["rules"][len(plain[2]["rules"]) :]
    assert namespaced == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [SECRET],
            "verbs": ["update"],
        }
    ]


def test_the_rbac_command_prints_the_managed_mode_rules(capsys: pytest.CaptureFixture[str]) -> None:
    from statecar_cli.operator_cli import run

    assert run(["rbac", "--namespace", "ops", "--webhook-secret", SECRET]) == 0
    role = list(yaml.safe_load_all(capsys.readouterr().out))[2]
    assert {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [SECRET],
        "verbs": ["update"],
    } in role["rules"]


async def test_the_health_server_serves_metrics() -> None:
    port = free_port()
    task = asyncio.create_task(
        health_server.serve(
            health_server.Readiness(),
            addr="127.0.0.1",
            port=port,
            metrics=lambda: "statecar_up 1.0\n",
        )
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        assert response.status == 200
                        assert response.headers["Content-Type"].startswith(
                            "text/plain; version=0.0.4"
                        )
                        assert await response.text() == "statecar_up 1.0\n"
                        break
                await asyncio.sleep(0.02)
            else:  # pragma: no cover
                pytest.fail("the health server never answered")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
