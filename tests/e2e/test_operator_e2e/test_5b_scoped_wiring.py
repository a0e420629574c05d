"""
The operator end to end, part 5b: credentials reach only the apps in scope (issue 11.1).

Runs after parts 1-5 on the fixtures they share (`conftest.py`). In namespace `e2e-scopes`: an
unscoped in-memory store, a Redis store scoped to `payments`, and a Redis store scoped to `cart`
whose password is a sentinel. The `payments` pod's sidecar is run from the pod's own spec by the
kubelet stand-in, which materialises exactly the projected volume the injector wrote (the
kubelet's payload rules: `items`, `optional`); nothing of `cart`'s appears in what it mounts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.kubelet import PodProcess
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import Api, FailureContext, wait_for
from tests.e2e.test_operator_e2e.helpers import (
    PASSWORD,
    REACT,
    SCOPES,
    WIRING,
    component_manifest,
    entry,
    kubectl_apply,
    pod_manifest,
    running_pod_sidecar,
    timing,
    wait_condition,
    wiring_document_of,
    wiring_secrets,
)
from tests.support.redis_server import RedisProcess

from statecar_contract.wiring import app_secret_name

pytestmark = pytest.mark.e2e

#: The `cart` store's password: a string that must never reach `payments`.
CART_ONLY = f"cart-only-{uuid.uuid4().hex}"


def _redis(name: str, address: str, secret: str, scopes: list[str]) -> dict[str, Any]:
    return component_manifest(
        name,
        SCOPES,
        {
            "type": "state.redis",
            "metadata": [
                entry("redisHost", address),
                {"name": "redisPassword", "secretKeyRef": {"name": secret, "key": "password"}},
            ],
            "scopes": scopes,
        },
    )


def _secret(name: str, password: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": SCOPES},
        "stringData": {"password": password},
    }


@pytest.fixture(scope="module")
def scoped_components(
    cluster: LocalCluster, api: Api, webhooks: str, redis: RedisProcess
) -> dict[str, Any]:
    cluster.apply(_secret("pay-auth", PASSWORD))
    cluster.apply(_secret("cart-auth", CART_ONLY))
    cluster.apply(component_manifest("shared-memo", SCOPES, {"type": "state.in-memory"}))
    cluster.apply(_redis("pay-store", redis.address, "pay-auth", ["payments"]))
    cluster.apply(_redis("cart-cache", redis.address, "cart-auth", ["cart"]))
    for name in ("shared-memo", "pay-store"):
        wait_condition(api, SCOPES, name, "Ready", "True")
    # cart-cache's password is wrong for this Redis (it is only a sentinel), but it is rendered.
    return wait_condition(api, SCOPES, "cart-cache", "SecretsResolved", "True")


@pytest.fixture(scope="module")
def payments(
    cluster: LocalCluster,
    api: Api,
    scoped_components: dict[str, Any],
    diagnostics: FailureContext,
) -> Iterator[PodProcess]:
    annotations = {"statecar.io/enabled": "true", "statecar.io/app-id": "payments"}
    result = kubectl_apply(cluster, pod_manifest("payments", SCOPES, annotations))
    assert result.returncode == 0, result.stderr
    pod = api.pod(SCOPES, "payments")
    assert pod is not None
    with running_pod_sidecar(cluster, pod, diagnostics, "payments") as process:
        yield process


def _mounted(sidecar: PodProcess) -> dict[str, bytes]:
    folder = Path(sidecar.environment()["STATECAR_WIRING_FILE"])
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _served(sidecar: PodProcess) -> list[str]:
    metadata = httpx.get(f"{sidecar.url}/v1.0/metadata", timeout=10, trust_env=False).json()
    return sorted(c["name"] for c in metadata["components"])


def test_each_app_gets_a_secret_with_only_its_scoped_components(
    api: Api, scoped_components: dict[str, Any]
) -> None:
    secrets = wait_for(
        "the shared and both per-app wiring Secrets",
        lambda: wiring_secrets(api, SCOPES),
        lambda found: len(found) == 3,
        timeout=REACT,
    )
    contents = {name: set(wiring_document_of(s)) for name, s in secrets.items()}
    assert contents == {
        WIRING: {"shared-memo"},
        app_secret_name("payments"): {"pay-store"},
        app_secret_name("cart"): {"cart-cache"},
    }
    # The sentinel is rendered, in cart's Secret only.
    cart = wiring_document_of(secrets[app_secret_name("cart")])
    assert cart["cart-cache"]["metadata"]["redisPassword"] == CART_ONLY
    for name, secret in secrets.items():
        assert secret["type"] == "statecar.io/wiring"
        assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "statecar"
        if name != app_secret_name("cart"):
            assert CART_ONLY not in str(wiring_document_of(secret)), name


def test_the_files_a_sidecar_mounts_hold_nothing_out_of_scope(payments: PodProcess) -> None:
    volume = next(v for v in payments.pod["spec"]["volumes"] if v["name"] == "statecar-wiring")
    assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == [
        WIRING,
        app_secret_name("payments"),
    ]
    files = _mounted(payments)
    assert sorted(files) == ["app.json", "shared.json"]
    for name, content in files.items():
        assert CART_ONLY.encode() not in content, name
        assert b"cart-cache" not in content, name
    assert _served(payments) == ["pay-store", "shared-memo"]
    store = f"{payments.url}/v1.0/state/pay-store"
    saved = httpx.post(store, json=[{"key": "k", "value": 1}], timeout=10, trust_env=False)
    assert saved.status_code == 204, saved.text
    missing = httpx.get(f"{payments.url}/v1.0/state/cart-cache/k", timeout=10, trust_env=False)
    assert missing.status_code >= 400, missing.text


def test_a_scope_change_moves_a_component_between_secrets_without_a_restart(
    cluster: LocalCluster, api: Api, payments: PodProcess
) -> None:
    """shared-memo scoped to cart: it leaves the shared Secret for cart's, and the running
    payments sidecar stops serving it (and no longer mounts it) with no restart."""
    pid = payments.pid
    started = time.monotonic()
    cluster.apply(
        component_manifest("shared-memo", SCOPES, {"type": "state.in-memory", "scopes": ["cart"]})
    )
    wait_for(
        "shared-memo to leave the payments sidecar",
        lambda: _served(payments),
        lambda served: served == ["pay-store"],
        timeout=REACT,
    )
    timing("scope change reaching a running sidecar", time.monotonic() - started)
    files = _mounted(payments)
    assert all(b"shared-memo" not in content for content in files.values())
    cart = wiring_document_of(wiring_secrets(api, SCOPES)[app_secret_name("cart")])
    assert set(cart) == {"cart-cache", "shared-memo"}
    assert payments.pid == pid
    assert payments.running
