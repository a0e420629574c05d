"""
Stale sidecars, found and (on request) rolled out: the loop around `staleness`' decisions.

Runs with STATECAR_OPERATOR_STALE_SIDECARS or STATECAR_OPERATOR_AUTO_ROLLOUT. kopf indexes the
injected pods (label `statecar.io/injected=true`) as `staleness.PodInfo`; this loop, every
`interval` and on the Lease holder only:

* posts one `StaleSidecar` Warning Event per stale pod (and reason);
* keeps the `statecar_operator_stale_sidecars{namespace}` gauge (`metrics`), which every replica
  serves from the same index;
* with the rollout on, restarts at most one workload at a time (`staleness.next_rollout`): it
  finds each stale pod's Deployment (through its ReplicaSet), StatefulSet or DaemonSet, reads the
  namespace's PodDisruptionBudgets, patches `statecar.io/restartedAt` into the pod template and
  posts `SidecarRollout` on the workload (`SidecarRolloutBlocked` when a budget allows no
  disruption). A workload is restarted once per sidecar target (image and configuration hash):
  if its pods stay stale after that, something else is wrong and a loop of restarts would not
  help.

The component conditions (`SidecarsCurrent`, `status.staleSidecars`) are written by the
reconciler, from the same index (`View.pods`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from statecar_operator.cluster.events import EventRecorder, ObjectRef
from statecar_operator.cluster.timestamps import format_time
from statecar_operator.reconciliation import staleness
from statecar_operator.reconciliation.staleness import Budget, PodInfo, Workload
from statecar_operator.settings import InjectorSettings

logger = logging.getLogger(__name__)


class WorkloadAPI(Protocol):
    """The calls made (implemented by `cluster.kube.Kube`)."""

    async def read_workload(
        self, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    async def patch_workload(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def list_disruption_budgets(self, namespace: str) -> list[dict[str, Any]]: ...


class SidecarUpdates:
    def __init__(
        self,
        *,
        api: WorkloadAPI,
        pods: Callable[[], Mapping[str, Collection[PodInfo]]],
        injector: InjectorSettings,
        events: EventRecorder,
        is_leader: Callable[[], bool],
        rollout: str,
        interval: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._pods = pods
        self._events = events
        self._is_leader = is_leader
        self._rollout = rollout
        self._interval = interval
        self._clock = clock
        self._target = (injector.image, injector.config_hash())
        self._announced: set[tuple[str, str]] = set()
        #: Workloads restarted, by key, with the target they were restarted for.
        self._restarted: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._in_progress: tuple[str, str, str] | None = None
        self.rollouts = 0

    # --- what every replica serves ----------------------------------------------------------

    def stale_counts(self) -> dict[str, int]:
        return {
            namespace: sum(1 for p in pods if p.stale)
            for namespace, pods in sorted(self._pods().items())
        }

    def metrics(self) -> str:
        lines = [
            "# HELP statecar_operator_stale_sidecars Injected pods running a sidecar of an "
            "earlier image or injection configuration.",
            "# TYPE statecar_operator_stale_sidecars gauge",
        ]
        for namespace, count in self.stale_counts().items():
            lines.append(f'statecar_operator_stale_sidecars{{namespace="{namespace}"}} {count}')
        lines += [
            "# HELP statecar_operator_sidecar_rollouts_total Workloads restarted because their "
            "sidecars were stale.",
            "# TYPE statecar_operator_sidecar_rollouts_total counter",
            f"statecar_operator_sidecar_rollouts_total {self.rollouts}",
        ]
        return "\n".join(lines) + "\n"

    # --- the loop (the Lease holder only) ------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if not self._is_leader():
                continue
            try:
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("Checking stale sidecars failed; again in %ss", self._interval)

    async def run_pass(self) -> None:
        stale = [p for pods in self._pods().values() for p in pods if p.stale]
        for pod in stale:
            assert pod.stale is not None
            if (pod.uid, pod.stale) in self._announced:
                continue
            self._announced.add((pod.uid, pod.stale))
            self._events.record(
                ObjectRef("v1", "Pod", pod.name, pod.namespace, pod.uid or None),
                type="Warning",
                reason="StaleSidecar",
                message=f"the statecar sidecar is stale: {pod.stale}",
            )
        if self._rollout != "off":
            await self._roll(stale)

    async def _roll(self, stale: list[PodInfo]) -> None:
        workloads: dict[tuple[str, str, str], Workload] = {}
        for pod in stale:
            found = await self._workload_of(pod)
            if found is not None and self._restarted.get(found.key) != self._target:
                workloads[found.key] = found
        in_progress = None
        if self._in_progress is not None:
            kind, namespace, name = self._in_progress
            body = await self._api.read_workload(kind, namespace, name)
            if body is None:
                self._in_progress = None
            else:
                in_progress = _workload(kind, body)
        budgets: list[Budget] = []
        for namespace in sorted({w.namespace for w in workloads.values()}):
            budgets.extend(_budget(b) for b in await self._api.list_disruption_budgets(namespace))
        decision = staleness.next_rollout(
            workloads.values(),
            budgets,
            in_progress=in_progress,
            rollout_all=self._rollout == "all",
        )
        if decision.waiting_for is None:
            self._in_progress = None
        for workload, budget in decision.blocked:
            self._events.record(
                _ref(workload),
                type="Warning",
                reason="SidecarRolloutBlocked",
                message=f"its sidecars are stale, but PodDisruptionBudget {budget} allows no "
                "disruption now; retrying",
            )
        target = decision.restart
        if target is None:
            return
        await self._api.patch_workload(
            target.kind,
            target.namespace,
            target.name,
            staleness.restart_patch(format_time(self._clock())),
        )
        self._restarted[target.key] = self._target
        self._in_progress = target.key
        self.rollouts += 1
        logger.info("Restarted %s %s/%s: stale sidecars", *target.key)
        self._events.record(
            _ref(target),
            type="Normal",
            reason="SidecarRollout",
            message=f"restarted (statecar.io/restartedAt) so its pods get the current sidecar "
            f"(image {self._target[0]})",
        )

    async def _workload_of(self, pod: PodInfo) -> Workload | None:
        if pod.owner is None:
            return None
        kind, name = pod.owner
        if kind == "ReplicaSet":
            replicaset = await self._api.read_workload("ReplicaSet", pod.namespace, name)
            owners = ((replicaset or {}).get("metadata") or {}).get("ownerReferences") or []
            deployment = next(
                (o for o in owners if o.get("controller") and o.get("kind") == "Deployment"), None
            )
            if deployment is None:
                return None
            kind, name = "Deployment", str(deployment.get("name"))
        if kind not in staleness.WORKLOAD_KINDS:
            return None
        body = await self._api.read_workload(kind, pod.namespace, name)
        return None if body is None else _workload(kind, body)


def _workload(kind: str, body: Mapping[str, Any]) -> Workload:
    metadata = body.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    template = ((body.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return Workload(
        kind=kind,
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        opted_in=str(annotations.get(staleness.AUTO_ROLLOUT, "")).strip().lower() == "true",
        template_labels=dict(template.get("labels") or {}),
        rolled_out=staleness.is_rolled_out(kind, body),
    )


def _budget(body: Mapping[str, Any]) -> Budget:
    metadata = body.get("metadata") or {}
    selector = (body.get("spec") or {}).get("selector")
    match_labels = None
    if isinstance(selector, Mapping) and not selector.get("matchExpressions"):
        match_labels = dict(selector.get("matchLabels") or {})
    return Budget(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        match_labels=match_labels,
        disruptions_allowed=int((body.get("status") or {}).get("disruptionsAllowed", 0)),
    )


def _ref(workload: Workload) -> ObjectRef:
    return ObjectRef("apps/v1", workload.kind, workload.name, workload.namespace)
