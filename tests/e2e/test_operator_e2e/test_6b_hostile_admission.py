"""
The operator end to end, part 6b: hostile pods sent to the real API server are refused by the
injection webhook over TLS, each with its reason (the annotation or field, and the fix).

Part of the hostile-input tier (issue 8, item 7); the offline and pure cases are in
tests/hostile/test_injector.py. It runs here, before part 7 (high availability), because it needs
this package's operator, webhook configurations and `orders` component (package fixtures).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import Api
from tests.e2e.test_operator_e2e.helpers import SHOP, pod_manifest, wait_event

pytestmark = pytest.mark.e2e

DENIED = (
    'admission webhook "inject.statecar.io" denied the request: statecar cannot inject this pod'
)


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[httpx.Client]:
    """Raw requests, so a body reaches the API server exactly as written (a null included)."""
    with httpx.Client(
        base_url=cluster.url,
        verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
        headers={"Authorization": f"Bearer {cluster.token}"},
        timeout=30,
        trust_env=False,
    ) as raw:
        yield raw


def create(client: httpx.Client, manifest: dict[str, Any]) -> httpx.Response:
    return client.post(f"/api/v1/namespaces/{SHOP}/pods", json=manifest)


def refused(client: httpx.Client, api: Api, manifest: dict[str, Any]) -> str:
    """The API server's message for a pod the webhook denied; the pod is not stored."""
    response = create(client, manifest)
    assert response.status_code == 400, response.text
    message: str = response.json()["message"]
    assert message.startswith(DENIED), message
    assert api.pod(SHOP, manifest["metadata"]["name"]) is None
    return message


def annotated(name: str, **annotations: Any) -> dict[str, Any]:
    return pod_manifest(
        name, SHOP, {"statecar.io/enabled": "true", "statecar.io/app-id": "checkout", **annotations}
    )


@pytest.mark.parametrize(
    ("variable", "reason"),
    [
        ("STATECAR_LISTEN_ADDRESS=0.0.0.0", "off the pod's loopback"),
        ("DAPR_APP_ID=other", "use statecar.io/app-id"),
        ("APP_ID=other", "use statecar.io/app-id"),
        ("STATECAR_SECRETS_FILE=/tmp/s.yaml", "reference them with secretKeyRef"),
        ("STATECAR_COMPONENTS_PATH=/tmp", "declare them as StateStoreComponents"),
        ("SSL_CERT_FILE=/tmp/ca.pem", "not one a pod may set"),
    ],
)
def test_env_outside_the_allow_list_is_refused(
    client: httpx.Client, api: Api, orders: dict[str, Any], variable: str, reason: str
) -> None:
    name = variable.split("=")[0]
    message = refused(
        client,
        api,
        annotated(f"env-{name.lower().replace('_', '-')}", **{"statecar.io/env": variable}),
    )
    assert f"statecar.io/env: {name}" in message or f"statecar.io/env: '{name}'" in message
    assert reason in message, message


def test_a_user_init_container_named_statecar_is_refused(
    client: httpx.Client, api: Api, orders: dict[str, Any]
) -> None:
    manifest = annotated("init-statecar")
    manifest["spec"]["initContainers"] = [
        {"name": "statecar", "image": "example.com/seed:1", "command": ["seed"]}
    ]
    message = refused(client, api, manifest)
    assert "spec.initContainers[0]: the name 'statecar' is reserved" in message, message
    assert "rename it" in message


@pytest.mark.parametrize(
    ("annotation", "value", "reason"),
    [
        ("statecar.io/sidecar-cpu-limit", "9" * 400, "400 characters is not a Kubernetes quantity"),
        ("statecar.io/sidecar-memory-limit", "1e400", "'1e400' is out of range"),
        ("statecar.io/sidecar-cpu-limit", "65", "is above 64 cores"),
        ("statecar.io/http-port", "\u0663\u0665\u0660\u0660", "write it in digits 0-9"),
        ("statecar.io/metrics-port", "80", "ports below 1024 are privileged"),
        ("statecar.io/app-id", None, "statecar.io/app-id is empty"),
    ],
    ids=["cpu-400-nines", "memory-1e400", "cpu-65", "arabic-indic-port", "port-80", "null-app-id"],
)
def test_out_of_bounds_values_are_refused(
    client: httpx.Client,
    api: Api,
    orders: dict[str, Any],
    annotation: str,
    value: str | None,
    reason: str,
) -> None:
    """A `null` annotation reaches the webhook as "" (the API server decodes it so): refused as
    an empty app id, not injected as app id "None"."""
    manifest = annotated(f"bound-{annotation.split('/')[1]}-{len(value or '')}")
    manifest["metadata"]["annotations"][annotation] = value
    message = refused(client, api, manifest)
    assert f"{annotation}" in message, message
    assert reason in message, message


def test_host_network_needs_an_api_token(
    client: httpx.Client, api: Api, orders: dict[str, Any]
) -> None:
    manifest = annotated("host-network")
    manifest["spec"]["hostNetwork"] = True
    message = refused(client, api, manifest)
    assert "spec.hostNetwork:" in message
    assert "set statecar.io/api-token-secret" in message, message
    event = wait_event(api, SHOP, "host-network", "InjectionRejected")
    assert "spec.hostNetwork" in event["message"]

    # With a token it is admitted, with the warning about the node-wide port (a dry run: no pod).
    manifest["metadata"]["annotations"]["statecar.io/api-token-secret"] = "checkout-token"
    response = client.post(
        f"/api/v1/namespaces/{SHOP}/pods", json=manifest, params={"dryRun": "All"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["initContainers"][0]["name"] == "statecar"
    assert "bound on the node's loopback" in response.headers.get("warning", "")


def test_every_problem_is_listed_and_a_huge_value_is_cut_short(
    client: httpx.Client, api: Api, orders: dict[str, Any]
) -> None:
    manifest = annotated(
        "many-problems",
        **{
            "statecar.io/log-level": "x" * 100_000,
            "statecar.io/env": "STATECAR_LISTEN_ADDRESS=0.0.0.0",
            "statecar.io/metrics-port": "80",
        },
    )
    message = refused(client, api, manifest)
    assert "(1) " in message, message
    assert "(3) " in message, message
    assert "100000 characters" in message
    assert len(message) < 2000
