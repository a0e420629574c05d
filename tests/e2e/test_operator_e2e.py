"""
The operator and the injector, proven against a real kube-apiserver (issue 3, "Proven against a
real API server", items 1-6).

Everything runs for real except the kubelet: etcd + kube-apiserver (the session's `cluster`),
`statecar operator` as a process authenticated with a ServiceAccount token that is bound to
nothing but what `statecar operator rbac` prints, the webhook configurations that `statecar
operator webhook-config` prints (the API server calls the operator over TLS, verifying it with
the `caBundle`), real `redis-server`s, and the sidecar started from the container spec that the
webhook injected into a stored Pod (`kubelet.PodProcess`, with the wiring Secret volume kept in
sync the way the kubelet does).

Beyond items 1-6: the sidecar's probes follow its store, an edit the sidecar cannot open keeps
the previous store serving, the API token reaches the sidecar by reference only, and a second
replica admits while following and takes over when the leader is killed (last: it kills it).

The tests of this module run in file order and share the module's fixtures (one operator, one
Redis, the `orders` component of namespace `e2e-shop`); each test names what it proves. A failed
test's report carries the tails of the operator's and the sidecar's logs.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client
import yaml
from tests.e2e.kubelet import PodProcess, find_container
from tests.e2e.localcluster import REPO_ROOT, LocalCluster, _make_pki
from tests.e2e.operator_fixtures import (
    Api,
    FailureContext,
    OperatorProcess,
    condition,
    env_of,
    names,
    run_statecar,
    subset_mismatches,
    wait_for,
)
from tests.support.redis_server import RedisProcess, running_redis
from tests.support.sidecar import free_port

pytestmark = pytest.mark.e2e

CRD_FILE = REPO_ROOT / "crds" / "statestorecomponents.statecar.io.yaml"
CRD_NAME = "statestorecomponents.statecar.io"
EXAMPLES = REPO_ROOT / "crds" / "examples"

SYSTEM = "statecar-e2e-system"  # the operator's own namespace (its Lease)
SHOP = "e2e-shop"  # the `orders` component, injected pods, the running sidecar
EMPTY = "e2e-empty"  # no component at all
SCHEMA = "e2e-schema"  # resources the API server must refuse
SECRETS = "e2e-secrets"  # a secretKeyRef to a Secret that does not exist (yet)
LIFECYCLE = "e2e-lifecycle"  # password rotation, deletion of components
NAMESPACES = (SYSTEM, SHOP, EMPTY, SCHEMA, SECRETS, LIFECYCLE)

SERVICE_ACCOUNT = "statecar-operator"
PASSWORD = "s3cret-e2e"  # the throwaway Redis's password
WIRING = "statecar-wiring"
WIRING_FILE = "components.json"
WIRING_MOUNT = "/var/run/statecar/wiring"

#: Bound on anything the operator does in reaction to a change. Typically 0.2-3 s (it re-measures
#: every second here); the margin is for a loaded two-core machine, not for slowness we accept.
REACT = 30.0
#: Bound on a backend outage reaching BackendReachable: the operator re-measures every second
#: with a one-second probe timeout (OperatorProcess), so ~2 s plus the status write; the rest is
#: margin for a loaded machine.
OUTAGE_NOTICED = 15.0
#: Shorter than the defaults (15/10/2) so a replica takes over from a killed leader in seconds.
LEASE_DURATION = 8
LEASE_TIMINGS = {
    "STATECAR_OPERATOR_LEASE_DURATION_SECONDS": str(LEASE_DURATION),
    "STATECAR_OPERATOR_RENEW_DEADLINE_SECONDS": "6",
    "STATECAR_OPERATOR_RETRY_PERIOD_SECONDS": "1",
}


# --- fixtures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorIdentity:
    kubeconfig: Path
    token: str
    username: str
    rbac_yaml: str


@pytest.fixture(scope="module")
def diagnostics(request: pytest.FixtureRequest) -> Iterator[FailureContext]:
    plugin = FailureContext(Path(__file__).resolve())
    request.config.pluginmanager.register(plugin, "statecar-operator-e2e-diagnostics")
    yield plugin
    request.config.pluginmanager.unregister(plugin)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> Iterator[Api]:
    client = Api(cluster)
    yield client
    client.close()


@pytest.fixture(scope="module")
def namespaces(cluster: LocalCluster) -> tuple[str, ...]:
    for namespace in NAMESPACES:
        cluster.create_namespace(namespace)
    return NAMESPACES


@pytest.fixture(scope="module")
def crd(cluster: LocalCluster, api: Api, namespaces: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The CRD, applied from crds/ and Established; deleted again (with its objects) at the end."""
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    installed = wait_for(
        "the CRD to be Established",
        lambda: api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"),
        lambda body: condition(body, "Established").get("status") == "True",
        timeout=REACT,
    )
    wait_for(
        "statecar.io/v1alpha1 to be served",
        lambda: api.get(f"/apis/statecar.io/v1alpha1/namespaces/{SCHEMA}/statestorecomponents"),
        lambda body: body is not None,
        timeout=REACT,
    )
    yield installed
    cluster.kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--timeout=60s", check=False)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    with running_redis(["--requirepass", PASSWORD]) as server:
        yield server


@pytest.fixture(scope="module")
def operator_identity(
    cluster: LocalCluster,
    crd: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorIdentity]:
    """A ServiceAccount bound to exactly what `statecar operator rbac` prints, and its token."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": SYSTEM},
        }
    )
    rbac = run_statecar(
        "operator", "rbac", "--namespace", SYSTEM, "--service-account", SERVICE_ACCOUNT
    )
    cluster.apply(rbac)
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", SYSTEM, "--duration=2h"
    ).stdout.strip()
    kubeconfig = cluster.write_kubeconfig(
        tmp_path_factory.mktemp("operator") / "kubeconfig", token, user=SERVICE_ACCOUNT
    )
    yield OperatorIdentity(
        kubeconfig, token, f"system:serviceaccount:{SYSTEM}:{SERVICE_ACCOUNT}", rbac
    )
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rbac, check=False)


@pytest.fixture(scope="module")
def webhook_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA, serving certificate, key) for 127.0.0.1: the files a Secret would mount."""
    return _make_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture(scope="module")
