"""
A component's `status`, computed from what the reconciler observed. Pure.

Conditions follow metav1.Condition (type, status, reason, message, lastTransitionTime,
observedGeneration) and its rule that `lastTransitionTime` moves only when `status` does
(https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#typical-status-properties).
Messages never carry measurements that change on every check (latency, timestamps), so an
unchanged world computes an identical status and the reconciler writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from statecar_operator.cluster.timestamps import format_time

ConditionStatus = Literal["True", "False", "Unknown"]

READY: Final = "Ready"
VALID: Final = "Valid"
SECRETS_RESOLVED: Final = "SecretsResolved"
BACKEND_REACHABLE: Final = "BackendReachable"
#: Only while the operator watches injected pods (STATECAR_OPERATOR_STALE_SIDECARS).
SIDECARS_CURRENT: Final = "SidecarsCurrent"
CONDITION_TYPES: Final = (READY, VALID, SECRETS_RESOLVED, BACKEND_REACHABLE, SIDECARS_CURRENT)
#: Pod names listed in the SidecarsCurrent message (the count is in status.staleSidecars).
_MAX_PODS_NAMED: Final = 10

_MAX_MESSAGE: Final = 32768


@dataclass(frozen=True)
class Reachability:
    """The outcome of one reachability check of a component's backend."""

    status: ConditionStatus
    reason: str
    message: str


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class ComponentFacts:
    """What the reconciler knows about one component after a pass."""

    generation: int | None
    spec_error: str | None = None
    secrets_problem: Problem | None = None
    secret_refs: int = 0
    wiring_problem: Problem | None = None
    reachability: Reachability | None = None
    config_hash: str | None = None
    #: Injected pods in the component's scope whose sidecar is stale; None: pods not watched.
    stale_pods: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Transition:
    """A condition whose status changed: worth an Event."""

    type: str
    old: str | None
    new: ConditionStatus
    reason: str
    message: str

    @property
    def warning(self) -> bool:
        return self.new != "True"


def compute_status(
    facts: ComponentFacts, *, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The full `status` to write; equal to `previous` when nothing changed."""
    valid = _valid(facts)
    secrets = _secrets(facts)
    reachable = _reachable(facts)
    ready = _ready(facts, valid, secrets, reachable)
    earlier = _by_type(previous)
    conditions = [
        _condition(kind, status, reason, message, facts.generation, earlier.get(kind), now)
        for kind, (status, reason, message) in (
            (READY, ready),
            (VALID, valid),
            (SECRETS_RESOLVED, secrets),
            (BACKEND_REACHABLE, reachable),
        )
    ]
    if facts.stale_pods is not None:
        current = _sidecars_current(facts.stale_pods)
        conditions.append(
            _condition(
                SIDECARS_CURRENT, *current, facts.generation, earlier.get(SIDECARS_CURRENT), now
            )
        )
    status: dict[str, Any] = {"conditions": conditions}
    if facts.stale_pods is not None:
        status["staleSidecars"] = len(facts.stale_pods)
    if facts.generation is not None:
        status["observedGeneration"] = facts.generation
    if facts.config_hash is not None:
        status["configHash"] = facts.config_hash
    return status


def transitions(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[Transition]:
    """Conditions whose status differs from before (a new condition counts when not True)."""
    earlier = _by_type(previous)
    changed: list[Transition] = []
    for condition in current.get("conditions") or []:
        old = earlier.get(condition["type"], {}).get("status")
        if old != condition["status"] and (old is not None or condition["status"] != "True"):
            changed.append(
                Transition(
                    type=condition["type"],
                    old=old,
                    new=condition["status"],
                    reason=condition["reason"],
                    message=condition["message"],
                )
            )
    return changed


def is_ready(status: Mapping[str, Any] | None) -> bool:
    return _by_type(status).get(READY, {}).get("status") == "True"


# --- the four conditions -------------------------------------------------------------------

_Triple = tuple[ConditionStatus, str, str]


def _valid(facts: ComponentFacts) -> _Triple:
    if facts.spec_error is not None:
        return "False", "InvalidSpec", facts.spec_error
    return "True", "Valid", "the spec is valid"


def _secrets(facts: ComponentFacts) -> _Triple:
    if facts.spec_error is not None:
        return "Unknown", "InvalidSpec", "not checked: the spec is invalid"
    if facts.secrets_problem is not None:
        return "False", facts.secrets_problem.reason, facts.secrets_problem.message
    if facts.secret_refs == 0:
        return "True", "NoSecretRefs", "the component references no Secret"
    plural = "reference" if facts.secret_refs == 1 else "references"
    return "True", "Resolved", f"{facts.secret_refs} secretKeyRef {plural} resolved"


def _reachable(facts: ComponentFacts) -> _Triple:
    if facts.spec_error is not None:
        return "Unknown", "InvalidSpec", "not measured: the spec is invalid"
    if facts.secrets_problem is not None:
        return "Unknown", "SecretsUnresolved", "not measured: a secretKeyRef is not resolved"
    if facts.reachability is None:
        return "Unknown", "NotMeasured", "not measured yet"
    return facts.reachability.status, facts.reachability.reason, facts.reachability.message


def _sidecars_current(stale: tuple[str, ...]) -> _Triple:
    if not stale:
        return "True", "Current", "every injected pod in scope runs the current sidecar"
    named = ", ".join(stale[:_MAX_PODS_NAMED]) + (" ..." if len(stale) > _MAX_PODS_NAMED else "")
    return (
        "False",
        "StaleSidecars",
        f"{len(stale)} injected pod(s) in scope run a sidecar of an earlier image or "
        f"configuration ({named}); restart their workloads (kubectl rollout restart) or set "
        'statecar.io/auto-rollout: "true" on them',
    )


def _ready(facts: ComponentFacts, valid: _Triple, secrets: _Triple, reachable: _Triple) -> _Triple:
    for status, reason, message in (valid, secrets):
        if status != "True":
            return "False", reason, message
    if facts.wiring_problem is not None:
        return "False", facts.wiring_problem.reason, facts.wiring_problem.message
    status, reason, message = reachable
    if status == "False":
        return "False", reason, message
    if status == "Unknown":
        return "Unknown", reason, message
    return "True", "Ready", "rendered into the namespace's wiring and the backend answers"


def _condition(
    kind: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    earlier: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    moved = earlier is None or earlier.get("status") != status
    transition = format_time(now) if moved or not earlier else earlier.get("lastTransitionTime")
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:_MAX_MESSAGE],
        "lastTransitionTime": transition or format_time(now),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def _by_type(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    if not status:
        return {}
    conditions: Sequence[Any] = status.get("conditions") or []
    return {c["type"]: c for c in conditions if isinstance(c, Mapping) and "type" in c}
