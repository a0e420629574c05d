"""Lease-based leader election: the pure decision and the elector driven by fake clocks."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from statecar_operator.cluster.kube import ConflictError
from statecar_operator.cluster.leader import LeaderElector, decide, micro_time, release_body

NOW = datetime(2026, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def lease(holder: str | None, *, rv: str = "7", transitions: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": "statecar-operator", "namespace": "ops", "resourceVersion": rv},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-05-06T07:00:00.000000Z",
            "renewTime": "2026-05-06T07:08:00.000000Z",
            "leaseTransitions": transitions,
        },
    }


def decision(current: dict[str, Any] | None, *, expired: bool = False) -> Any:
    return decide(
        current,
        namespace="ops",
        name="statecar-operator",
        identity="me",
        lease_duration=15,
        expired=expired,
        now=NOW,
    )


def test_micro_time_format() -> None:
    assert micro_time(NOW) == "2026-05-06T07:08:09.123456Z"


def test_no_lease_creates_one() -> None:
    d = decision(None)
    assert d.action == "create"
    assert d.body["spec"]["holderIdentity"] == "me"
    assert d.body["spec"]["leaseTransitions"] == 0


def test_our_lease_is_renewed_keeping_acquire_time() -> None:
    d = decision(lease("me"))
    assert d.action == "renew"
    assert d.body["spec"]["renewTime"] == micro_time(NOW)
    assert d.body["spec"]["acquireTime"] == "2026-05-06T07:00:00.000000Z"
    assert d.body["metadata"]["resourceVersion"] == "7"


def test_someone_elses_live_lease_is_followed() -> None:
    assert decision(lease("other")).action == "follow"


def test_an_expired_or_released_lease_is_taken_over() -> None:
    for current in (lease("other"), lease(None), lease("")):
        d = decision(current, expired=current["spec"]["holderIdentity"] == "other")
        assert d.action == "acquire"
        assert d.body["spec"]["holderIdentity"] == "me"
        assert d.body["spec"]["leaseTransitions"] == 4
        assert d.body["metadata"]["resourceVersion"] == "7"


def test_release_hands_the_lease_back() -> None:
    body = release_body(lease("me"), now=NOW)
    assert body["spec"]["holderIdentity"] is None
    assert body["spec"]["leaseDurationSeconds"] == 1
    assert body["metadata"]["resourceVersion"] == "7"


class FakeLeases:
    """An in-memory Lease with resourceVersion checks, like the API server's."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail = False

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.fail:
            raise OSError("apiserver unreachable")
        return copy.deepcopy(self.lease)

    def _store(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.lease = stored
        return copy.deepcopy(stored)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise ConflictError(409, "AlreadyExists", "exists")
        return self._store(body)

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        assert self.lease is not None
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", "stale")
        return self._store(body)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def elector(
    store: FakeLeases, clock: Clock, identity: str, changes: list[bool] | None = None
) -> LeaderElector:
    return LeaderElector(
        store,
        namespace="ops",
        name="statecar-operator",
        identity=identity,
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        on_change=(changes.append if changes is not None else lambda leading: None),
        clock=clock,
        wallclock=lambda: NOW,
    )


async def test_one_of_two_replicas_leads_and_the_other_takes_over_after_expiry() -> None:
    store, clock = FakeLeases(), Clock()
    a_changes: list[bool] = []
    a, b = elector(store, clock, "a", a_changes), elector(store, clock, "b")
    await a.step()
    await b.step()
    assert a.is_leader
    assert not b.is_leader
    assert b.holder == "a"

    clock.now += 5
    await a.step()  # renews
    await b.step()  # sees a new renewTime: the expiry clock restarts
    assert a.is_leader
    assert not b.is_leader

    # a dies (stops renewing). b waits a full lease duration from its last observation.
    clock.now += 14
    await b.step()
    assert not b.is_leader
    clock.now += 2
    await b.step()
    assert b.is_leader
    assert store.lease is not None
    assert store.lease["spec"]["leaseTransitions"] == 1

    # a comes back: it sees b's Lease and follows.
    await a.step()
    assert not a.is_leader
    assert a_changes == [True, False]


async def test_a_leader_that_cannot_renew_steps_down_before_the_lease_expires() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, clock, "a")
    await a.step()
    assert a.is_leader
    store.fail = True
    clock.now += 9
    await a.step()
    assert a.is_leader  # within the renew deadline
    clock.now += 2
    await a.step()
    assert not a.is_leader  # 11s > 10s deadline, still before the 15s lease expiry


async def test_release_lets_a_follower_take_over_at_once() -> None:
    store, clock = FakeLeases(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    await a.step()
    await b.step()
    await a.release()
    assert not a.is_leader
    await a.step()  # shutting down: a never takes it back
    assert not a.is_leader
    await b.step()
    assert b.is_leader


async def test_a_lost_race_is_not_leadership() -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, clock, "a")
    store.lease = None

    async def racing_create(namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        raise ConflictError(409, "AlreadyExists", "someone was faster")

    store.create_lease = racing_create  # type: ignore[method-assign]  # simulate the other replica winning
    await a.step()
    assert not a.is_leader


@pytest.mark.parametrize("identity", ["a"])
async def test_renewal_uses_optimistic_concurrency(identity: str) -> None:
    store, clock = FakeLeases(), Clock()
    a = elector(store, clock, identity)
    await a.step()
    assert store.lease is not None
    store.lease["metadata"]["resourceVersion"] = "999"  # someone else wrote in between
    store.lease["spec"]["holderIdentity"] = "b"
    store.lease["spec"]["renewTime"] = "later"
    await a.step()
    assert not a.is_leader
