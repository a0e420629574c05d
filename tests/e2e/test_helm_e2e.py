"""
The Helm chart against a real kube-apiserver: lint, render, validate, install, run the operator
on the chart's own ServiceAccount, self-heal the caBundle, rotate the CA, upgrade, uninstall.

There is no kubelet, so the chart's Deployment never starts a pod: the operator runs as two
local processes (a Lease holder and a follower, as two replicas would) configured with the very
environment the installed Deployment declares (`STATECAR_OPERATOR_*` values, read back from the
API server) and authenticated with a token of the chart's ServiceAccount (`kubectl create
token`), so every API call is subject to the chart's RBAC. The webhook configurations point at
the first process through `webhook.url` (`https://127.0.0.1:PORT/`); the certificate mode is the
chart's default, `operator`: the Lease holder makes the CA, writes the Secret and patches the
caBundle, and both processes serve the Secret's certificate.

The tests of this module run in order and share one release (each step builds on the previous
one, as a user's would); timings of the steps that matter are printed at the end of the module.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tests.e2e import operator_fixtures
from tests.e2e.localcluster import REPO_ROOT, LocalCluster
from tests.support import processes
from tests.support.ports import free_port

from statecar_contract import annotations as ann
from statecar_operator.manifests import rbac
from statecar_operator.webhook_tls import ca_bundle, issuing, rotation

pytestmark = pytest.mark.e2e

T = TypeVar("T")

CHART = REPO_ROOT / "charts" / "statecar"
HA_VALUES = CHART / "ci" / "ha-values.yaml"
OPTIONS_VALUES = CHART / "ci" / "options-values.yaml"  # every optional block of the templates
CRD_FILE = "statestorecomponents.statecar.io.yaml"
CRD_NAME = "statestorecomponents.statecar.io"
RELEASE = "sc-e2e"
NAMESPACE = "statecar-helm-e2e"  # the release namespace (never injected)
APP = "helm-e2e-app"  # where annotated pods are created
FULLNAME = f"{RELEASE}-statecar"
SERVICE_ACCOUNT = FULLNAME
SECRET = f"{FULLNAME}-webhook-tls"
MUTATING, VALIDATING = "statecar-injector", "statecar-validator"
CONFIGURATIONS = {
    "MutatingWebhookConfiguration": ("mutatingwebhookconfigurations", MUTATING),
    "ValidatingWebhookConfiguration": ("validatingwebhookconfigurations", VALIDATING),
}
STATECAR = [sys.executable, "-m", "statecar_cli.main"]
#: Each step of a CA rotation waits this long here (600 s by default): long enough to observe
#: both steps, short enough for the module's time budget.
OVERLAP = 4.0
#: Generous bounds for things that take well under a second on an idle machine.
REACT = 30.0

TIMINGS: dict[str, float] = {}
NOTES: list[str] = []


# --- small helpers ----------------------------------------------------------------------------


def wait_for(
    what: str,
    observe: Callable[[], T],
    until: Callable[[T], bool] = bool,
    *,
    timeout: float = REACT,
    interval: float = 0.05,
) -> T:
    """The shared bounded wait (operator_fixtures.wait_for), with this module's tighter pace."""
    return operator_fixtures.wait_for(what, observe, until, timeout=timeout, interval=interval)


def served_certificate(port: int) -> x509.Certificate:
    """The certificate a webhook server presents (no verification: we only look at it)."""
    return x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", port), timeout=5).encode()
    )


