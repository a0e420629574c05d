"""
The operator end to end, part 5e: stale sidecars, reported and rolled out (issue 11.3).

The package's operator runs with `STATECAR_OPERATOR_STALE_SIDECARS=true` and
`STATECAR_OPERATOR_AUTO_ROLLOUT=annotated`. There is no kubelet or controller manager here, so
the workloads are stored objects and their pods are created directly, each carrying the
`statecar.io/status` an earlier injection (an older image) would have stamped, owned the way a
controller would own them. A workload's rollout is "finished" by writing its status as its
controller would. Proven: the component's SidecarsCurrent condition, `status.staleSidecars` and
the Stale printer column, a StaleSidecar Event per pod, the gauge on /metrics; restarts by the
`statecar.io/restartedAt` patch, one workload at a time, only annotated workloads, never one
whose PodDisruptionBudget allows no disruption; and the condition back to True once the pods
are replaced by injected ones.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
import yaml
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import Api, OperatorProcess, condition, wait_for
from tests.e2e.test_operator_e2e.helpers import (
    REACT,
    STALE,
    component_manifest,
    kubectl_apply,
    timing,
    wait_condition,
    wait_event,
)

pytestmark = pytest.mark.e2e

OLD_IMAGE = "ghcr.io/statecar/statecar:0.0.1-old"
RESTARTED_AT = "statecar.io/restartedAt"


def _template(app: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }


def _workload(kind: str, name: str, *, opted_in: bool) -> dict[str, Any]:
    annotations = {"statecar.io/auto-rollout": "true"} if opted_in else {}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": STALE, "annotations": annotations},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": _template(name)},
    }


def _owner(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
    }


def _stale_pod(name: str, app: str, owner: dict[str, Any]) -> dict[str, Any]:
    status = {"appId": app, "configHash": None, "image": OLD_IMAGE, "version": "0.0.1"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": STALE,
            "labels": {"app": app, "statecar.io/injected": "true"},
            "annotations": {"statecar.io/status": json.dumps(status)},
            "ownerReferences": [owner],
        },
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }


def _get(api: Api, kind: str, name: str) -> dict[str, Any]:
    plural = {"Deployment": "deployments", "DaemonSet": "daemonsets", "ReplicaSet": "replicasets"}
    found = api.get(f"/apis/apps/v1/namespaces/{STALE}/{plural[kind]}/{name}")
    assert found is not None, (kind, name)
    return found


def _restarted(api: Api, kind: str, name: str) -> str | None:
    template = _get(api, kind, name)["spec"]["template"]["metadata"]
    value = (template.get("annotations") or {}).get(RESTARTED_AT)
    return str(value) if value else None


def _finish_rollout(cluster: LocalCluster, api: Api, kind: str, name: str) -> None:
    """What the workload's controller would write once every replica is updated and ready."""
    generation = _get(api, kind, name)["metadata"]["generation"]
    status: dict[str, Any] = {"observedGeneration": generation}
    if kind == "DaemonSet":
        status |= {
            "currentNumberScheduled": 1,
            "numberMisscheduled": 0,
            "desiredNumberScheduled": 1,
            "numberReady": 1,
            "updatedNumberScheduled": 1,
            "numberAvailable": 1,
        }
    else:
        status |= {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    cluster.kubectl(
        "patch",
        kind.lower(),
        name,
        "-n",
        STALE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


@pytest.fixture(scope="module")
def stale_world(cluster: LocalCluster, api: Api, webhooks: str) -> dict[str, dict[str, Any]]:
    cluster.apply(component_manifest("cache", STALE, {"type": "state.in-memory"}))
    wait_condition(api, STALE, "cache", "Ready", "True")
    created: dict[str, dict[str, Any]] = {}
    for kind, name, opted_in in (
        ("DaemonSet", "agent", True),
        ("Deployment", "api", True),
        ("Deployment", "cart", True),
        ("Deployment", "web", True),
        ("Deployment", "plain", False),
    ):
        cluster.apply(_workload(kind, name, opted_in=opted_in))
        created[name] = _get(api, kind, name)
    # The api Deployment's budget allows no disruption (as its disruption controller would say).
    cluster.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "api", "namespace": STALE},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "api"}}},
        }
    )
    budget_status = {
        "disruptionsAllowed": 0,
        "currentHealthy": 1,
        "desiredHealthy": 1,
        "expectedPods": 1,
    }
    cluster.kubectl(
        "patch",
        "pdb",
        "api",
        "-n",
        STALE,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": budget_status}),
    )
    for name, body in created.items():
        owner = _owner(body)
        if body["kind"] == "Deployment":
            replicaset = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {"name": f"{name}-1", "namespace": STALE, "ownerReferences": [owner]},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": _template(name)},
            }
            cluster.apply(replicaset)
            owner = _owner(_get(api, "ReplicaSet", f"{name}-1"))
        result = kubectl_apply(cluster, _stale_pod(f"{name}-old", name, owner))
        assert result.returncode == 0, result.stderr
    return created