def operator(
    operator_identity: OperatorIdentity,
    webhook_pki: tuple[Path, Path, Path],
    diagnostics: FailureContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    ca, cert, key = webhook_pki
    process = OperatorProcess(
        kubeconfig=operator_identity.kubeconfig,
        namespace=SYSTEM,
        workdir=tmp_path_factory.mktemp("operator-log"),
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        extra_env=LEASE_TIMINGS,
    )
    diagnostics.add("operator log (tail)", process.log_tail)
    process.start()
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    yield process
    code = process.stop()  # None when a test killed it on purpose
    assert code in (0, None), f"the operator exited with {code} on SIGTERM:\n{process.log_tail()}"


@pytest.fixture(scope="module")
def webhooks(
    cluster: LocalCluster, operator: OperatorProcess, webhook_pki: tuple[Path, Path, Path]
) -> Iterator[str]:
    """The webhook configurations `statecar operator webhook-config` prints, applied."""
    configs = run_statecar(
        "operator",
        "webhook-config",
        "--url",
        operator.webhook_url,
        "--ca-file",
        str(webhook_pki[0]),
        "--exclude-namespace",
        SYSTEM,
    )
    cluster.apply(configs)
    # The API server loads webhook configurations through an informer: wait until both are
    # called (server-side dry runs: no object is stored, no Event posted).
    bad_component = component_manifest(
        "webhook-probe", SCHEMA, {"type": "state.in-memory", "metadata": [_entry("nope", "x")]}
    )
    wait_for(
        "the validating webhook to be in effect",
        lambda: (
            cluster.kubectl(
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                input=yaml.safe_dump(bad_component),
                check=False,
            ).stderr
        ),
        # "denied": the operator answered over TLS (a TLS failure is "failed calling webhook").
        lambda stderr: 'webhook "validate.statestorecomponents.statecar.io" denied' in stderr,
        timeout=REACT,
    )
    bad_pod = pod_manifest(
        "webhook-probe", SHOP, {"statecar.io/enabled": "true", "statecar.io/http-port": "x"}
    )
    wait_for(
        "the mutating webhook to be in effect",
        lambda: (
            cluster.kubectl(
                "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad_pod), check=False
            ).stderr
        ),
        lambda stderr: 'webhook "inject.statecar.io" denied' in stderr,
        timeout=REACT,
    )
    yield configs
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=configs, check=False)


@pytest.fixture(scope="module")
def orders(cluster: LocalCluster, api: Api, webhooks: str, redis: RedisProcess) -> dict[str, Any]:
    """crds/examples' Redis component and its Secret in e2e-shop, pointed at the real Redis."""
    secret = yaml.safe_load((EXAMPLES / "state-redis-auth-secret.yaml").read_text())
    secret["metadata"]["namespace"] = SHOP
    secret["stringData"]["password"] = PASSWORD
    cluster.apply(secret)
    cluster.apply(orders_manifest(redis.address))
    return wait_for(
        "orders to be Ready",
        lambda: api.component(SHOP, "orders"),
        lambda c: condition(c, "Ready").get("status") == "True",
        timeout=REACT,
    )


@pytest.fixture(scope="module")
def checkout_pod(cluster: LocalCluster, api: Api, orders: dict[str, Any]) -> dict[str, Any]:
    """An annotated Pod (with its own init container), created through the API server."""
    manifest = pod_manifest(
        "checkout",
        SHOP,
        {
            "statecar.io/enabled": "true",
            "statecar.io/app-id": "checkout",
            "statecar.io/sidecar-cpu-limit": "0.5",
        },
        init_container=True,
    )
    created = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert "Warning" not in created.stderr, created.stderr
    pod = api.pod(SHOP, "checkout")
    assert pod is not None
    return pod


@pytest.fixture(scope="module")
def sidecar(
    cluster: LocalCluster, checkout_pod: dict[str, Any], diagnostics: FailureContext
) -> Iterator[PodProcess]:
    """The injected `statecar` container of the stored checkout Pod, run as the kubelet would."""
    process = PodProcess(cluster, checkout_pod, "statecar")
    diagnostics.add("sidecar log (tail)", lambda: "\n".join(process.log.splitlines()[-60:]))
    process.start()
    try:
        process.wait_started(timeout=60)
        yield process
    finally:
        process.stop()
        diagnostics.remove("sidecar log (tail)")


# --- manifests and small helpers ----------------------------------------------------------------


