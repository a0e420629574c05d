"""Stale sidecars and the rollout that replaces them: the pure decisions (issue 11.3)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

from statecar_operator.reconciliation import conditions, staleness
from statecar_operator.reconciliation.staleness import Budget, Workload
from statecar_operator.settings import InjectorSettings

SETTINGS = InjectorSettings(image="ghcr.io/statecar/statecar:0.2.0", version="0.2.0")


def status(**fields: Any) -> dict[str, str]:
    recorded = {
        "appId": "web",
        "configHash": None,
        "image": SETTINGS.image,
        "injectorHash": SETTINGS.config_hash(),
        "version": "0.2.0",
        **fields,
    }
    return {"statecar.io/status": json.dumps(recorded)}


def test_a_pod_is_stale_when_its_image_or_injection_configuration_is_not_the_current_one() -> None:
    assert staleness.stale_reason(status(), SETTINGS) is None
    old_image = staleness.stale_reason(status(image="ghcr.io/statecar/statecar:0.1.0"), SETTINGS)
    assert old_image == "image ghcr.io/statecar/statecar:0.1.0, now ghcr.io/statecar/statecar:0.2.0"
    changed = dataclasses.replace(SETTINGS, memory_limit="1Gi")
    assert staleness.stale_reason(status(), changed) == (
        "injected with an earlier sidecar configuration"
    )
    # An earlier release recorded no configuration hash: stale, its configuration is unknown.
    assert staleness.stale_reason(status(injectorHash=None), SETTINGS) is not None
    assert staleness.stale_reason({}, SETTINGS) is not None
    assert staleness.stale_reason({"statecar.io/status": "{broken"}, SETTINGS) is not None
    # A pod that chose its own image is compared with that image.
    own = {**status(image="registry.example/statecar:debug")}
    own["statecar.io/sidecar-image"] = "registry.example/statecar:debug"
    assert staleness.stale_reason(own, SETTINGS) is None


def test_pod_info_reads_the_app_id_the_controller_and_staleness() -> None:
    pod = {
        "metadata": {
            "name": "web-5d4f8b-x",
            "namespace": "shop",
            "uid": "p1",
            "annotations": status(image="old:1"),
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "web-5d4f8b", "controller": True, "uid": "r"}
            ],
        }
    }
    info = staleness.pod_info(pod, SETTINGS)
    assert (info.app_id, info.owner, info.namespace) == (
        "web",
        ("ReplicaSet", "web-5d4f8b"),
        "shop",
    )
    assert info.stale is not None
    current = staleness.pod_info({"metadata": {"name": "b", "annotations": status()}}, SETTINGS)
    assert current.stale is None
    assert current.owner is None
    other = dataclasses.replace(info, name="cart-1", app_id="cart")
    assert staleness.stale_in_scope([info, other, current], ["web"]) == ("web-5d4f8b-x",)
    assert staleness.stale_in_scope([info, other, current], []) == ("cart-1", "web-5d4f8b-x")


def workload(name: str, *, opted_in: bool = True, rolled_out: bool = True) -> Workload:
    return Workload("Deployment", "shop", name, opted_in, {"app": name}, rolled_out)


def test_one_workload_at_a_time_only_opted_in_and_never_against_a_budget() -> None:
    stale = [workload("web"), workload("api"), workload("cart", opted_in=False)]
    decision = staleness.next_rollout(stale, [], in_progress=None)
    assert decision.restart == workload("api")  # in name order, one only
    # The previous restart still rolling out: nothing else.
    waiting = staleness.next_rollout(stale, [], in_progress=workload("web", rolled_out=False))
    assert (waiting.restart, waiting.waiting_for) == (None, workload("web", rolled_out=False))
    done = staleness.next_rollout(stale, [], in_progress=workload("web"))
    assert done.restart == workload("api")
    # A budget allowing no disruption holds its workload back (reported), the next goes.
    budget = Budget("shop", "api-pdb", {"app": "api"}, 0)
    blocked = staleness.next_rollout(stale, [budget], in_progress=None)
    assert blocked.restart == workload("web")
    assert blocked.blocked == ((workload("api"), "api-pdb"),)
    allowing = Budget("shop", "api-pdb", {"app": "api"}, 1)
    assert staleness.next_rollout(stale, [allowing], in_progress=None).restart == workload("api")
    # Not opted in: only with rollout "all".
    only_cart = [workload("cart", opted_in=False)]
    assert staleness.next_rollout(only_cart, [], in_progress=None).restart is None
    assert staleness.next_rollout(
        only_cart, [], in_progress=None, rollout_all=True
    ).restart == workload("cart", opted_in=False)


def test_a_rollout_is_complete_by_kubectls_rules() -> None:
    deployment: dict[str, Any] = {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
        },
    }
    assert staleness.is_rolled_out("Deployment", deployment)
    assert not staleness.is_rolled_out(
        "Deployment", {**deployment, "status": {**deployment["status"], "observedGeneration": 2}}
    )
    assert not staleness.is_rolled_out(
        "Deployment", {**deployment, "status": {**deployment["status"], "replicas": 3}}
    )
    assert not staleness.is_rolled_out("Deployment", {"metadata": {"generation": 1}})
    daemonset = {
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 2,
            "numberAvailable": 3,
        },
    }
    assert not staleness.is_rolled_out("DaemonSet", daemonset)
    assert staleness.restart_patch("T") == {
        "spec": {"template": {"metadata": {"annotations": {"statecar.io/restartedAt": "T"}}}}
    }


def test_the_sidecars_current_condition_and_count() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    current = conditions.compute_status(
        conditions.ComponentFacts(1, stale_pods=()), previous=None, now=now
    )
    assert current["staleSidecars"] == 0
    (found,) = [c for c in current["conditions"] if c["type"] == "SidecarsCurrent"]
    assert (found["status"], found["reason"]) == ("True", "Current")
    stale = conditions.compute_status(
        conditions.ComponentFacts(1, stale_pods=("a", "b")), previous=current, now=now
    )
    (found,) = [c for c in stale["conditions"] if c["type"] == "SidecarsCurrent"]
    assert (found["status"], found["reason"]) == ("False", "StaleSidecars")
    assert "a, b" in found["message"]
    assert stale["staleSidecars"] == 2
    (change,) = conditions.transitions(current, stale)
    assert change.type == "SidecarsCurrent"
    # Not watched: no such condition at all, and Ready never depends on it.
    plain = conditions.compute_status(conditions.ComponentFacts(1), previous=None, now=now)
    assert "staleSidecars" not in plain
    assert all(c["type"] != "SidecarsCurrent" for c in plain["conditions"])
