"""
The operator end to end, part 5d: Dapr's own Components (issue 10, item 5).

The package's operator runs with `STATECAR_OPERATOR_DAPR_COMPONENTS=true` and RBAC printed with
`--dapr-components`; `conftest.py` installs a minimal components.dapr.io CRD. In namespace
`e2e-dapr`, a cluster's existing Dapr Components are applied as they are: a scoped Redis state
store, an unscoped in-memory one and a pub/sub. The state stores are wired like
StateStoreComponents and a sidecar run from its pod's spec serves them on the real Redis; the
pub/sub is Dapr's and left alone; what the operator finds is reported as Events on the Dapr
Components, whose status it never writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as redis_client
from tests.e2e.kubelet import PodProcess
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import Api, FailureContext, wait_for
from tests.e2e.test_operator_e2e.helpers import (
    DAPR,
    PASSWORD,
    REACT,
    WIRING,
    entry,
    kubectl_apply,
    pod_manifest,
    running_pod_sidecar,
    wait_event,
    wired,
    wiring_document_of,
    wiring_secrets,
)
from tests.support.redis_server import RedisProcess

from statecar_contract.wiring import app_secret_name

pytestmark = pytest.mark.e2e


def dapr_component(name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": DAPR},
        "spec": spec,
        **extra,
    }


@pytest.fixture(scope="module")
def dapr_components(
    cluster: LocalCluster, api: Api, webhooks: str, redis: RedisProcess
) -> dict[str, dict[str, Any]]:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "redis", "namespace": DAPR},
            "stringData": {"redis-password": PASSWORD},
        }
    )
    redis_store = {
        "type": "state.redis",
        "version": "v1",
        "metadata": [
            entry("redisHost", redis.address),
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "redis-password"}},
        ],
    }
    cluster.apply(dapr_component("statestore", redis_store, scopes=["daprapp"]))
    cluster.apply(dapr_component("memo", {"type": "state.in-memory", "version": "v1"}))
    pubsub = {"type": "pubsub.redis", "version": "v1", "metadata": [entry("redisHost", "x")]}
    cluster.apply(dapr_component("pubsub", pubsub))
    return wait_for(
        "Dapr's state Components in the wiring",
        lambda: wired(api, DAPR),
        lambda components: {"statestore", "memo"} <= set(components),
        timeout=REACT,
    )


@pytest.fixture(scope="module")
def daprapp(
    cluster: LocalCluster,
    api: Api,
    dapr_components: dict[str, dict[str, Any]],
    diagnostics: FailureContext,
) -> Iterator[PodProcess]:
    annotations = {"statecar.io/enabled": "true", "statecar.io/app-id": "daprapp"}
    result = kubectl_apply(cluster, pod_manifest("daprapp", DAPR, annotations))
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # both state stores are in scope
    pod = api.pod(DAPR, "daprapp")
    assert pod is not None
    with running_pod_sidecar(cluster, pod, diagnostics, "daprapp") as process:
        yield process


def test_daprs_state_components_are_wired_and_owned_and_the_rest_left_alone(
    api: Api, dapr_components: dict[str, dict[str, Any]]
) -> None:
    secrets = wiring_secrets(api, DAPR)
    assert set(wiring_document_of(secrets[WIRING])) == {"memo"}
    scoped = wiring_document_of(secrets[app_secret_name("daprapp")])
    assert set(scoped) == {"statestore"}
    assert scoped["statestore"]["metadata"]["redisPassword"] == PASSWORD
    assert scoped["statestore"]["scopes"] == ["daprapp"]
    assert "pubsub" not in wired(api, DAPR)
    statestore = api.get(f"/apis/dapr.io/v1alpha1/namespaces/{DAPR}/components/statestore")
    assert statestore is not None
    owners = secrets[app_secret_name("daprapp")]["metadata"]["ownerReferences"]
    assert [(o["apiVersion"], o["kind"], o["uid"]) for o in owners] == [
        ("dapr.io/v1alpha1", "Component", statestore["metadata"]["uid"])
    ]
    # Reported with Events on the Dapr Component; its status is Dapr's, never written.
    event = wait_event(api, DAPR, "statestore", "WiringUpdated")
    assert event["involvedObject"]["kind"] == "Component"
    assert "status" not in statestore


def test_a_sidecar_serves_daprs_components_unchanged(
    daprapp: PodProcess, redis: RedisProcess
) -> None:
    with httpx.Client(timeout=10, trust_env=False) as http:
        metadata = http.get(f"{daprapp.url}/v1.0/metadata").json()
        assert sorted(c["name"] for c in metadata["components"]) == ["memo", "statestore"]
        saved = http.post(
            f"{daprapp.url}/v1.0/state/statestore", json=[{"key": "order", "value": {"n": 1}}]
        )
        assert saved.status_code == 204, saved.text
    # Dapr's default key prefix (appid), on the real Redis.
    with redis_client.Redis(port=redis.port, password=PASSWORD) as direct:
        assert json.loads(direct.hget("daprapp||order", "data") or b"null") == {"n": 1}


def test_a_dapr_component_with_a_missing_secret_gets_an_event_and_leaving_unwires_it(
    cluster: LocalCluster, api: Api, daprapp: PodProcess
) -> None:
    broken = {
        "type": "state.redis",
        "version": "v1",
        "metadata": [
            entry("redisHost", "127.0.0.1:1"),
            {"name": "redisPassword", "secretKeyRef": {"name": "nowhere", "key": "password"}},
        ],
    }
    cluster.apply(dapr_component("broken", broken))
    event = wait_event(api, DAPR, "broken", "SecretNotFound")
    assert event["type"] == "Warning"
    assert "nowhere" in event["message"]
    cluster.kubectl("delete", "components.dapr.io", "broken", "statestore", "-n", DAPR)
    wait_for(
        "statestore to leave the wiring and the sidecar",
        lambda: sorted(
            c["name"]
            for c in httpx.get(f"{daprapp.url}/v1.0/metadata", timeout=10, trust_env=False).json()[
                "components"
            ]
        ),
        lambda names: names == ["memo"],
        timeout=REACT,
    )
    assert app_secret_name("daprapp") not in wiring_secrets(api, DAPR)