def test_stale_sidecars_are_reported_on_the_component_as_events_and_as_a_metric(
    cluster: LocalCluster, api: Api, operator: OperatorProcess, stale_world: Any
) -> None:
    component = wait_for(
        "all five stale pods counted on the component",
        lambda: api.component(STALE, "cache"),
        lambda c: (c or {}).get("status", {}).get("staleSidecars") == 5,
        timeout=REACT,
    )
    assert component is not None
    found = condition(component, "SidecarsCurrent")
    assert found["reason"] == "StaleSidecars"
    assert "web-old" in found["message"]
    assert condition(component, "Ready")["status"] == "True"  # serving is not affected
    table = cluster.kubectl("get", "ssc", "cache", "-n", STALE, "-o", "wide").stdout
    header, row = table.splitlines()[:2]
    assert "STALE" in header.split()
    assert row.split()[header.split().index("STALE")] == "5"
    event = wait_event(api, STALE, "web-old", "StaleSidecar")
    assert OLD_IMAGE in event["message"]
    assert event["type"] == "Warning"
    metrics = wait_for(
        "the stale gauge on /metrics",
        lambda: httpx.get(f"{operator.health_url}/metrics", timeout=5, trust_env=False).text,
        lambda text: f'statecar_operator_stale_sidecars{{namespace="{STALE}"}} 5' in text,
        timeout=REACT,
    )
    assert "statecar_operator_sidecar_rollouts_total" in metrics


def test_annotated_workloads_are_restarted_one_at_a_time_respecting_budgets(
    cluster: LocalCluster, api: Api, stale_world: Any
) -> None:
    # First in order: the DaemonSet; nothing else while it has not rolled out.
    wait_for("agent to be restarted", lambda: _restarted(api, "DaemonSet", "agent"), timeout=REACT)
    event = wait_event(api, STALE, "agent", "SidecarRollout")
    assert event["involvedObject"]["kind"] == "DaemonSet"
    time.sleep(3)  # three passes of the operator
    for name in ("api", "cart", "web", "plain"):
        assert _restarted(api, "Deployment", name) is None, name

    # agent done: api's budget allows no disruption (reported), so cart goes next.
    _finish_rollout(cluster, api, "DaemonSet", "agent")
    started = time.monotonic()
    wait_for("cart to be restarted", lambda: _restarted(api, "Deployment", "cart"), timeout=REACT)
    timing(
        "next workload restarted after the previous rollout finished", time.monotonic() - started
    )
    blocked = wait_event(api, STALE, "api", "SidecarRolloutBlocked")
    assert "PodDisruptionBudget api" in blocked["message"]
    assert _restarted(api, "Deployment", "api") is None
    assert _restarted(api, "Deployment", "web") is None

    _finish_rollout(cluster, api, "Deployment", "cart")
    wait_for("web to be restarted", lambda: _restarted(api, "Deployment", "web"), timeout=REACT)
    _finish_rollout(cluster, api, "Deployment", "web")
    time.sleep(3)
    # Never the unannotated one, never the one its budget holds back, and none twice.
    assert _restarted(api, "Deployment", "plain") is None
    assert _restarted(api, "Deployment", "api") is None
    assert len(api.events(STALE, name="cart", reason="SidecarRollout")) == 1


def test_replaced_pods_make_the_sidecars_current_again(
    cluster: LocalCluster, api: Api, stale_world: Any
) -> None:
    """What the restarted workloads' controllers would do: new pods, injected by the webhook
    with the current sidecar, replace the old ones."""
    for name in ("agent", "api", "cart", "web", "plain"):
        cluster.kubectl("delete", "pod", f"{name}-old", "-n", STALE, "--wait=false")
    fresh = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-new",
            "namespace": STALE,
            "annotations": {"statecar.io/enabled": "true", "statecar.io/app-id": "web"},
        },
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]},
    }
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(fresh))
    assert result.returncode == 0, result.stderr
    component = wait_condition(api, STALE, "cache", "SidecarsCurrent", "True")
    assert component["status"]["staleSidecars"] == 0
