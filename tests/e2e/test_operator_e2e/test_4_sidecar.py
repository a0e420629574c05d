"""
The operator end to end, part 4: the sidecar, from the mutated pod's own spec.

Runs after parts 1-3 on the fixtures they share (`conftest.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client
from tests.e2e.kubelet import PodProcess, find_container
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    FailureContext,
    env_of,
    wait_for,
)
from tests.e2e.test_operator_e2e.helpers import (
    EMPTY,
    PASSWORD,
    REACT,
    SHOP,
    component_manifest,
    kubectl_apply,
    pod_manifest,
    running_pod_sidecar,
)
from tests.support.redis_server import RedisProcess

pytestmark = pytest.mark.e2e


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
    assert wiring.name == "statecar-wiring"  # the volume's folder, relocated
    # orders is scoped to checkout: it comes in the app's own file; the shared one is empty.
    assert sorted(p.name for p in wiring.iterdir()) == ["app.json", "shared.json"]
    assert '"orders"' in (wiring / "app.json").read_text()
    assert '"components":[]' in (wiring / "shared.json").read_text()


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

    with running_pod_sidecar(cluster, pod, diagnostics, "cart") as process:
        store = f"{process.url}/v1.0/state/orders"
        with httpx.Client(timeout=10, trust_env=False) as http:
            refused = http.post(store, json=[{"key": "basket", "value": [1, 2]}])
            assert refused.status_code == 401, refused.text
            headers = {"dapr-api-token": token}
            saved = http.post(store, json=[{"key": "basket", "value": [1, 2]}], headers=headers)
            assert saved.status_code == 204, saved.text
            assert http.get(f"{store}/basket", headers=headers).json() == [1, 2]


def test_a_pod_applied_before_its_component_serves_it_once_it_exists_without_restart(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], diagnostics: FailureContext
) -> None:
    """Apply order does not matter: a pod created while its namespace has no component gets its
    sidecar, which starts (ready, with no component: the Secret volume is optional) and, once the
    component is applied and wired, serves it in the same process."""
    annotations = {"statecar.io/enabled": "true", "statecar.io/app-id": "early"}
    created = kubectl_apply(cluster, pod_manifest("early", EMPTY, annotations))
    assert created.returncode == 0, created.stderr
    pod = api.pod(EMPTY, "early")
    assert pod is not None
    assert api.get(f"/api/v1/namespaces/{EMPTY}/secrets/statecar-wiring") is None

    try:
        # Started means ready with no component: the app may start.
        with running_pod_sidecar(cluster, pod, diagnostics, "early") as process:
            pid = process.pid
            store = f"{process.url}/v1.0/state/later"
            with httpx.Client(timeout=10, trust_env=False) as http:
                assert http.get(f"{process.url}/v1.0/healthz").status_code == 204
                assert http.get(f"{process.url}/v1.0/metadata").json()["components"] == []
                missing = http.post(store, json=[{"key": "k", "value": 1}])
                assert missing.status_code >= 400, missing.text
                assert missing.json()["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"

                cluster.apply(
                    component_manifest(
                        "later", EMPTY, {"type": "state.in-memory", "scopes": ["early"]}
                    )
                )
                wait_for(
                    "the sidecar to serve the component applied after it started",
                    lambda: http.post(store, json=[{"key": "k", "value": 1}]).status_code,
                    lambda status: status == 204,
                    timeout=REACT,
                )
                assert http.get(f"{store}/k").json() == 1
                assert process.running  # the same process: no restart
                assert process.pid == pid
    finally:
        cluster.kubectl("delete", "ssc", "later", "-n", EMPTY, "--ignore-not-found", check=False)
