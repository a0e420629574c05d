"""
What the operator e2e modules share besides fixtures: the namespaces and bounds, the
manifests they apply, and the waits on what the operator writes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis as redis_client
import yaml
from tests.e2e.kubelet import PodProcess
from tests.e2e.localcluster import REPO_ROOT, LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    FailureContext,
    condition,
    wait_for,
    wait_for_object,
)
from tests.support.redis_server import RedisProcess

CRD_FILE = REPO_ROOT / "crds" / "statestorecomponents.statecar.io.yaml"
CRD_NAME = "statestorecomponents.statecar.io"
#: A minimal stand-in for Dapr's Component CRD (the operator also watches components.dapr.io).
DAPR_CRD_FILE = Path(__file__).with_name("dapr-components-crd.yaml")
DAPR_CRD_NAME = "components.dapr.io"
EXAMPLES = REPO_ROOT / "crds" / "examples"

SYSTEM = "statecar-e2e-system"  # the operator's own namespace (its Lease)
SHOP = "e2e-shop"  # the `orders` component, injected pods, the running sidecar
EMPTY = "e2e-empty"  # no component at all
SCHEMA = "e2e-schema"  # resources the API server must refuse
SECRETS = "e2e-secrets"  # a secretKeyRef to a Secret that does not exist (yet)
LIFECYCLE = "e2e-lifecycle"  # password rotation, deletion of components
SCOPES = "e2e-scopes"  # credentials reach only the apps in scope
DAPR = "e2e-dapr"  # Dapr's own Components, wired
STALE = "e2e-stale"  # stale sidecars, reported and rolled out
NAMESPACES = (SYSTEM, SHOP, EMPTY, SCHEMA, SECRETS, LIFECYCLE, SCOPES, DAPR, STALE)

SERVICE_ACCOUNT = "statecar-operator"
PASSWORD = "s3cret-e2e"  # the throwaway Redis's password
WIRING = "statecar-wiring"
WIRING_FILE = "components.json"
WIRING_MOUNT = "/var/run/statecar/wiring"
WIRING_SELECTOR = "app.kubernetes.io/managed-by=statecar,app.kubernetes.io/component=wiring"

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

#: The package's operators: short Lease timings, Dapr's annotations honoured (part 5c), Dapr's
#: Components wired (part 5d), stale sidecars reported and annotated workloads rolled (part 5e).
OPERATOR_ENV = {
    **LEASE_TIMINGS,
    "STATECAR_OPERATOR_SIDECAR_DAPR_ANNOTATIONS": "true",
    "STATECAR_OPERATOR_DAPR_COMPONENTS": "true",
    "STATECAR_OPERATOR_STALE_SIDECARS": "true",
    "STATECAR_OPERATOR_AUTO_ROLLOUT": "annotated",
}


@dataclass(frozen=True)
class OperatorIdentity:
    kubeconfig: Path
    token: str
    username: str
    rbac_yaml: str


# --- manifests and small helpers ----------------------------------------------------------------


def entry(name: str, value: str) -> dict[str, Any]:
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


def wiring_document_of(secret: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Component name -> rendered component, from one wiring Secret."""
    document = json.loads(base64.b64decode(secret["data"][WIRING_FILE]))
    return {c["name"]: c for c in document["components"]}


def wiring_secrets(api: Api, namespace: str) -> dict[str, dict[str, Any]]:
    """Every wiring Secret of a namespace (the shared one and the per-app ones), by name."""
    listing = api.get(f"/api/v1/namespaces/{namespace}/secrets", labelSelector=WIRING_SELECTOR)
    return {s["metadata"]["name"]: s for s in (listing or {}).get("items") or []}


def wired(api: Api, namespace: str) -> dict[str, dict[str, Any]]:
    """Component name -> rendered component, from all of the namespace's wiring Secrets."""
    found: dict[str, dict[str, Any]] = {}
    for secret in wiring_secrets(api, namespace).values():
        document = json.loads(base64.b64decode(secret["data"][WIRING_FILE]))
        found.update({c["name"]: c for c in document["components"]})
    return found


def wait_condition(
    api: Api, namespace: str, name: str, kind: str, status: str, *, timeout: float = REACT
) -> dict[str, Any]:
    """Wait until condition `kind` of a component has `status`; return the component."""
    return wait_for_object(
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


@contextlib.contextmanager
def running_pod_sidecar(
    cluster: LocalCluster, pod: dict[str, Any], diagnostics: FailureContext, label: str
) -> Iterator[PodProcess]:
    """The injected `statecar` container of `pod`, run as the kubelet would and started; its log's
    tail joins a failure's diagnostics under `label` while it runs."""
    process = PodProcess(cluster, pod, "statecar")
    title = f"{label} sidecar log (tail)"
    diagnostics.add(title, lambda: "\n".join(process.log.splitlines()[-60:]))
    process.start()
    try:
        process.wait_started(timeout=60)
        yield process
    finally:
        process.stop()
        diagnostics.remove(title)


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
