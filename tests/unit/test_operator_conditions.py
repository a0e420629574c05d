"""A component's status computed from observed facts (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from statecar_operator.cluster.timestamps import format_time
from statecar_operator.reconciliation.conditions import (
    ComponentFacts,
    Problem,
    Reachability,
    compute_status,
    is_ready,
    transitions,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
UP = Reachability("True", "Reachable", "redis:6379 answers PING")
DOWN = Reachability("False", "ConnectionRefused", "redis:6379 refuses connections")


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_healthy_component_is_ready() -> None:
    status = compute_status(
        ComponentFacts(3, secret_refs=1, reachability=UP, config_hash="abc"), previous=None, now=T0
    )
    conditions = by_type(status)
    assert [c["type"] for c in status["conditions"]] == [
        "Ready",
        "Valid",
        "SecretsResolved",
        "BackendReachable",
    ]
    assert conditions["Ready"]["status"] == "True"
    assert conditions["SecretsResolved"]["message"] == "1 secretKeyRef reference resolved"
    assert conditions["BackendReachable"]["reason"] == "Reachable"
    assert status["observedGeneration"] == 3
    assert status["configHash"] == "abc"
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert all(c["lastTransitionTime"] == "2026-01-02T03:04:05Z" for c in status["conditions"])
    assert is_ready(status)


def test_an_unreachable_backend_makes_it_not_ready_with_the_reason() -> None:
    status = compute_status(ComponentFacts(1, reachability=DOWN), previous=None, now=T0)
    conditions = by_type(status)
    assert conditions["BackendReachable"]["status"] == "False"
    assert conditions["Ready"] == {
        **conditions["Ready"],
        "status": "False",
        "reason": "ConnectionRefused",
        "message": "redis:6379 refuses connections",
    }
    assert not is_ready(status)


def test_a_missing_secret_is_reported_and_the_backend_not_measured() -> None:
    facts = ComponentFacts(
        1,
        secrets_problem=Problem("SecretNotFound", "Secret 'redis-auth' does not exist"),
        secret_refs=1,
    )
    conditions = by_type(compute_status(facts, previous=None, now=T0))
    assert conditions["SecretsResolved"]["status"] == "False"
    assert conditions["SecretsResolved"]["reason"] == "SecretNotFound"
    assert conditions["BackendReachable"]["status"] == "Unknown"
    assert conditions["Ready"]["reason"] == "SecretNotFound"


def test_an_invalid_spec() -> None:
    conditions = by_type(
        compute_status(
            ComponentFacts(2, spec_error="spec.metadata[0].name: bad"), previous=None, now=T0
        )
    )
    assert conditions["Valid"]["status"] == "False"
    assert conditions["Valid"]["message"] == "spec.metadata[0].name: bad"
    assert conditions["SecretsResolved"]["status"] == "Unknown"
    assert conditions["Ready"]["reason"] == "InvalidSpec"


def test_a_wiring_problem_blocks_readiness() -> None:
    facts = ComponentFacts(1, wiring_problem=Problem("WiringConflict", "taken"), reachability=UP)
    assert (
        by_type(compute_status(facts, previous=None, now=T0))["Ready"]["reason"] == "WiringConflict"
    )


def test_not_measured_yet_is_unknown() -> None:
    assert (
        by_type(compute_status(ComponentFacts(1), previous=None, now=T0))["Ready"]["status"]
        == "Unknown"
    )


def test_last_transition_time_moves_only_with_the_status() -> None:
    first = compute_status(ComponentFacts(1, reachability=UP), previous=None, now=T0)
    same = compute_status(ComponentFacts(1, reachability=UP), previous=first, now=T1)
    assert same == first
    new_message = Reachability("True", "Reachable", "other:6379 answers PING")
    moved_message = compute_status(
        ComponentFacts(1, reachability=new_message), previous=first, now=T1
    )
    assert by_type(moved_message)["BackendReachable"]["lastTransitionTime"] == format_time(T0)
    down = compute_status(ComponentFacts(1, reachability=DOWN), previous=first, now=T1)
    assert by_type(down)["BackendReachable"]["lastTransitionTime"] == format_time(T1)
    assert by_type(down)["Valid"]["lastTransitionTime"] == format_time(T0)


def test_transitions_are_what_deserves_an_event() -> None:
    first = compute_status(ComponentFacts(1, reachability=UP), previous=None, now=T0)
    assert transitions(None, first) == []  # a new component that starts healthy says nothing
    down = compute_status(ComponentFacts(1, reachability=DOWN), previous=first, now=T1)
    changes = {t.type: t for t in transitions(first, down)}
    assert set(changes) == {"Ready", "BackendReachable"}
    assert changes["BackendReachable"].warning
    assert changes["BackendReachable"].old == "True"
    back = compute_status(ComponentFacts(1, reachability=UP), previous=down, now=T1)
    assert {t.type: t.warning for t in transitions(down, back)} == {
        "Ready": False,
        "BackendReachable": False,
    }
    failing_from_start = compute_status(ComponentFacts(1, reachability=DOWN), previous=None, now=T0)
    assert {t.type for t in transitions(None, failing_from_start)} == {"Ready", "BackendReachable"}


def test_long_messages_are_cut_to_the_api_limit() -> None:
    huge = Reachability("False", "X", "m" * 40000)
    status = compute_status(ComponentFacts(1, reachability=huge), previous=None, now=T0)
    assert len(by_type(status)["BackendReachable"]["message"]) == 32768
