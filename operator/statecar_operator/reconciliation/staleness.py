"""
Stale sidecars and the opt-in rollout that replaces them, as pure decisions (issue 11.3).

An injected pod records what it got in its `statecar.io/status` annotation: the sidecar image
and `injectorHash`, the hash of the injector's configuration (`InjectorSettings.config_hash`: every
cluster-wide sidecar default, e.g. resources, ports, log level). A running pod never changes its
containers, so after the image or that configuration changes the pod keeps its old sidecar until
its workload replaces it. `stale_reason` says whether a pod is in that state; the reconciler
reports it (a condition and `status.staleSidecars` on the components in the pod's scope, an
Event on the pod, a metric), and `next_rollout` picks which workload to restart.

The rollout is what `kubectl rollout restart` does: a `statecar.io/restartedAt` annotation on
the pod template, so the workload's controller replaces its pods at its own pace, with its own
`maxUnavailable`. One workload at a time: none while the previous one has not finished rolling
out, and never one whose PodDisruptionBudget allows no disruption right now
(`status.disruptionsAllowed == 0`, https://kubernetes.io/docs/tasks/run-application/configure-pdb/).
Opt-in: the workload's `statecar.io/auto-rollout: "true"` annotation, or every workload with the
operator's `STATECAR_OPERATOR_AUTO_ROLLOUT=all`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_operator.settings import InjectorSettings

#: On a Deployment, StatefulSet or DaemonSet: restart it when its sidecars are stale.
AUTO_ROLLOUT: Final = ann.PREFIX + "auto-rollout"
#: Put on the pod template by a rollout (as `kubectl rollout restart` puts its own).
RESTARTED_AT: Final = ann.PREFIX + "restartedAt"
WORKLOAD_KINDS: Final = ("Deployment", "StatefulSet", "DaemonSet")


def stale_reason(annotations: Mapping[str, Any], settings: InjectorSettings) -> str | None:
    """Why an injected pod's sidecar is not what the injector injects now; None if it is."""
    raw = annotations.get(ann.STATUS)
    try:
        recorded = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        recorded = None
    if not isinstance(recorded, Mapping):
        return f"its {ann.STATUS} annotation is missing or unreadable"
    override = annotations.get(ann.SIDECAR_IMAGE)
    wanted = override.strip() if isinstance(override, str) else settings.image
    if recorded.get("image") != wanted:
        return f"image {recorded.get('image')}, now {wanted}"
    if recorded.get("injectorHash") != settings.config_hash():
        return "injected with an earlier sidecar configuration"
    return None


@dataclass(frozen=True)
class PodInfo:
    """An injected pod as the pods index holds it."""

    namespace: str
    name: str
    uid: str
    app_id: str | None
    #: `stale_reason`; None when its sidecar is current.
    stale: str | None
    #: Its controller (kind, name), e.g. ("ReplicaSet", "web-5d4f8b"), if any.
    owner: tuple[str, str] | None


def pod_info(body: Mapping[str, Any], settings: InjectorSettings) -> PodInfo:
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    try:
        recorded = json.loads(annotations.get(ann.STATUS) or "null")
    except ValueError:
        recorded = None
    app_id = recorded.get("appId") if isinstance(recorded, Mapping) else None
    owners = [o for o in metadata.get("ownerReferences") or [] if isinstance(o, Mapping)]
    controller = next((o for o in owners if o.get("controller")), None)
    return PodInfo(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        app_id=app_id if isinstance(app_id, str) else None,
        stale=stale_reason(annotations, settings),
        owner=(str(controller.get("kind")), str(controller.get("name"))) if controller else None,
    )


def stale_in_scope(pods: Iterable[PodInfo], scopes: Sequence[str]) -> tuple[str, ...]:
    """The stale pods a component serves (all of the namespace's when it has no scopes)."""
    return tuple(sorted(p.name for p in pods if p.stale and (not scopes or p.app_id in scopes)))