def _entry(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def component_manifest(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def orders_manifest(redis_address: str) -> dict[str, Any]:
    """crds/examples/state-redis.yaml (first-write, strong), in e2e-shop, on `redis_address`."""
    component: dict[str, Any] = yaml.safe_load((EXAMPLES / "state-redis.yaml").read_text())
    component["metadata"]["namespace"] = SHOP
    for item in component["spec"]["metadata"]:
        if item["name"] == "redisHost":
            item["value"] = redis_address
    component["spec"]["scopes"] = ["checkout", "cart", "web"]
    return component


def pod_manifest(
    name: str,
    namespace: str,
    annotations: dict[str, str] | None = None,
    *,
    init_container: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "example.com/shop/app:1",
                "env": [{"name": "GREETING", "value": "hello"}],
            }
        ]
    }
    if init_container:
        spec["initContainers"] = [{"name": "migrate", "image": "example.com/shop/migrate:1"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def wiring_document(api: Api, namespace: str) -> dict[str, Any] | None:
    """The decoded components.json of a namespace's wiring Secret (None: no Secret)."""
    secret = api.secret(namespace, WIRING)
    if secret is None:
        return None
    document: dict[str, Any] = json.loads(base64.b64decode(secret["data"][WIRING_FILE]))
    return document


def wired(api: Api, namespace: str) -> dict[str, dict[str, Any]]:
    """Component name -> rendered component, from the namespace's wiring Secret."""
    document = wiring_document(api, namespace) or {"components": []}
    return {c["name"]: c for c in document["components"]}


def wait_condition(
    api: Api, namespace: str, name: str, kind: str, status: str, *, timeout: float = REACT
) -> dict[str, Any]:
    """Wait until condition `kind` of a component has `status`; return the component."""
    return wait_for(
        f"{kind}={status} on StateStoreComponent {namespace}/{name}",
        lambda: api.component(namespace, name),
        lambda c: condition(c, kind).get("status") == status,
        timeout=timeout,
    )


def wait_event(
    api: Api, namespace: str, name: str, reason: str, *, timeout: float = REACT
) -> dict[str, Any]:
    events = wait_for(
        f"an Event {reason} on {namespace}/{name}",
        lambda: api.events(namespace, name=name, reason=reason),
        timeout=timeout,
    )
    return events[-1]


def kubectl_apply(cluster: LocalCluster, manifest: dict[str, Any]) -> Any:
    return cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)


def serving_from(sidecar: PodProcess, server: RedisProcess, *, timeout: float = REACT) -> None:
    """Wait until the sidecar's new writes land in `server` (it reloaded onto that Redis)."""
    store = f"{sidecar.url}/v1.0/state/orders"
    with (
        httpx.Client(timeout=5, trust_env=False) as http,
        redis_client.Redis(port=server.port, password=PASSWORD) as direct,
    ):

        def probe_write() -> bool:
            key = f"probe-{uuid.uuid4().hex[:8]}"
            http.post(store, json=[{"key": key, "value": 1}]).raise_for_status()
            return bool(direct.exists(f"checkout||{key}"))

        wait_for(
            f"the sidecar to write to the Redis at {server.address}", probe_write, timeout=timeout
        )


def timing(label: str, seconds: float) -> None:
    print(f"[timing] {label}: {seconds:.2f}s")


# --- 1. the CRD, and what the API server refuses by itself -------------------------------------


def test_crd_installs_and_its_examples_apply_with_defaults(
    cluster: LocalCluster, crd: dict[str, Any]
) -> None:
    """The CRD from crds/ is Established with short name ssc; every example passes the schema."""
    assert crd["spec"]["names"]["shortNames"] == ["ssc"]
    assert crd["spec"]["scope"] == "Namespaced"
    resources = cluster.kubectl("api-resources", "--api-group=statecar.io").stdout
    assert "ssc" in resources, resources
    assert "StateStoreComponent" in resources, resources
    components = {}
    for example in sorted(EXAMPLES.glob("*.yaml")):
        dry = cluster.kubectl(
            "apply", "--dry-run=server", "-n", SCHEMA, "-o", "json", "-f", str(example)
        )
        stored = json.loads(dry.stdout)
        if stored["kind"] == "StateStoreComponent":
            components[stored["metadata"]["name"]] = stored["spec"]
    assert set(components) == {"orders", "catalog", "scratch", "sessions"}
    # Defaults are filled in by the API server (not by the operator), with Dapr's values.
    sessions = components["sessions"]
    assert sessions["version"] == "v1"
    assert sessions["consistency"] == "eventual"
    assert sessions["keyPrefix"] == "appid"
    assert components["catalog"]["concurrency"] == "last-write"
    assert components["orders"]["enforce"] is False


INVALID_COMPONENTS = {
    "value-and-secretKeyRef": (
        {
            "type": "state.redis",
            "metadata": [
                {"name": "redisHost", "value": "r:6379", "secretKeyRef": {"name": "s", "key": "k"}}
            ],
        },
        [
            "spec.metadata[0]",
            "spec.metadata[name=redisHost]",
            "exactly one of value and secretKeyRef",
        ],
    ),
    "unknown-type": (
        {"type": "state.mongodb"},
        ["spec.type", 'Unsupported value: "state.mongodb"', "state.redis"],
    ),
    "bad-concurrency": (
        {"type": "state.in-memory", "concurrency": "sometimes"},
        ["spec.concurrency", 'Unsupported value: "sometimes"', "first-write"],
    ),
    "redis-without-host": (
        {"type": "state.redis", "metadata": [_entry("redisPassword", "x")]},
        ["spec.metadata", "state.redis needs a redisHost entry"],
    ),
    "separator-in-key-prefix": (
        {"type": "state.in-memory", "keyPrefix": "a||b"},
        ["spec.keyPrefix", "must not contain '||'"],
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_COMPONENTS))
def test_api_server_rejects_invalid_components_naming_the_field(
    cluster: LocalCluster, api: Api, crd: dict[str, Any], case: str
) -> None:
    """Schema + CEL: `kubectl apply` fails with the API server's message naming the field."""
    spec, fragments = INVALID_COMPONENTS[case]
    result = kubectl_apply(cluster, component_manifest(case, SCHEMA, spec))
    assert result.returncode != 0, f"{case} was accepted:\n{result.stdout}"
    assert f'The StateStoreComponent "{case}" is invalid' in result.stderr, result.stderr
    assert "admission webhook" not in result.stderr, "the schema, not a webhook, must refuse it"
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"
    assert api.component(SCHEMA, case) is None


def test_validating_webhook_rejects_what_the_schema_cannot(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """Unknown settings of a backend and impossible scopes are refused by the operator's webhook,
    on create and on update (the stored component stays as it was)."""
    typo = orders_manifest(redis.address)
    typo["metadata"]["name"] = "typo"
    typo["spec"]["metadata"].append(_entry("redisHots", "x"))
    result = kubectl_apply(cluster, typo)
    assert result.returncode != 0
    assert (
        'admission webhook "validate.statestorecomponents.statecar.io" denied the request'
        in result.stderr
    ), result.stderr
    assert "spec.metadata[2].name: 'redisHots' is not a setting of state.redis" in result.stderr
    assert api.component(SHOP, "typo") is None

    scoped = component_manifest(
        "scoped", SHOP, {"type": "state.in-memory", "scopes": ["checkout", "not an app id!"]}
    )
    result = kubectl_apply(cluster, scoped)
    assert result.returncode != 0
    assert "spec.scopes[1]: 'not an app id!' can never be an app id" in result.stderr, result.stderr
    assert api.component(SHOP, "scoped") is None

    edited = orders_manifest(redis.address)
    edited["spec"]["metadata"].append(_entry("poolsize", "10"))  # the setting is poolSize
    result = kubectl_apply(cluster, edited)
    assert result.returncode != 0
    assert "'poolsize' is not a setting of state.redis" in result.stderr, result.stderr
    now = api.component(SHOP, "orders")
    assert now is not None
    assert now["metadata"]["generation"] == orders["metadata"]["generation"]
    assert now["spec"] == orders["spec"]


# --- 2. reconciling components ------------------------------------------------------------------


def test_component_on_real_redis_becomes_ready(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """Ready/BackendReachable measured against the real Redis, observedGeneration set, the wiring
    Secret rendered with the resolved password, and kubectl's printer columns tell it."""
    generation = orders["metadata"]["generation"]
    status = orders["status"]
    assert status["observedGeneration"] == generation
    for kind in ("Ready", "Valid", "SecretsResolved", "BackendReachable"):
        found = condition(orders, kind)
        assert found.get("status") == "True", found
        assert found["observedGeneration"] == generation
    reachable = condition(orders, "BackendReachable")
    assert reachable["reason"] == "Reachable"
    assert redis.address in reachable["message"]

    secret = api.secret(SHOP, WIRING)
    assert secret is not None
    assert secret["metadata"]["annotations"]["statecar.io/config-hash"] == status["configHash"]
    owners = {o["uid"] for o in secret["metadata"].get("ownerReferences") or []}
    assert orders["metadata"]["uid"] in owners
    rendered = wired(api, SHOP)["orders"]
    assert rendered["metadata"] == {"redisHost": redis.address, "redisPassword": PASSWORD}
    assert (rendered["concurrency"], rendered["consistency"]) == ("first-write", "strong")
    assert rendered["scopes"] == ["checkout", "cart", "web"]

    table = cluster.kubectl("get", "ssc", "-n", SHOP, "-o", "wide").stdout
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header == ["NAME", "TYPE", "CONCURRENCY", "CONSISTENCY", "READY", "REASON", "AGE"]
    assert row[:6] == ["orders", "state.redis", "first-write", "strong", "True", "Ready"]
    wait_event(api, SHOP, "orders", "WiringUpdated")


def test_stopped_redis_flips_backend_reachable_and_back(
    api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """Stopping the Redis turns BackendReachable (and Ready) False with a reason and a Warning
    Event within a bounded time; starting it again turns them True."""
    started = time.monotonic()
    redis.stop()
    try:
        down = wait_condition(
            api, SHOP, "orders", "BackendReachable", "False", timeout=OUTAGE_NOTICED
        )
        timing("BackendReachable False after stopping Redis", time.monotonic() - started)
        reachable = condition(down, "BackendReachable")
        assert reachable["reason"] == "ConnectionRefused", reachable
        assert redis.address in reachable["message"]
        assert condition(down, "Ready")["status"] == "False"
        event = wait_event(api, SHOP, "orders", "ConnectionRefused")
        assert event["type"] == "Warning"
        assert redis.address in event["message"]
    finally:
        redis.start()
    started = time.monotonic()
    up = wait_condition(api, SHOP, "orders", "BackendReachable", "True", timeout=OUTAGE_NOTICED)
    timing("BackendReachable True after restarting Redis", time.monotonic() - started)
    assert condition(up, "Ready")["status"] == "True"


def test_missing_secret_is_a_condition_and_an_event_not_a_crash(
    cluster: LocalCluster, api: Api, operator: OperatorProcess, webhooks: str, redis: RedisProcess
) -> None:
    """A secretKeyRef to a Secret that does not exist: SecretsResolved=False with the reason and
    a Warning Event, the operator keeps serving; creating the Secret makes the component Ready."""
    ghost = component_manifest(
        "ghost",
        SECRETS,
        {
            "type": "state.redis",
            "metadata": [
                _entry("redisHost", redis.address),
                {
                    "name": "redisPassword",
                    "secretKeyRef": {"name": "ghost-auth", "key": "password"},
                },
            ],
        },
    )
    cluster.apply(ghost)
    pending = wait_condition(api, SECRETS, "ghost", "SecretsResolved", "False")
    resolved = condition(pending, "SecretsResolved")
    assert resolved["reason"] == "SecretNotFound", resolved
    assert "ghost-auth" in resolved["message"]
    assert "spec.metadata[1]" in resolved["message"]
    assert condition(pending, "Ready")["status"] == "False"
    assert condition(pending, "BackendReachable")["status"] == "Unknown"
    event = wait_event(api, SECRETS, "ghost", "SecretNotFound")
    assert event["type"] == "Warning"
    assert "ghost-auth" in event["message"]
    assert operator.running
    assert operator.healthz() == 200
    assert operator.readyz()["ready"] is True
    # Nothing unresolved is rendered: the sidecars would get a component without its password.
    assert "ghost" not in wired(api, SECRETS)

    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "ghost-auth",
        "-n",
        SECRETS,
        f"--from-literal=password={PASSWORD}",
    )
    ready = wait_condition(api, SECRETS, "ghost", "Ready", "True")
    assert condition(ready, "SecretsResolved")["reason"] == "Resolved"
    assert wired(api, SECRETS)["ghost"]["metadata"]["redisPassword"] == PASSWORD


def test_rotated_password_reaches_the_wiring_and_deleted_components_leave_it(
    cluster: LocalCluster, api: Api, webhooks: str, redis: RedisProcess
) -> None:
    """Changing the referenced Secret re-renders the wiring (and the measurement uses the new
    password); deleting a component removes it from the wiring; deleting the last one deletes
    the wiring Secret."""
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "life-auth",
        "-n",
        LIFECYCLE,
        f"--from-literal=password={PASSWORD}",
    )
    cluster.apply(
        [
            component_manifest(
                "alpha",
                LIFECYCLE,
                {
                    "type": "state.redis",
                    "metadata": [
                        _entry("redisHost", redis.address),
                        {
                            "name": "redisPassword",
                            "secretKeyRef": {"name": "life-auth", "key": "password"},
                        },
                    ],
                },
            ),
            component_manifest("beta", LIFECYCLE, {"type": "state.in-memory"}),
        ]
    )
    wait_condition(api, LIFECYCLE, "alpha", "Ready", "True")
    wait_condition(api, LIFECYCLE, "beta", "Ready", "True")
    assert wired(api, LIFECYCLE)["alpha"]["metadata"]["redisPassword"] == PASSWORD

    rotated = cluster.kubectl(
        "create",
        "secret",
        "generic",
        "life-auth",
        "-n",
        LIFECYCLE,
        "--from-literal=password=rotated-password",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    started = time.monotonic()
    cluster.apply(rotated)
    wait_for(
        "the rotated password in the wiring Secret",
        lambda: wired(api, LIFECYCLE).get("alpha", {}).get("metadata", {}).get("redisPassword"),
        lambda password: password == "rotated-password",
        timeout=REACT,
    )
    timing("rotated password in the wiring", time.monotonic() - started)
    # This Redis still wants the old password: the operator measures with what it rendered.
    refused = wait_condition(api, LIFECYCLE, "alpha", "BackendReachable", "False")
    assert condition(refused, "BackendReachable")["reason"] == "AuthenticationFailed"

    before = api.secret(LIFECYCLE, WIRING)
    assert before is not None
    hash_before = before["metadata"]["annotations"]["statecar.io/config-hash"]
    cluster.kubectl("delete", "ssc", "alpha", "-n", LIFECYCLE)
    remaining = wait_for(
        "alpha to leave the wiring",
        lambda: wired(api, LIFECYCLE),
        lambda components: "alpha" not in components,
        timeout=REACT,
    )
    assert set(remaining) == {"beta"}
    secret = api.secret(LIFECYCLE, WIRING)
    assert secret is not None
    assert secret["metadata"]["annotations"]["statecar.io/config-hash"] != hash_before

    started = time.monotonic()
    cluster.kubectl("delete", "ssc", "beta", "-n", LIFECYCLE)
    wait_for(
        "the wiring Secret to be deleted with the last component",
        lambda: api.secret(LIFECYCLE, WIRING),
        lambda found: found is None,
        timeout=REACT,
    )
    timing("wiring Secret deleted after the last component", time.monotonic() - started)


# --- 3. the API server calls the injector over TLS ----------------------------------------------


def test_annotated_pod_is_stored_with_the_native_sidecar(
    api: Api, checkout_pod: dict[str, Any], orders: dict[str, Any]
) -> None:
    """The sidecar is FIRST in initContainers with restartPolicy Always, a startupProbe on its
    health port, its env and the read-only wiring volume; the app gets the port env; the pod is
    stamped with what was injected and the wiring's config hash."""
    spec = checkout_pod["spec"]
    assert names(spec["initContainers"]) == ["statecar", "migrate"]
    sidecar = spec["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["statecar", "sidecar"]
    env = env_of(sidecar)
    assert env["STATECAR_APP_ID"] == "checkout"
    assert env["STATECAR_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    assert env["STATECAR_WIRING_FILE"] == f"{WIRING_MOUNT}/{WIRING_FILE}"
    assert env["STATECAR_HTTP_PORT"] == "3500"
    metrics_port = int(env["STATECAR_METRICS_PORT"])
    startup = sidecar["startupProbe"]["httpGet"]
    assert (startup["path"], startup["port"]) == ("/v1.0/healthz", metrics_port)
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["resources"]["limits"]["cpu"] == "500m"  # statecar.io/sidecar-cpu-limit: 0.5
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts[WIRING_MOUNT]["name"] == "statecar-wiring"
    assert mounts[WIRING_MOUNT]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["statecar-wiring"]["secret"]["secretName"] == WIRING
    # The sidecar never holds the app's ServiceAccount token (it never calls the API).
    token_mount = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert not token_mount["name"].startswith("kube-api-access")

    for container in [spec["initContainers"][1], *spec["containers"]]:
        app_env = env_of(container)
        assert app_env["DAPR_HTTP_PORT"] == "3500", container["name"]
        assert app_env["STATECAR_HTTP_PORT"] == "3500", container["name"]
    assert env_of(spec["containers"][0])["GREETING"] == "hello"

    metadata = checkout_pod["metadata"]
    assert metadata["labels"]["statecar.io/injected"] == "true"
    stamp = json.loads(metadata["annotations"]["statecar.io/status"])
    assert stamp["appId"] == "checkout"
    assert stamp["image"] == sidecar["image"]
    assert stamp["configHash"] == orders["status"]["configHash"]


def test_pods_that_do_not_ask_are_untouched(cluster: LocalCluster, api: Api, orders: Any) -> None:
    """No statecar annotation (or enabled: "false"): stored exactly as the API server alone
    would store it, with no warning."""
    for name, extra in (
        ("plain", {"example.com/team": "shop"}),
        ("opted-out", {"statecar.io/enabled": "false"}),
    ):
        manifest = pod_manifest(name, SHOP, extra, init_container=True)
        created = kubectl_apply(cluster, manifest)
        assert created.returncode == 0, created.stderr
        assert "Warning" not in created.stderr, created.stderr
        pod = api.pod(SHOP, name)
        assert pod is not None
        assert names(pod["spec"]["initContainers"]) == ["migrate"]
        assert not any(v["name"].startswith("statecar") for v in pod["spec"]["volumes"])
        assert "statecar.io/injected" not in (pod["metadata"].get("labels") or {})
        assert "statecar.io/status" not in pod["metadata"]["annotations"]
        for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
            assert "DAPR_HTTP_PORT" not in env_of(container), name


def test_deployment_template_is_not_mutated_but_its_pods_would_be(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """The webhook only sees pods: a Deployment is stored as written. `statecar inject -f` shows
    what its pods get, and a pod created the way its ReplicaSet would create it gets exactly that
    (app id = the Deployment's name)."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": SHOP},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {
                    "labels": {"app": "web"},
                    "annotations": {"statecar.io/enabled": "true"},
                },
                "spec": {"containers": [{"name": "app", "image": "example.com/shop/web:1"}]},
            },
        },
    }
    cluster.apply(deployment)
    stored = api.get(f"/apis/apps/v1/namespaces/{SHOP}/deployments/web")
    assert stored is not None
    template = stored["spec"]["template"]
    assert "initContainers" not in template["spec"]
    assert "statecar.io/status" not in template["metadata"].get("annotations", {})

    offline = run_statecar(
        "inject",
        "-f",
        "-",
        input=yaml.safe_dump_all([orders_manifest(redis.address), deployment]),
    )
    documents = list(yaml.safe_load_all(offline))
    injected = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]
    would_get = injected["spec"]["initContainers"][0]
    assert would_get["name"] == "statecar"
    assert env_of(would_get)["STATECAR_APP_ID"] == "web"

    # What the ReplicaSet controller would create (there is none here): the template, with
    # the controller's owner reference, template hash label and a generated name.
    template_hash = "5d8f7c9b64"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"web-{template_hash}-",
            "namespace": SHOP,
            "labels": {**template["metadata"]["labels"], "pod-template-hash": template_hash},
            "annotations": dict(template["metadata"]["annotations"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"web-{template_hash}",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(template["spec"]),
    }
    created = json.loads(
        cluster.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(pod)).stdout
    )
    got = created["spec"]["initContainers"][0]
    assert got["name"] == "statecar"
    problems = subset_mismatches(would_get, got)
    assert not problems, "the webhook and `statecar inject` disagree:\n" + "\n".join(problems)
    app_env = env_of(created["spec"]["containers"][0])
    assert app_env == env_of(injected["spec"]["containers"][0])


def _resubmission(stored: dict[str, Any], name: str) -> dict[str, Any]:
    """The stored pod as a new object (what the API server assigned is dropped)."""
    metadata = stored["metadata"]
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": copy.deepcopy(stored["spec"]),
    }


def test_second_admission_changes_nothing(
    cluster: LocalCluster,
    checkout_pod: dict[str, Any],
    operator: OperatorProcess,
    webhook_pki: tuple[Path, Path, Path],
) -> None:
    """The stored, injected pod admitted again (server-side dry run through the webhook) comes
    back identical, and the webhook itself answers that review with no patch at all."""
    again = _resubmission(checkout_pod, "checkout-again")
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(again)
    )
    assert "Warning" not in result.stderr, result.stderr
    readmitted = json.loads(result.stdout)
    assert readmitted["spec"] == checkout_pod["spec"]
    assert readmitted["metadata"]["labels"] == again["metadata"]["labels"]
    assert readmitted["metadata"]["annotations"] == again["metadata"]["annotations"]

    # The same review, straight to the webhook over TLS (verified with the caBundle's CA).
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": SHOP,
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": checkout_pod,
            "dryRun": True,
        },
    }
    answer = httpx.post(
        f"{operator.webhook_url}/inject-pods",
        json=review,
        verify=ssl.create_default_context(cafile=str(webhook_pki[0])),
        timeout=10,
        trust_env=False,
    ).json()["response"]
    assert answer["allowed"] is True
    assert "patch" not in answer, base64.b64decode(answer.get("patch", "")).decode()


def test_bad_annotation_is_rejected_with_its_message_and_an_event(
    cluster: LocalCluster, api: Api, orders: dict[str, Any]
) -> None:
    """Invalid statecar.io/* values refuse the pod, naming each annotation, and leave an Event."""
    manifest = pod_manifest(
        "bad-annotations",
        SHOP,
        {
            "statecar.io/enabled": "true",
            "statecar.io/app-id": "checkout",
            "statecar.io/http-port": "x",
            "statecar.io/log-level": "loud",
        },
    )
    result = kubectl_apply(cluster, manifest)
    assert result.returncode != 0
    assert 'admission webhook "inject.statecar.io" denied the request' in result.stderr
    assert "statecar cannot inject this pod" in result.stderr
    assert "statecar.io/http-port: 'x' is not a port number" in result.stderr, result.stderr
    assert "statecar.io/log-level" in result.stderr
    assert "loud" in result.stderr
    assert api.pod(SHOP, "bad-annotations") is None
    event = wait_event(api, SHOP, "bad-annotations", "InjectionRejected")
    assert event["type"] == "Warning"
    assert "statecar.io/http-port" in event["message"]


def test_pod_without_components_in_scope_gets_a_warning_and_an_event(
    cluster: LocalCluster, api: Api, orders: dict[str, Any]
) -> None:
    """A pod that asks for statecar but cannot have it is admitted without a sidecar, with an
    admission warning (kubectl prints it) and an Event saying why."""
    for namespace, name, app_id, reason, says in (
        (
            EMPTY,
            "lonely",
            "lonely",
            "NoComponents",
            f"no valid StateStoreComponent in namespace {EMPTY!r}",
        ),
        (SHOP, "billing", "billing", "NoComponentsInScope", "is in scope for app id 'billing'"),
    ):
        annotations = {"statecar.io/enabled": "true", "statecar.io/app-id": app_id}
        result = kubectl_apply(cluster, pod_manifest(name, namespace, annotations))
        assert result.returncode == 0, result.stderr
        assert "Warning:" in result.stderr, result.stderr
        assert says in result.stderr, result.stderr
        pod = api.pod(namespace, name)
        assert pod is not None
        assert "initContainers" not in pod["spec"]
        event = wait_event(api, namespace, name, reason)
        assert event["type"] == "Warning"
        assert says in event["message"]


# --- 4. the sidecar, from the mutated pod's own spec --------------------------------------------


def test_sidecar_from_the_pod_spec_serves_state_with_the_component_defaults(
    sidecar: PodProcess, redis: RedisProcess
) -> None:
    """Started exactly as the pod says (command, env, mounted wiring), the sidecar passes its
    startupProbe and serves the Dapr state API on the real Redis, first-write by default."""
    store = f"{sidecar.url}/v1.0/state/orders"
    with httpx.Client(timeout=10, trust_env=False) as http:
        metadata = http.get(f"{sidecar.url}/v1.0/metadata").json()
        assert metadata["id"] == "checkout"
        assert [(c["name"], c["type"]) for c in metadata["components"]] == [
            ("orders", "state.redis")
        ]

        first = http.post(store, json=[{"key": "greeting", "value": {"hello": "world"}}])
        assert first.status_code == 204, first.text
        read = http.get(f"{store}/greeting")
        assert read.status_code == 200, read.text
        assert read.json() == {"hello": "world"}
        etag = read.headers["ETag"]

        # The component's default is first-write: an overwrite without the ETag is a conflict ...
        overwrite = http.post(store, json=[{"key": "greeting", "value": {"hello": "again"}}])
        assert overwrite.status_code == 409, overwrite.text
        # ... with the current ETag it succeeds ...
        with_etag = http.post(
            store, json=[{"key": "greeting", "value": {"hello": "etag"}, "etag": etag}]
        )
        assert with_etag.status_code == 204, with_etag.text
        # ... and it is a default: a request naming last-write wins (enforce is false).
        last_write = http.post(
            store,
            json=[
                {
                    "key": "greeting",
                    "value": {"hello": "last"},
                    "options": {"concurrency": "last-write"},
                }
            ],
        )
        assert last_write.status_code == 204, last_write.text
        assert http.get(f"{store}/greeting").json() == {"hello": "last"}

    # It is the real Redis, with the app id as key prefix (keyPrefix: appid).
    with redis_client.Redis(port=redis.port, password=PASSWORD) as direct:
        assert json.loads(direct.hget("checkout||greeting", "data") or b"null") == {"hello": "last"}


def test_sidecar_probes_follow_its_store_and_it_recovers(
    sidecar: PodProcess, redis: RedisProcess
) -> None:
    """The startup/readiness probe of the injected container fails while its Redis is down and
    passes again when it is back (liveness never depends on it); the state API then works again
    without a restart."""
    startup = sidecar.probe("startupProbe")
    assert sidecar.probe("readinessProbe") == startup
    liveness = sidecar.probe("livenessProbe")
    pid = sidecar.pid

    def status(url: str) -> int:
        return httpx.get(url, timeout=5, trust_env=False).status_code

    assert status(startup) == 204
    redis.stop()
    try:
        wait_for(
            "the probe to fail with Redis down",
            lambda: status(startup),
            lambda s: s >= 500,
            timeout=15,
        )
        assert status(liveness) == 204
    finally:
        redis.start()
    wait_for(
        "the probe to pass with Redis back", lambda: status(startup), lambda s: s == 204, timeout=15
    )
    # Once the probe passes, the app's requests succeed at once (no stale connection is used).
    store = f"{sidecar.url}/v1.0/state/orders"
    for n in range(5):
        saved = httpx.post(
            store, json=[{"key": f"after-outage-{n}", "value": n}], timeout=5, trust_env=False
        )
        assert saved.status_code == 204, saved.text
    assert sidecar.pid == pid


def test_kubelet_stand_in_runs_the_container_from_its_spec(sidecar: PodProcess) -> None:
    """Guard for the harness itself: what runs is the pod's container, not a hand-made command."""
    container = find_container(sidecar.pod, "statecar")
    assert sidecar.container == container
    assert sidecar.command()[3:] == container["command"][1:]
    assert sidecar.environment()["STATECAR_APP_ID"] == "checkout"
    assert sidecar.environment()["STATECAR_NAMESPACE"] == SHOP
    wiring = Path(sidecar.environment()["STATECAR_WIRING_FILE"])
    assert wiring.name == WIRING_FILE
    assert wiring.exists()


def test_api_token_reaches_the_sidecar_from_the_pods_secret_never_as_a_literal(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], diagnostics: FailureContext
) -> None:
    """statecar.io/api-token-secret: the sidecar and the app get a secretKeyRef (the token never
    appears in the pod), and the sidecar started from that spec refuses requests without it."""
    token = "t0ken-e2e"  # a throwaway API token
    cluster.kubectl(
        "create", "secret", "generic", "cart-token", "-n", SHOP, f"--from-literal=token={token}"
    )
    annotations = {
        "statecar.io/enabled": "true",
        "statecar.io/app-id": "cart",
        "statecar.io/api-token-secret": "cart-token",
    }
    created = kubectl_apply(cluster, pod_manifest("cart", SHOP, annotations))
    assert created.returncode == 0, created.stderr
    pod = api.pod(SHOP, "cart")
    assert pod is not None
    reference = {"secretKeyRef": {"name": "cart-token", "key": "token"}}
    assert env_of(find_container(pod, "statecar"))["STATECAR_API_TOKEN"] == reference
    assert env_of(find_container(pod, "app"))["DAPR_API_TOKEN"] == reference
    assert token not in json.dumps(pod)

    process = PodProcess(cluster, pod, "statecar")
    diagnostics.add("cart sidecar log (tail)", lambda: "\n".join(process.log.splitlines()[-60:]))
    process.start()
    try:
        process.wait_started(timeout=60)
        store = f"{process.url}/v1.0/state/orders"
        with httpx.Client(timeout=10, trust_env=False) as http:
            refused = http.post(store, json=[{"key": "basket", "value": [1, 2]}])
            assert refused.status_code == 401, refused.text
            headers = {"dapr-api-token": token}
            saved = http.post(store, json=[{"key": "basket", "value": [1, 2]}], headers=headers)
            assert saved.status_code == 204, saved.text
            assert http.get(f"{store}/basket", headers=headers).json() == [1, 2]
    finally:
        process.stop()
        diagnostics.remove("cart sidecar log (tail)")


# --- 5. a component edit reaches the running sidecar ----------------------------------------------


class Traffic(threading.Thread):
    """An app's requests, back to back: save a new key, read it back."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.requests = 0
        self.misses = 0  # a read that went to the new Redis right after a save to the old one
        self.failures: list[str] = []
        self.saved: list[str] = []

    def run(self) -> None:
        store = f"{self.url}/v1.0/state/orders"
        with httpx.Client(timeout=5, trust_env=False) as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                key = f"switch-{n}"
                try:
                    saved = http.post(store, json=[{"key": key, "value": {"n": n}}])
                    self.requests += 1
                    if saved.status_code != 204:
                        self.failures.append(f"POST {key}: {saved.status_code} {saved.text[:300]}")
                        continue
                    self.saved.append(key)
                    read = http.get(f"{store}/{key}")
                    self.requests += 1
                    if read.status_code == 204:
                        self.misses += 1
                    elif read.status_code != 200 or read.json() != {"n": n}:
                        self.failures.append(f"GET {key}: {read.status_code} {read.text[:300]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{key}: {exc!r}")


def test_component_edit_reaches_the_running_sidecar_without_a_failed_request(
    cluster: LocalCluster, api: Api, sidecar: PodProcess, redis: RedisProcess
) -> None:
    """Pointing the component at a second Redis re-renders the wiring, the kubelet refreshes the
    mounted file, and the sidecar switches make-before-break: same process, zero failed requests
    while an app's loop runs through the switch, new writes land in the new Redis."""
    pid = sidecar.pid
    with running_redis(["--requirepass", PASSWORD]) as second:
        traffic = Traffic(sidecar.url)
        traffic.start()
        try:
            time.sleep(0.5)  # some requests on the old Redis first
            before = traffic.requests
            started = time.monotonic()
            cluster.apply(orders_manifest(second.address))
            with redis_client.Redis(port=second.port, password=PASSWORD) as new:
                wait_for(
                    "the sidecar's writes to land in the second Redis",
                    lambda: new.keys("checkout||switch-*"),
                    timeout=REACT,
                    interval=0.1,
                )
            timing("component edit to first write in the new Redis", time.monotonic() - started)
            time.sleep(1.0)  # and some requests after the switch
        finally:
            traffic.stopping.set()
            traffic.join(timeout=15)
        assert not traffic.is_alive(), "the request loop did not stop within 15s"
        assert traffic.requests > before > 0, (before, traffic.requests)
        assert traffic.failures == [], (
            f"{len(traffic.failures)} of {traffic.requests} requests failed during the switch:\n"
            + "\n".join(traffic.failures[:20])
        )
        print(f"[traffic] {traffic.requests} requests, {traffic.misses} reads across the switch")

        assert sidecar.running, "the sidecar stopped"
        assert sidecar.pid == pid, "the sidecar was restarted"
        assert "components reloaded" in sidecar.log
        last = traffic.saved[-1]
        with (
            redis_client.Redis(port=second.port, password=PASSWORD) as new,
            redis_client.Redis(port=redis.port, password=PASSWORD) as old,
        ):
            assert new.exists(f"checkout||{last}")
            assert not old.exists(f"checkout||{last}")
            saved = httpx.post(
                f"{sidecar.url}/v1.0/state/orders",
                json=[{"key": "after-switch", "value": 1}],
                timeout=10,
                trust_env=False,
            )
            assert saved.status_code == 204, saved.text
            assert new.exists("checkout||after-switch")
            assert not old.exists("checkout||after-switch")

        edited = wait_for(
            "orders' status to describe the new Redis",
            lambda: api.component(SHOP, "orders"),
            lambda c: second.address in condition(c, "BackendReachable").get("message", ""),
            timeout=REACT,
        )
        assert edited["status"]["observedGeneration"] == edited["metadata"]["generation"] > 1
        assert condition(edited, "Ready")["status"] == "True"
        # Back to the first Redis, and wait until the sidecar uses it, before this one stops.
        cluster.apply(orders_manifest(redis.address))
        serving_from(sidecar, redis)


def test_broken_component_edit_keeps_the_old_store_serving(
    cluster: LocalCluster, api: Api, sidecar: PodProcess, redis: RedisProcess
) -> None:
    """Make-before-break's other half: an edit the sidecar cannot open (nothing listens there)
    is reported (metadata, health) while the previous store keeps serving every request; fixing
    the component clears the report."""
    serving_from(sidecar, redis)  # the starting point: the sidecar on the first Redis
    nowhere = f"127.0.0.1:{free_port()}"
    store = f"{sidecar.url}/v1.0/state/orders"
    cluster.apply(orders_manifest(nowhere))
    with httpx.Client(timeout=5, trust_env=False) as http:
        reported = wait_for(
            "the sidecar to report that it cannot open the edited component",
            lambda: http.get(f"{sidecar.url}/v1.0/metadata").json()["extended"],
            lambda extended: "statecarLastReloadError" in extended,
            timeout=REACT,
        )
        assert "orders" in reported["statecarLastReloadError"]
        assert http.get(sidecar.probe()).status_code >= 500  # not ready: misconfigured
        for n in range(10):  # ... but the app is served by the previous store meanwhile
            saved = http.post(store, json=[{"key": f"kept-{n}", "value": n}])
            assert saved.status_code == 204, saved.text
        with redis_client.Redis(port=redis.port, password=PASSWORD) as old:
            assert old.exists("checkout||kept-9")
        down = wait_condition(api, SHOP, "orders", "BackendReachable", "False")
        assert nowhere in condition(down, "BackendReachable")["message"]

        cluster.apply(orders_manifest(redis.address))
        wait_for(
            "the report to clear once the component is fixed",
            lambda: http.get(f"{sidecar.url}/v1.0/metadata").json()["extended"],
            lambda extended: "statecarLastReloadError" not in extended,
            timeout=REACT,
        )
        wait_for(
            "the probe to pass again",
            lambda: http.get(sidecar.probe()).status_code,
            lambda status: status == 204,
            timeout=REACT,
        )


# --- 6. least privilege ------------------------------------------------------------------------


#: What the operator's token may do (from `statecar operator rbac`), as access-review attributes.
GRANTED = [
    ("watch", "statestorecomponents", {"group": "statecar.io"}),
    (
        "patch",
        "statestorecomponents",
        {"group": "statecar.io", "subresource": "status", "namespace": SHOP},
    ),
    ("get", "secrets", {"namespace": SHOP, "name": "redis-auth"}),
    ("create", "secrets", {"namespace": SHOP}),
    ("update", "secrets", {"namespace": SHOP, "name": WIRING}),
    ("delete", "secrets", {"namespace": SHOP, "name": WIRING}),
    ("create", "events", {"namespace": SHOP}),
    (
        "update",
        "leases",
        {"group": "coordination.k8s.io", "namespace": SYSTEM, "name": "statecar-operator"},
    ),
]
#: ... and a selection of what it must not: the rules grant nothing of it.
DENIED = [
    ("create", "pods", {"namespace": SHOP}),
    ("get", "pods", {"namespace": SHOP}),
    ("list", "namespaces", {}),
    ("update", "secrets", {"namespace": SHOP, "name": "redis-auth"}),
    ("delete", "secrets", {"namespace": SHOP, "name": "redis-auth"}),
    ("patch", "statestorecomponents", {"group": "statecar.io", "namespace": SHOP}),
    ("delete", "statestorecomponents", {"group": "statecar.io", "namespace": SHOP}),
    ("create", "mutatingwebhookconfigurations", {"group": "admissionregistration.k8s.io"}),
    ("update", "leases", {"group": "coordination.k8s.io", "namespace": SYSTEM, "name": "other"}),
    ("get", "leases", {"group": "coordination.k8s.io", "namespace": SHOP}),
    ("create", "customresourcedefinitions", {"group": "apiextensions.k8s.io"}),
    ("create", "clusterrolebindings", {"group": "rbac.authorization.k8s.io"}),
]


def test_operator_ran_on_a_least_privilege_token(
    cluster: LocalCluster,
    api: Api,
    operator: OperatorProcess,
    operator_identity: OperatorIdentity,
) -> None:
    """Everything above was done by an operator whose token is bound only to the documented
    rules: it met no refusal, and the token is refused what the rules leave out."""
    token = Api(cluster, operator_identity.token)
    try:
        review = token.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review["status"]["userInfo"]["username"] == operator_identity.username

        # Bound to the printed rules and nothing else.
        printed = [d for d in yaml.safe_load_all(operator_identity.rbac_yaml) if d]
        rbac_api = "/apis/rbac.authorization.k8s.io/v1"
        bindings = [
            (kind, item)
            for kind, plural in (
                ("ClusterRoleBinding", "clusterrolebindings"),
                ("RoleBinding", "rolebindings"),
            )
            for item in (api.get(f"{rbac_api}/{plural}") or {}).get("items") or []
        ]
        ours = sorted(
            (kind, b["metadata"]["name"])
            for kind, b in bindings
            if any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == SERVICE_ACCOUNT
                and s.get("namespace") == SYSTEM
                for s in b.get("subjects") or []
            )
        )
        assert ours == sorted(
            (d["kind"], d["metadata"]["name"]) for d in printed if d["kind"].endswith("Binding")
        )

        for verb, resource, attributes in GRANTED:
            assert token.allowed(verb, resource, **attributes), (verb, resource, attributes)
        for verb, resource, attributes in DENIED:
            assert not token.allowed(verb, resource, **attributes), (verb, resource, attributes)
    finally:
        token.close()

    # Refused for real, not only on paper.
    kubeconfig = operator_identity.kubeconfig
    for args in (
        ("delete", "secret", "redis-auth", "-n", SHOP),
        ("run", "intruder", "--image=example.com/x:1", "-n", SHOP),
        ("get", "pods", "-n", SHOP),
    ):
        refused = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False)
        assert refused.returncode != 0, (args, refused)
        assert "forbidden" in refused.stderr.lower(), (args, refused)

    # The operator did all of the above without once being refused, and is still healthy.
    refusals = [
        line
        for line in operator.log().splitlines()
        # kube.KubeError and kopf both say "Forbidden" for a 403 (a bare "403" also matches
        # timestamps and byte counts in the access log).
        if "forbidden" in line.lower()
    ]
    assert refusals == [], "the documented RBAC was not enough:\n" + "\n".join(refusals[:20])
    assert operator.running
    assert operator.readyz()["ready"] is True
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/statecar-operator")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == operator.identity


# --- HA: every replica admits, one reconciles, a follower takes over (runs last: kills the leader)


def _pod_review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": pod,
            "dryRun": True,
        },
    }


def test_second_replica_admits_and_takes_over_when_the_leader_dies(
    cluster: LocalCluster,
    api: Api,
    operator: OperatorProcess,
    operator_identity: OperatorIdentity,
    orders: dict[str, Any],
    webhook_pki: tuple[Path, Path, Path],
    diagnostics: FailureContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A second replica (same token, same Lease) serves admission while following and does no
    reconcile work; when the leader is SIGKILLed it takes the Lease within the lease duration and
    reconciles; on SIGTERM it exits 0 and hands the Lease back."""
    ca, cert, key = webhook_pki
    follower = OperatorProcess(
        kubeconfig=operator_identity.kubeconfig,
        namespace=SYSTEM,
        workdir=tmp_path_factory.mktemp("replica-log"),
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        identity="statecar-operator-e2e-1",
        extra_env=LEASE_TIMINGS,
    )
    diagnostics.add("second replica log (tail)", follower.log_tail)
    follower.start()
    try:
        following = wait_for(
            "the second replica to be ready as a follower",
            follower.readyz,
            lambda body: body.get("ready") is True,
            timeout=60,
        )
        assert following["leader"] is False
        assert following["leaseHolder"] == operator.identity
        assert following["reconcilePasses"] == 0  # a follower writes nothing

        # Admission is served by every replica, from its own indexes.
        pod = pod_manifest(
            "via-follower", SHOP, {"statecar.io/enabled": "true", "statecar.io/app-id": "cart"}
        )
        answer = httpx.post(
            f"{follower.webhook_url}/inject-pods",
            json=_pod_review(pod),
            verify=ssl.create_default_context(cafile=str(ca)),
            timeout=10,
            trust_env=False,
        ).json()["response"]
        assert answer["allowed"] is True
        patch = json.loads(base64.b64decode(answer["patch"]))
        added = next(op for op in patch if op["path"] == "/spec/initContainers")
        assert added["value"][0]["name"] == "statecar"

        # The leader dies without handing over: the follower takes the Lease once it expires.
        operator.kill()
        started = time.monotonic()
        wait_for(
            "the second replica to hold the Lease",
            follower.readyz,
            lambda body: body.get("leader") is True,
            timeout=LEASE_DURATION + REACT,
        )
        timing("takeover after SIGKILL of the leader", time.monotonic() - started)
        cluster.apply(component_manifest("failover", LIFECYCLE, {"type": "state.in-memory"}))
        wait_condition(api, LIFECYCLE, "failover", "Ready", "True")
        assert "failover" in wired(api, LIFECYCLE)
        assert follower.readyz()["reconcilePasses"] > 0
    finally:
        code = follower.stop()
        diagnostics.remove("second replica log (tail)")
    assert code == 0, f"the second replica exited with {code} on SIGTERM"
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/statecar-operator")
    assert lease is not None
    assert not lease["spec"].get("holderIdentity"), lease["spec"]  # handed back on the way out
    refusals = [line for line in follower.log().splitlines() if "forbidden" in line.lower()]
    assert refusals == [], "\n".join(refusals[:20])