def trusts(bundle: bytes, port: int) -> bool:
    """Whether a TLS client trusting only `bundle` (as the API server does) accepts the server."""
    context = ssl.create_default_context(cadata=bundle.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except ssl.SSLError:
        return False


class Api:
    """Fast reads and writes with one bearer token (polling with kubectl would fork Go binaries)."""

    def __init__(self, cluster: LocalCluster, token: str | None = None) -> None:
        self.client = httpx.Client(
            base_url=cluster.url,
            verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
            headers={"Authorization": f"Bearer {token or cluster.token}"},
            timeout=15,
            trust_env=False,
        )

    def get(self, path: str) -> dict[str, Any] | None:
        response = self.client.get(path)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def secret(self) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{NAMESPACE}/secrets/{SECRET}")

    def configuration(self, kind: str) -> dict[str, Any] | None:
        plural, name = CONFIGURATIONS[kind]
        return self.get(f"/apis/admissionregistration.k8s.io/v1/{plural}/{name}")

    def bundle(self, kind: str = "MutatingWebhookConfiguration") -> bytes:
        """The caBundle of the configuration's first webhook (b"" when absent)."""
        body = self.configuration(kind) or {"webhooks": [{}]}
        return ca_bundle.decode_bundle(
            (body["webhooks"][0].get("clientConfig") or {}).get("caBundle")
        )

    def create_pod(self, name: str, *, annotated: bool = True) -> httpx.Response:
        annotations = {ann.ENABLED: "true", ann.APP_ID: "orders"} if annotated else {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": APP, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "registry.example/orders:1"}]},
        }
        return self.client.post(f"/api/v1/namespaces/{APP}/pods", json=pod)


def injected(response: httpx.Response) -> bool:
    """Whether a pod creation succeeded and the stored pod has the sidecar."""
    if response.status_code != 201:
        return False
    spec = response.json()["spec"]
    return any(c["name"] == ann.SIDECAR_CONTAINER_NAME for c in spec.get("initContainers") or [])


def secret_pki(api: Api) -> rotation.WebhookPKI:
    return rotation.WebhookPKI.from_secret(api.secret())


def the_ca(pki: rotation.WebhookPKI) -> x509.Certificate:
    assert pki.ca is not None, f"the Secret has no usable CA: {pki.problems}"
    return pki.ca.cert


# --- helm and the operator processes -------------------------------------------------------------


class Helm:
    def __init__(self, cluster: LocalCluster, home: Path) -> None:
        self.binary = str(cluster.bin_dir / "helm")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))},
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(cluster.kubeconfig),
        }

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc


class Operator:
    """`statecar operator` as a replica of the installed Deployment would run it."""

    def __init__(
        self, identity: str, env: Mapping[str, str], kubeconfig: Path, workdir: Path, port: int
    ) -> None:
        self.identity = identity
        self.webhook_port = port
        self.health_port = free_port()
        self.log_path = workdir / f"{identity}.log"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("STATECAR_", "KUBERNETES_", "KUBECONFIG"))
            },
            **env,
            # What the downward API and the pod network would provide:
            "STATECAR_OPERATOR_NAMESPACE": NAMESPACE,
            "STATECAR_OPERATOR_POD_NAME": identity,
            "STATECAR_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
            "STATECAR_OPERATOR_WEBHOOK_PORT": str(port),
            "STATECAR_OPERATOR_HEALTH_ADDR": "127.0.0.1",
            "STATECAR_OPERATOR_HEALTH_PORT": str(self.health_port),
            "KUBECONFIG": str(kubeconfig),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*STATECAR, "operator"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def readyz(self) -> dict[str, Any]:
        response = httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=3)
        body: dict[str, Any] = response.json()
        body["status"] = response.status_code
        return body

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.health_port}/metrics", timeout=3).text
        samples = (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        return {name: float(value) for name, value in samples}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return processes.stop(self.process, grace=30)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(cluster, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Iterator[Api]:
    client = Api(cluster)
    yield client
    client.client.close()


@pytest.fixture(scope="module")
def kube_version(cluster: LocalCluster) -> str:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    return str(version["gitVersion"]).lstrip("v")


@pytest.fixture(scope="module", autouse=True)
def clean_slate(cluster: LocalCluster, helm: Helm, pytestconfig: pytest.Config) -> Iterator[None]:
    """No leftovers from another module before, and none of ours after (the CRD is kept by
    uninstall on purpose, and the certificate Secret is not a release object)."""

    def clean() -> None:
        helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)
        for plural, name in CONFIGURATIONS.values():
            cluster.kubectl("delete", plural, name, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", check=False)
        cluster.kubectl(
            "delete", "secret", SECRET, "-n", NAMESPACE, "--ignore-not-found", check=False
        )

    clean()
    cluster.create_namespace(NAMESPACE)
    cluster.create_namespace(APP)
    yield
    clean()
    lines = [f"  {what:72} {seconds:6.2f}s" for what, seconds in TIMINGS.items()]
    lines += [f"  {note}" for note in NOTES]
    to_terminal(pytestconfig, ["", "test_helm_e2e timings:", *lines])


def to_terminal(config: pytest.Config, lines: list[str]) -> None:
    """Write past pytest's output capture (which would otherwise swallow it at teardown)."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter is None or not lines:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def webhook_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def release(helm: Helm, webhook_port: int) -> dict[str, Any]:
    """`helm install` of the chart, the webhook pointed at the first local operator process."""
    started = time.monotonic()
    helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--set",
        f"webhook.url=https://127.0.0.1:{webhook_port}/",
        "--set",
        f"operator.webhookPort={webhook_port}",
        "--set-json",  # --set would pass a float as a string
        f"webhook.certificates.operator.rotationOverlapSeconds={OVERLAP}",
        "--set",
        "webhook.certificates.syncSeconds=1",
    )
    TIMINGS["helm install"] = time.monotonic() - started
    manifest = helm("get", "manifest", RELEASE, "-n", NAMESPACE).stdout
    return {"objects": [d for d in yaml.safe_load_all(manifest) if d]}


@pytest.fixture(scope="module")
def operators(
    cluster: LocalCluster,
    api: Api,
    release: dict[str, Any],
    webhook_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Operator]]:
    """Two replicas of the chart's Deployment as local processes, on its ServiceAccount's token."""
    workdir = tmp_path_factory.mktemp("operators")
    deployment = api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{FULLNAME}")
    assert deployment is not None, "the chart's Deployment is installed"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["STATECAR_OPERATOR_WEBHOOK_SECRET"] == SECRET
    assert env["STATECAR_OPERATOR_WEBHOOK_EXTRA_SANS"] == "127.0.0.1", "webhook.url's host"
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", NAMESPACE, "--duration=2h"
    ).stdout.strip()
    kubeconfig = cluster.write_kubeconfig(workdir / "kubeconfig", token, user=SERVICE_ACCOUNT)
    started = time.monotonic()
    replicas = [
        Operator(f"{FULLNAME}-a", env, kubeconfig, workdir, webhook_port).start(),
        Operator(f"{FULLNAME}-b", env, kubeconfig, workdir, free_port()).start(),
    ]
    try:
        for replica in replicas:
            wait_for(
                f"{replica.identity} to be ready",
                replica.readyz,
                lambda body: body["status"] == 200,
                timeout=60,
                interval=0.2,
            )
        TIMINGS["both operator replicas ready (Secret made, caBundle set)"] = (
            time.monotonic() - started
        )
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


@pytest.fixture(autouse=True)
def operator_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test that ran the operators, the tails of their logs on the terminal."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed == failed_before or "operators" not in request.fixturenames:
        return
    for replica in request.getfixturevalue("operators"):
        tail = replica.log().splitlines()[-60:]
        to_terminal(request.config, ["", f"--- last lines of {replica.identity}'s log ---", *tail])


# --- 1. lint, render, validate ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [None, HA_VALUES, OPTIONS_VALUES],
    ids=["defaults", "ha-values", "every-option"],
)
def test_lint_and_every_rendered_object_validates_against_the_api_server(
    cluster: LocalCluster, helm: Helm, kube_version: str, values: Path | None
) -> None:
    extra = ["--values", str(values)] if values else []
    helm(
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
        *extra,
    )
    rendered = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
        *extra,
    ).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "MutatingWebhookConfiguration", "CustomResourceDefinition"} <= kinds
    if values is HA_VALUES:
        assert "PodDisruptionBudget" in kinds
    # The API server's own validation (schemas, defaults, admission) of every object, stored nowhere.
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout


# --- 2. install, and the operator on the chart's ServiceAccount -------------------------------------


def test_the_leader_made_one_ca_and_every_replica_serves_its_certificate(
    api: Api, operators: list[Operator]
) -> None:
    secret = api.secret()
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    pki = rotation.WebhookPKI.from_secret(secret)
    assert pki.serving is not None
    assert issuing.sans(pki.serving.cert) >= {
        f"{FULLNAME}-webhook.{NAMESPACE}.svc",
        f"{FULLNAME}-webhook.{NAMESPACE}.svc.cluster.local",
        "127.0.0.1",
    }
    for kind in CONFIGURATIONS:
        assert api.bundle(kind) == pki.bundle(), f"{kind} trusts the Secret's CA"
    for replica in operators:
        assert served_certificate(replica.webhook_port) == pki.serving.cert, replica.identity
        assert trusts(pki.bundle(), replica.webhook_port)
        ready = replica.readyz()
        assert ready["webhookCertificateLoaded"] is True
        assert ready["webhookCertificate"]["reason"] == "Valid"
        assert ready["webhookCertificate"]["mode"] == "operator"
        expiry = replica.metrics()
        serving = next(
            v
            for k, v in expiry.items()
            if k.startswith('statecar_webhook_certificate_expiry_seconds{certificate="serving"')
        )
        assert 89 * 86400 < serving <= 90 * 86400
    leaders = [r.readyz()["leader"] for r in operators]
    assert sorted(leaders) == [False, True], "one Lease holder, one follower"


def test_an_annotated_pod_is_injected_over_tls(
    cluster: LocalCluster, api: Api, operators: list[Operator]
) -> None:
    # The component goes through the validating webhook (over the same TLS) on its way in.
    cluster.apply(
        {
            "apiVersion": "statecar.io/v1alpha1",
            "kind": "StateStoreComponent",
            "metadata": {"name": "statestore", "namespace": APP},
            "spec": {"type": "state.in-memory"},
        }
    )
    started = time.monotonic()
    response = api.create_pod("first")
    TIMINGS["annotated pod created and injected"] = time.monotonic() - started
    assert injected(response), response.text
    plain = api.create_pod("plain", annotated=False)
    assert plain.status_code == 201
    assert not plain.json()["spec"].get("initContainers"), "pods that do not ask are untouched"


# --- 3. RBAC --------------------------------------------------------------------------------------

#: (verb, resource[/name], namespace or None, subresource or None), asked as the ServiceAccount.
MWC = "mutatingwebhookconfigurations.admissionregistration.k8s.io"
VWC = "validatingwebhookconfigurations.admissionregistration.k8s.io"
ALLOWED = [
    ("get", f"{MWC}/{MUTATING}", None, None),
    ("watch", f"{MWC}/{MUTATING}", None, None),
    ("patch", f"{MWC}/{MUTATING}", None, None),
    ("patch", f"{VWC}/{VALIDATING}", None, None),
    ("update", f"secrets/{SECRET}", NAMESPACE, None),
    ("get", f"secrets/{SECRET}", NAMESPACE, None),
    ("create", "secrets", NAMESPACE, None),
    ("update", "leases.coordination.k8s.io/statecar-operator", NAMESPACE, None),
    ("patch", "statestorecomponents.statecar.io/statestore", APP, "status"),
    ("create", "events", APP, None),
]
DENIED = [
    ("create", "pods", APP, None),
    ("get", "pods", APP, None),
    ("list", MWC, None, None),
    ("update", f"{MWC}/{MUTATING}", None, None),
    ("delete", f"{MWC}/{MUTATING}", None, None),
    ("patch", f"{MWC}/other-webhook", None, None),
    ("patch", f"{VWC}/{MUTATING}", None, None),
    ("create", MWC, None, None),
    # Secrets' create/update/delete are granted (per-app wiring Secrets have names not known in
    # advance) and narrowed by the chart's admission policy: POLICY_DENIED below. Never patch.
    ("patch", f"secrets/{SECRET}", NAMESPACE, None),
    ("update", "leases.coordination.k8s.io/another-lease", NAMESPACE, None),
    ("create", "leases.coordination.k8s.io", APP, None),
    ("create", "clusterroles.rbac.authorization.k8s.io", None, None),
    ("bind", "clusterroles.rbac.authorization.k8s.io", None, None),
    ("escalate", "roles.rbac.authorization.k8s.io", NAMESPACE, None),
    ("create", f"serviceaccounts/{SERVICE_ACCOUNT}", NAMESPACE, "token"),
    ("impersonate", "users", None, None),
    ("list", "namespaces", None, None),
    ("get", "nodes", None, None),
    ("update", "statestorecomponents.statecar.io/statestore", APP, None),
    ("patch", "statestorecomponents.statecar.io/statestore", APP, None),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", None, None),
]


def test_the_charts_rbac_is_the_documented_rbac_and_no_broader(
    cluster: LocalCluster, release: dict[str, Any], operators: list[Operator]
) -> None:
    documented = {
        m["kind"]: m
        for m in rbac.manifests(
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            webhook_secret=SECRET,
        )
    }
    for kind, plural, namespace in (
        ("ClusterRole", "clusterroles", None),
        ("Role", "roles", NAMESPACE),
    ):
        name = next(o for o in release["objects"] if o["kind"] == kind)["metadata"]["name"]
        args = ["get", plural, name, "-o", "json", *(["-n", namespace] if namespace else [])]
        live = json.loads(cluster.kubectl(*args).stdout)
        assert live["rules"] == documented[kind]["rules"], kind
    who = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
    started = time.monotonic()
    for question in ALLOWED + DENIED:
        verb, resource, namespace, subresource = question
        args = ["auth", "can-i", verb, resource, f"--as={who}"]
        args += ["-n", namespace] if namespace else []
        args += [f"--subresource={subresource}"] if subresource else []
        answer = cluster.kubectl(*args, check=False).stdout.strip()
        expected = "yes" if question in ALLOWED else "no"
        assert answer == expected, (
            f"can {SERVICE_ACCOUNT} {verb} {resource} {subresource or ''} in {namespace}?"
        )
    TIMINGS[f"{len(ALLOWED) + len(DENIED)} can-i checks"] = time.monotonic() - started

    # What RBAC grants on Secrets, the chart's ValidatingAdmissionPolicy narrows to wiring
    # Secrets and the certificate Secret: asked for real as the ServiceAccount (server-side dry
    # runs: admission runs, nothing is stored or deleted).
    policy = next(o for o in release["objects"] if o["kind"] == "ValidatingAdmissionPolicy")
    user_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "app-owned", "namespace": APP},
        "stringData": {"password": "p"},
    }
    cluster.apply(user_secret)
    current = json.loads(
        cluster.kubectl("get", "secret", "app-owned", "-n", APP, "-o", "json").stdout
    )
    current["data"]["password"] = "b3duZWQ="
    wiring = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "statecar.io/wiring",
        "metadata": {"name": "statecar-wiring-probe", "namespace": APP},
    }
    attempts: list[tuple[tuple[str, ...], str | None, bool]] = [
        (("create", "secret", "generic", "some-other-secret", "-n", NAMESPACE), None, False),
        (("delete", "secret", SECRET, "-n", NAMESPACE), None, False),
        (("delete", "secret", "app-owned", "-n", APP), None, False),
        (("replace", "-f", "-"), json.dumps(current), False),
        (("create", "-f", "-"), json.dumps(wiring), True),
    ]
    for attempt, stdin, allowed in attempts:
        result = cluster.kubectl(
            *attempt, f"--as={who}", "--dry-run=server", input=stdin, check=False
        )
        if allowed:
            assert result.returncode == 0, (attempt, result.stderr)
        else:
            assert result.returncode != 0, attempt
            assert policy["metadata"]["name"] in result.stderr, (attempt, result.stderr)


# --- 4. caBundle self-heal -------------------------------------------------------------------------


def chart_manifest(release: Mapping[str, Any], kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(o for o in release["objects"] if o["kind"] == kind))


@pytest.mark.parametrize("kind", list(CONFIGURATIONS))
@pytest.mark.parametrize("how", ["replaced-without-caBundle", "applied-with-a-wrong-caBundle"])
def test_a_reapplied_configuration_heals_within_seconds(
    cluster: LocalCluster,
    api: Api,
    release: dict[str, Any],
    operators: list[Operator],
    kind: str,
    how: str,
) -> None:
    wanted = secret_pki(api).bundle()
    manifest = chart_manifest(release, kind)
    if how == "replaced-without-caBundle":
        # A full replace of the chart's manifest (Argo CD's Replace=true, `helm upgrade --force`,
        # a delete and re-create): the caBundle the chart does not render is gone.
        command = ["replace", "-f", "-"]
    else:
        # Server-side apply of a manifest that pins some other CA, forced over our field manager.
        stranger = issuing.self_signed(["elsewhere"]).ca_pem
        for hook in manifest["webhooks"]:
            hook["clientConfig"]["caBundle"] = base64.b64encode(stranger).decode()
        command = [
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=gitops",
            "-f",
            "-",
        ]
    leader = next(r for r in operators if r.readyz()["leader"])
    key = f'statecar_webhook_ca_bundle_patches_total{{configuration="{CONFIGURATIONS[kind][1]}"}}'
    patches = leader.metrics()[key]
    cluster.kubectl(*command, input=yaml.safe_dump(manifest))
    started = time.monotonic()
    wait_for(
        f"the caBundle of {kind} to be repaired",
        lambda: (api.bundle(kind), leader.metrics()[key]),
        lambda seen: seen == (wanted, patches + 1),
    )
    # From the moment the re-apply returned (kubectl's own run time is not the operator's).
    TIMINGS[f"caBundle healed: {kind[:-20]}, {how}"] = time.monotonic() - started
    assert injected(api.create_pod(f"after-heal-{kind.lower()[:8]}-{how[:7]}")), (
        "pods injected again"
    )


# --- 5. CA rotation --------------------------------------------------------------------------------


def test_a_ca_rotation_trusts_both_cas_during_the_overlap_and_never_refuses_a_pod(
    cluster: LocalCluster, api: Api, operators: list[Operator]
) -> None:
    old = the_ca(secret_pki(api))
    leader = next(r for r in operators if r.readyz()["leader"])
    rotations_before = leader.metrics()["statecar_webhook_ca_rotations_total"]
    # Pods are created continuously while the CA is rotated: every one must be injected.
    results: list[tuple[str, bool, str]] = []
    stop = threading.Event()

    def create_pods() -> None:
        client = Api(cluster)  # its own connection: httpx clients are not shared across threads
        try:
            for n in range(1000):
                if stop.is_set():
                    return
                response = client.create_pod(f"during-rotation-{n}")
                results.append((f"during-rotation-{n}", injected(response), response.text[:300]))
                time.sleep(0.2)
        finally:
            client.client.close()

    creator = threading.Thread(target=create_pods, daemon=True)
    creator.start()
    try:
        started = time.monotonic()
        cluster.kubectl(
            "annotate", "secret", SECRET, "-n", NAMESPACE, f"{rotation.ROTATE_ANNOTATION}=e2e"
        )

        def bundle_cas() -> list[x509.Certificate]:
            return ca_bundle.bundle_certificates(api.bundle())

        both = wait_for("both CAs in the caBundle", bundle_cas, lambda cas: len(cas) == 2)
        TIMINGS["rotation step 1: old + new CA in caBundle"] = time.monotonic() - started
        new = next(c for c in both if c != old)
        assert old in both
        assert api.bundle("ValidatingWebhookConfiguration") == api.bundle()
        # Step 1 changes only the bundle: the replicas still serve the old CA's certificate.
        for replica in operators:
            assert issuing.issued_by(served_certificate(replica.webhook_port), old)
        assert injected(api.create_pod("while-trusting-both"))

        for replica in operators:
            wait_for(
                f"{replica.identity} to serve the new CA's certificate",
                functools.partial(served_certificate, replica.webhook_port),
                lambda cert: issuing.issued_by(cert, new),
                timeout=OVERLAP + REACT,
            )
        TIMINGS["rotation step 2: both replicas serve the new CA's certificate"] = (
            time.monotonic() - started
        )
        assert len(bundle_cas()) == 2, "the old CA is still trusted while the new one is served"
        assert injected(api.create_pod("while-serving-new"))

        wait_for(
            "the old CA to leave the caBundle",
            bundle_cas,
            lambda cas: cas == [new],
            timeout=OVERLAP + REACT,
        )
        TIMINGS["rotation step 3: the old CA dropped (rotation done)"] = time.monotonic() - started
        NOTES.append(f"{len(results)} pods created during the rotation, every one injected")
    finally:
        stop.set()
        creator.join(timeout=30)
    secret = api.secret()
    assert secret is not None
    assert "ca-previous.crt" not in secret["data"]
    assert rotation.ROTATE_ANNOTATION not in (secret["metadata"].get("annotations") or {})
    assert api.bundle("ValidatingWebhookConfiguration") == api.bundle()
    for replica in operators:
        assert trusts(new.public_bytes(serialization.Encoding.PEM), replica.webhook_port)
        assert not trusts(old.public_bytes(serialization.Encoding.PEM), replica.webhook_port)
    assert injected(api.create_pod("after-rotation"))
    assert len(results) >= 5, "pods were created throughout the rotation"
    refused = [r for r in results if not r[1]]
    assert not refused, refused
    assert leader.metrics()["statecar_webhook_ca_rotations_total"] == rotations_before + 1
    reasons = {
        e["reason"]
        for e in json.loads(
            cluster.kubectl(
                "get",
                "events",
                "-n",
                NAMESPACE,
                "--field-selector",
                f"involvedObject.name={SECRET}",
                "-o",
                "json",
            ).stdout
        )["items"]
    }
    assert {"CARotationStarted", "ServingCertificateSwitched", "PreviousCADropped"} <= reasons


# --- 6. helm upgrade to a changed CRD ------------------------------------------------------------------


def test_helm_upgrade_updates_the_crd_and_values_and_keeps_the_ca_bundle(
    cluster: LocalCluster,
    api: Api,
    helm: Helm,
    operators: list[Operator],
    tmp_path: Path,
) -> None:
    # The next chart version: an extra printer column and an extra optional field in the CRD.
    chart = tmp_path / "statecar"
    subprocess.run(["cp", "-r", str(CHART), str(chart)], check=True)
    crd_path = chart / "files" / "crds" / CRD_FILE
    crd = yaml.safe_load(crd_path.read_text())
    (version,) = crd["spec"]["versions"]
    version["additionalPrinterColumns"].insert(
        1, {"name": "Owner", "type": "string", "jsonPath": ".spec.owner"}
    )
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["owner"] = {
        "type": "string",
        "description": "Who to ask about this store (added in the next chart version).",
    }
    crd_path.write_text(yaml.safe_dump(crd, sort_keys=False))
    leader = next(r for r in operators if r.readyz()["leader"])
    patches_before = leader.metrics()
    bundle_before = api.bundle()

    started = time.monotonic()
    helm(
        "upgrade",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--reuse-values",
        "--set",
        "webhook.timeoutSeconds=7",
    )
    TIMINGS["helm upgrade (CRD + values)"] = time.monotonic() - started
    # Helm's three-way merge leaves alone what the chart does not render: the caBundle was not
    # reset, so the operator had nothing to repair.
    assert api.bundle() == bundle_before
    assert api.bundle("ValidatingWebhookConfiguration") == bundle_before
    live = api.configuration("MutatingWebhookConfiguration")
    assert live is not None
    assert live["webhooks"][0]["timeoutSeconds"] == 7
    time.sleep(1.5)  # a full sync interval: a reset would have been patched by now
    after = leader.metrics()
    for name in (MUTATING, VALIDATING):
        key = f'statecar_webhook_ca_bundle_patches_total{{configuration="{name}"}}'
        assert after[key] == patches_before[key], f"{name} needed no repair after the upgrade"

    installed = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    assert installed is not None
    columns = [c["name"] for c in installed["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns[:2] == ["Type", "Owner"]
    wait_for(
        "the new field to be served",
        lambda: (
            cluster.apply(
                {
                    "apiVersion": "statecar.io/v1alpha1",
                    "kind": "StateStoreComponent",
                    "metadata": {"name": "statestore", "namespace": APP},
                    "spec": {"type": "state.in-memory", "owner": "team-orders"},
                }
            )
            and api.get(
                f"/apis/statecar.io/v1alpha1/namespaces/{APP}/statestorecomponents/statestore"
            )
        ),
        lambda body: bool(body and body["spec"].get("owner") == "team-orders"),
    )
    table = cluster.kubectl("get", "ssc", "-n", APP).stdout
    assert "OWNER" in table.splitlines()[0]
    assert "team-orders" in table
    history = helm("history", RELEASE, "-n", NAMESPACE, "-o", "json").stdout
    assert [r["status"] for r in json.loads(history)] == ["superseded", "deployed"]
    assert injected(api.create_pod("after-upgrade"))


# --- 7. nothing forbidden, then uninstall ----------------------------------------------------------------


def test_the_operator_never_hit_its_rbac(operators: list[Operator]) -> None:
    for replica in operators:
        # kube.ForbiddenError and kopf's APIForbiddenError both say it (HTTP 403).
        forbidden = [line for line in replica.log().splitlines() if "forbidden" in line.lower()]
        assert not forbidden, f"{replica.identity} was refused by its RBAC:\n" + "\n".join(
            forbidden
        )
        assert replica.process is not None
        assert replica.process.poll() is None, f"{replica.identity} is still running"


def test_uninstall_leaves_nothing_that_blocks_pod_creation(
    cluster: LocalCluster, api: Api, helm: Helm, operators: list[Operator]
) -> None:
    for replica in operators:
        assert replica.stop() == 0, f"{replica.identity} exits cleanly on SIGTERM"
    # Installed but with no operator answering, failurePolicy Fail holds back annotated pods only.
    refused = api.create_pod("operator-down")
    assert refused.status_code >= 400
    assert "statecar" in refused.text
    assert api.create_pod("plain-while-down", annotated=False).status_code == 201

    started = time.monotonic()
    helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait")
    TIMINGS["helm uninstall"] = time.monotonic() - started
    for kind in CONFIGURATIONS:
        assert api.configuration(kind) is None, f"{kind} is gone"
    admitted = api.create_pod("after-uninstall")
    assert admitted.status_code == 201, admitted.text
    assert not injected(admitted), "admitted as it is: nothing is left to inject it"
    # What stays, as documented: the CRD (and its objects) and the operator's Secret.
    assert api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    assert api.get(f"/apis/statecar.io/v1alpha1/namespaces/{APP}/statestorecomponents/statestore")
    assert api.secret() is not None