@dataclass(frozen=True)
class Workload:
    """A pod's owning Deployment, StatefulSet or DaemonSet, as the rollout needs it."""

    kind: str
    namespace: str
    name: str
    #: `statecar.io/auto-rollout` on the workload.
    opted_in: bool
    #: The labels of its pod template (what a PodDisruptionBudget selects).
    template_labels: Mapping[str, str]
    #: Its controller has caught up with its spec and every replica is updated and available.
    rolled_out: bool

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.namespace, self.name


@dataclass(frozen=True)
class Budget:
    """A PodDisruptionBudget: its selector (matchLabels only) and disruptions allowed now."""

    namespace: str
    name: str
    match_labels: Mapping[str, str] | None
    disruptions_allowed: int


@dataclass(frozen=True)
class RolloutDecision:
    restart: Workload | None = None
    #: A restarted workload still rolling out: nothing else is restarted meanwhile.
    waiting_for: Workload | None = None
    #: Stale, opted in, but a PodDisruptionBudget allows no disruption now: (workload, budget).
    blocked: tuple[tuple[Workload, str], ...] = ()


def is_rolled_out(kind: str, workload: Mapping[str, Any]) -> bool:
    """Whether a workload's controller has finished its latest rollout (kubectl's rules,
    `kubectl rollout status`: pkg/polymorphichelpers/rollout_status.go)."""
    metadata, spec = workload.get("metadata") or {}, workload.get("spec") or {}
    status = workload.get("status") or {}
    if status.get("observedGeneration", -1) < metadata.get("generation", 0):
        return False
    if kind == "Deployment":
        replicas = spec.get("replicas", 1)
        return bool(
            status.get("updatedReplicas", 0) >= replicas
            and status.get("replicas", 0) <= status.get("updatedReplicas", 0)
            and status.get("availableReplicas", 0) >= status.get("updatedReplicas", 0)
        )
    if kind == "StatefulSet":
        replicas = spec.get("replicas", 1)
        return bool(
            status.get("updatedReplicas", 0) >= replicas
            and status.get("readyReplicas", 0) >= replicas
            and status.get("currentRevision") == status.get("updateRevision")
        )
    desired = status.get("desiredNumberScheduled", 0)
    return bool(
        status.get("updatedNumberScheduled", 0) >= desired
        and status.get("numberAvailable", 0) >= desired
    )


def _selects(budget: Budget, labels: Mapping[str, str]) -> bool:
    if budget.match_labels is None:
        return True  # a selector with matchExpressions: assumed to select (waiting is safe)
    return all(labels.get(k) == v for k, v in budget.match_labels.items())


def next_rollout(
    stale: Iterable[Workload],
    budgets: Sequence[Budget],
    *,
    in_progress: Workload | None,
    rollout_all: bool = False,
) -> RolloutDecision:
    """
    Which workload to restart now: at most one, and none while `in_progress` (the last one
    restarted) is still rolling out; skipping those whose PodDisruptionBudget allows no
    disruption (they are reported, and tried again on the next pass).
    """
    if in_progress is not None and not in_progress.rolled_out:
        return RolloutDecision(waiting_for=in_progress)
    blocked: list[tuple[Workload, str]] = []
    for workload in sorted(stale, key=lambda w: w.key):
        if not (workload.opted_in or rollout_all):
            continue
        budget = next(
            (
                b
                for b in budgets
                if b.namespace == workload.namespace
                and b.disruptions_allowed <= 0
                and _selects(b, workload.template_labels)
            ),
            None,
        )
        if budget is not None:
            blocked.append((workload, budget.name))
            continue
        return RolloutDecision(restart=workload, blocked=tuple(blocked))
    return RolloutDecision(blocked=tuple(blocked))


def restart_patch(now: str) -> dict[str, Any]:
    """The merge patch of a restart (`kubectl rollout restart`'s, under statecar's key)."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
