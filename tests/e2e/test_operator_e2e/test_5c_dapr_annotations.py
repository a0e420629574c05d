"""
The operator end to end, part 5c: Dapr's annotations (issue 11.4).

The package's operator runs with `STATECAR_OPERATOR_SIDECAR_DAPR_ANNOTATIONS=true`, its webhook
configuration and RBAC printed with `--dapr-annotations`. A pod written for Dapr
(`dapr.io/enabled`, `dapr.io/app-id`, resources, log level) gets the statecar sidecar as long as
Dapr's own injector is absent; once Dapr's MutatingWebhookConfiguration `dapr-sidecar-injector`
exists, such pods are left to it, with an admission warning and an Event, and injection resumes
when it is gone again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import Api, env_of, wait_for
from tests.e2e.test_operator_e2e.helpers import REACT, SHOP, kubectl_apply, pod_manifest, wait_event

pytestmark = pytest.mark.e2e

DAPR_POD = {
    "dapr.io/enabled": "true",
    "dapr.io/app-id": "cart",
    "dapr.io/log-level": "debug",
    "dapr.io/sidecar-memory-limit": "300Mi",
    "dapr.io/app-port": "8080",
}
DAPR_WEBHOOK = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "MutatingWebhookConfiguration",
    # What Dapr's chart installs (its webhooks do not matter here: none, so nothing is called).
    "metadata": {"name": "dapr-sidecar-injector"},
}


def _dry_run_injected(cluster: LocalCluster, name: str) -> bool:
    """Whether a server-side dry run of a Dapr pod comes back with the statecar sidecar."""
    result = cluster.kubectl(
        "create",
        "--dry-run=server",
        "-o",
        "yaml",
        "-f",
        "-",
        input=yaml.safe_dump(pod_manifest(name, SHOP, DAPR_POD)),
    )
    pod = yaml.safe_load(result.stdout)
    return any(c["name"] == "statecar" for c in pod["spec"].get("initContainers") or [])


@pytest.fixture
def dapr_installed(cluster: LocalCluster) -> Iterator[None]:
    cluster.apply(DAPR_WEBHOOK)
    try:
        yield
    finally:
        cluster.kubectl(
            "delete", "mutatingwebhookconfiguration", "dapr-sidecar-injector", "--ignore-not-found"
        )


def test_a_pod_written_for_dapr_gets_the_statecar_sidecar(
    cluster: LocalCluster, api: Api, orders: dict[str, Any]
) -> None:
    result = kubectl_apply(cluster, pod_manifest("dapr-cart", SHOP, DAPR_POD))
    assert result.returncode == 0, result.stderr
    # What statecar has no use for is named, not silently dropped.
    assert "dapr.io/app-port" in result.stderr, result.stderr
    pod = api.pod(SHOP, "dapr-cart")
    assert pod is not None
    sidecar = pod["spec"]["initContainers"][0]
    assert sidecar["name"] == "statecar"
    env = env_of(sidecar)
    assert env["STATECAR_APP_ID"] == "cart"  # dapr.io/app-id: cart is in orders' scopes
    assert env["STATECAR_LOG_LEVEL"] == "debug"
    assert sidecar["resources"]["limits"]["memory"] == "300Mi"
    assert env_of(pod["spec"]["containers"][0])["DAPR_HTTP_PORT"] == "3500"


def test_with_daprs_injector_installed_dapr_pods_are_left_to_it(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], dapr_installed: None
) -> None:
    wait_for(
        "the operator to see Dapr's injector",
        lambda: _dry_run_injected(cluster, "dapr-probe"),
        lambda injected: not injected,
        timeout=REACT,
    )
    result = kubectl_apply(cluster, pod_manifest("dapr-left", SHOP, DAPR_POD))
    assert result.returncode == 0, result.stderr  # admitted: Dapr's injector serves it
    assert "Dapr's own sidecar injector is installed" in result.stderr, result.stderr
    pod = api.pod(SHOP, "dapr-left")
    assert pod is not None
    assert not pod["spec"].get("initContainers")
    event = wait_event(api, SHOP, "dapr-left", "DaprInjectorInstalled")
    assert event["type"] == "Warning"
    assert "dapr-sidecar-injector" in event["message"]
    # A pod that asks for statecar itself is still injected.
    own = {"statecar.io/enabled": "true", "statecar.io/app-id": "cart"}
    result = kubectl_apply(cluster, pod_manifest("statecar-own", SHOP, own))
    assert result.returncode == 0, result.stderr
    stored = api.pod(SHOP, "statecar-own")
    assert stored is not None
    assert stored["spec"]["initContainers"][0]["name"] == "statecar"


def test_once_daprs_injector_is_gone_dapr_pods_get_statecar_again(
    cluster: LocalCluster, orders: dict[str, Any]
) -> None:
    wait_for(
        "injection of Dapr pods to resume",
        lambda: _dry_run_injected(cluster, "dapr-probe"),
        lambda injected: injected,
        timeout=REACT,
    )
