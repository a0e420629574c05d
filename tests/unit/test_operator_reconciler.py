"""
The reconciler against an in-memory API server: wiring rendered, secrets resolved (and missing),
statuses written only on change, the last component's deletion removing the Secret, and no write
at all from a replica that does not hold the Lease.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from statecar_contract.components import ResolvedComponent
from statecar_contract.wiring import WIRING_FILE, app_secret_name, decode
from statecar_operator.cluster.events import EventRecorder, EventType, ObjectRef
from statecar_operator.cluster.kube import ConflictError
from statecar_operator.reconciliation.component_index import (
    ComponentEntry,
    component_entry,
    merged,
)
from statecar_operator.reconciliation.conditions import Reachability
from statecar_operator.reconciliation.reconciler import Reconciler, View
from statecar_operator.reconciliation.wiring_secret import WIRING_LABELS

UP = Reachability("True", "Reachable", "answers PING")
DOWN = Reachability("False", "ConnectionRefused", "refuses connections")


class FakeCluster:
    """Secrets and component statuses, with uids and resourceVersions like the API server's."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[str] = []
        self._ids = itertools.count(1)

    def put_secret(
        self, namespace: str, name: str, data: Mapping[str, str], **metadata: Any
    ) -> None:
        self.secrets[(namespace, name)] = {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"u{next(self._ids)}",
                "resourceVersion": "1",
                **metadata,
            },
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.secrets.get((namespace, name))
        return copy.deepcopy(found) if found else None

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.secrets:
            raise ConflictError(409, "AlreadyExists", "exists")
        stored = copy.deepcopy(dict(body))
        stored["metadata"].update(uid=f"u{next(self._ids)}", resourceVersion="1")
        self.secrets[key] = stored
        self.writes.append(f"create {key[1]}")
        return copy.deepcopy(stored)

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        current = self.secrets[(namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", "stale")
        stored = copy.deepcopy(dict(body))
        stored["metadata"]["uid"] = current["metadata"]["uid"]
        stored["metadata"]["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
        self.secrets[(namespace, name)] = stored
        self.writes.append(f"replace {name}")
        return copy.deepcopy(stored)

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        current = self.secrets.get((namespace, name))
        if current is not None and (uid is None or current["metadata"]["uid"] == uid):
            del self.secrets[(namespace, name)]
            self.writes.append(f"delete {name}")

    async def list_wiring_secrets(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {
            name: copy.deepcopy(body)
            for (ns, name), body in self.secrets.items()
            if ns == namespace
            and all(
                (body["metadata"].get("labels") or {}).get(k) == v for k, v in WIRING_LABELS.items()
            )
        }

    async def patch_component_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        self.statuses[(namespace, name)] = copy.deepcopy(dict(status))
        self.writes.append(f"status {name}")

    def wiring(self, namespace: str = "shop") -> list[ResolvedComponent]:
        body = self.secrets[(namespace, "statecar-wiring")]
        return list(decode(base64.b64decode(body["data"][WIRING_FILE])).components)

    def condition(self, name: str, kind: str, namespace: str = "shop") -> dict[str, Any]:
        return next(c for c in self.statuses[(namespace, name)]["conditions"] if c["type"] == kind)


class RecordingEvents(EventRecorder):
    def __init__(self) -> None:
        super().__init__(instance="test", min_interval=0)
        self.recorded: list[tuple[str, EventType, str, str]] = []

    def record(self, ref: ObjectRef, *, type: EventType, reason: str, message: str) -> bool:
        self.recorded.append((ref.name, type, reason, message))
        return super().record(ref, type=type, reason=reason, message=message)


def component(
    name: str, spec: dict[str, Any], *, uid: str | None = None, generation: int = 1
) -> ComponentEntry:
    return component_entry(
        {
            "apiVersion": "statecar.io/v1alpha1",
            "kind": "StateStoreComponent",
            "metadata": {
                "name": name,
                "namespace": "shop",
                "uid": uid or f"uid-{name}",
                "generation": generation,
            },
            "spec": spec,
        }
    )


ORDERS = {
    "type": "state.redis",
    "metadata": [
        {"name": "redisHost", "value": "redis:6379"},
        {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "password"}},
    ],
    "concurrency": "first-write",
}
SESSIONS = {"type": "state.in-memory"}


class Harness:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.components: dict[str, list[ComponentEntry]] = {"shop": []}
        self.reach: dict[str, Reachability] = {}
        self.leader = True
        self.warm = True
        self.events = RecordingEvents()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.reconciler = Reconciler(
            api=self.cluster,
            view=View(
                components=lambda ns: self.components.get(ns, []),
                component_namespaces=lambda: {ns for ns, items in self.components.items() if items},
                wiring_namespaces=lambda: {
                    ns for ns, name in self.cluster.secrets if name == "statecar-wiring"
                },
            ),
            measure=self.measure,
            events=self.events,
            is_leader=lambda: self.leader,
            is_warm=lambda: self.warm,
            resync_interval=3600,
            clock=lambda: self.now,
        )

    async def measure(self, resolved: ResolvedComponent) -> Reachability:
        return self.reach.get(resolved.name, UP)

    def set_components(self, *entries: ComponentEntry) -> None:
        # What kopf's index would hold, including the statuses written so far.
        self.components["shop"] = [
            ComponentEntry(
                **{**e.__dict__, "status": self.cluster.statuses.get(("shop", e.name), {})}
            )
            for e in entries
        ]

    async def reconcile(self) -> None:
        self.set_components(*self.components["shop"])
        await self.reconciler.reconcile_namespace("shop")


@pytest.fixture
def h() -> Harness:
    return Harness()


async def test_components_are_rendered_into_the_wiring_with_secrets_resolved(h: Harness) -> None:
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret"})
    h.set_components(component("orders", ORDERS), component("sessions", SESSIONS))
    await h.reconcile()

    wiring = {c.name: c for c in h.cluster.wiring()}
    assert wiring["orders"].metadata == {"redisHost": "redis:6379", "redisPassword": "s3cret"}
    assert wiring["orders"].concurrency == "first-write"
    assert set(wiring) == {"orders", "sessions"}
    assert h.cluster.condition("orders", "Ready")["status"] == "True"
    assert h.cluster.condition("orders", "SecretsResolved")["reason"] == "Resolved"
    status = h.cluster.statuses[("shop", "orders")]
    assert status["observedGeneration"] == 1
    secret = h.cluster.secrets[("shop", "statecar-wiring")]
    assert status["configHash"] == secret["metadata"]["annotations"]["statecar.io/config-hash"]
    assert ("orders", "Normal", "WiringUpdated") in [e[:3] for e in h.events.recorded]


async def test_nothing_is_written_when_nothing_changed(h: Harness) -> None:
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret"})
    h.set_components(component("orders", ORDERS))
    await h.reconcile()
    h.cluster.writes.clear()
    h.now += timedelta(minutes=1)
    await h.reconcile()
    assert h.cluster.writes == []


async def test_a_missing_secret_is_a_condition_and_an_event_not_a_crash(h: Harness) -> None:
    h.set_components(component("orders", ORDERS), component("sessions", SESSIONS))
    await h.reconcile()
    resolved = h.cluster.condition("orders", "SecretsResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "SecretNotFound")
    assert "redis-auth" in resolved["message"]
    assert "spec.metadata[1] (redisPassword)" in resolved["message"]
    assert h.cluster.condition("orders", "Ready")["status"] == "False"
    assert [c.name for c in h.cluster.wiring()] == ["sessions"]  # the others still work
    assert ("orders", "Warning", "SecretNotFound") in [e[:3] for e in h.events.recorded]


async def test_a_missing_key_lists_the_keys_there_are(h: Harness) -> None:
    h.cluster.put_secret("shop", "redis-auth", {"pass": "x"})
    h.set_components(component("orders", ORDERS))
    await h.reconcile()
    resolved = h.cluster.condition("orders", "SecretsResolved")
    assert resolved["reason"] == "SecretKeyNotFound"
    assert "(keys: pass)" in resolved["message"]


async def test_a_secret_value_the_backend_refuses_is_that_components_problem_only(
    h: Harness,
) -> None:
    # redisPort comes from a Secret holding "abc": resolve() refuses it (RedisSettings), which
    # must not fail the namespace pass: the other component still gets its wiring and status.
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret", "port": "abc"})
    spec = {
        **ORDERS,
        "metadata": [
            *ORDERS["metadata"],
            {"name": "redisPort", "secretKeyRef": {"name": "redis-auth", "key": "port"}},
        ],
    }
    h.set_components(component("orders", spec), component("sessions", SESSIONS))
    await h.reconcile()
    resolved = h.cluster.condition("orders", "SecretsResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "SecretValueInvalid")
    assert "spec.metadata.redisPort" in resolved["message"]
    assert "abc" not in resolved["message"]  # a value from a Secret is never echoed
    assert h.cluster.condition("orders", "Ready")["status"] == "False"
    assert [c.name for c in h.cluster.wiring()] == ["sessions"]
    assert h.cluster.condition("sessions", "Ready")["status"] == "True"
    assert ("orders", "Warning", "SecretValueInvalid") in [e[:3] for e in h.events.recorded]
    # Fixing the Secret heals it on the next pass.
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret", "port": "6380"})
    await h.reconcile()
    assert h.cluster.condition("orders", "SecretsResolved")["reason"] == "Resolved"
    assert {c.name for c in h.cluster.wiring()} == {"orders", "sessions"}


async def test_a_rotated_password_reaches_the_wiring(h: Harness) -> None:
    h.cluster.put_secret("shop", "redis-auth", {"password": "old"})
    h.set_components(component("orders", ORDERS))
    await h.reconcile()
    first_hash = h.cluster.statuses[("shop", "orders")]["configHash"]
    h.cluster.put_secret("shop", "redis-auth", {"password": "new"})
    await h.reconcile()
    assert h.cluster.wiring()[0].metadata["redisPassword"] == "new"
    assert h.cluster.statuses[("shop", "orders")]["configHash"] != first_hash


async def test_the_salt_survives_updates(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))
    await h.reconcile()
    salt = h.cluster.secrets[("shop", "statecar-wiring")]["metadata"]["annotations"][
        "statecar.io/wiring-salt"
    ]
    h.set_components(component("sessions", SESSIONS), component("other", SESSIONS))
    await h.reconcile()
    after = h.cluster.secrets[("shop", "statecar-wiring")]["metadata"]["annotations"][
        "statecar.io/wiring-salt"
    ]
    assert after == salt


async def test_deleting_the_last_component_deletes_the_wiring(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))
    await h.reconcile()
    assert ("shop", "statecar-wiring") in h.cluster.secrets
    h.set_components()
    await h.reconcile()
    assert ("shop", "statecar-wiring") not in h.cluster.secrets


async def test_a_component_being_deleted_leaves_the_wiring(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS), component("other", SESSIONS))
    await h.reconcile()
    going = component("other", SESSIONS)
    h.set_components(
        component("sessions", SESSIONS), ComponentEntry(**{**going.__dict__, "deleting": True})
    )
    await h.reconcile()
    assert [c.name for c in h.cluster.wiring()] == ["sessions"]


async def test_a_foreign_secret_with_our_name_is_never_overwritten(h: Harness) -> None:
    h.cluster.put_secret("shop", "statecar-wiring", {"mine": "yes"})
    h.set_components(component("sessions", SESSIONS))
    await h.reconcile()
    assert h.cluster.secrets[("shop", "statecar-wiring")]["data"] == {
        "mine": base64.b64encode(b"yes").decode()
    }
    ready = h.cluster.condition("sessions", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WiringConflict")
    h.set_components()
    await h.reconcile()
    assert ("shop", "statecar-wiring") in h.cluster.secrets  # not ours to delete either


async def test_an_invalid_component_is_reported_and_kept_out_of_the_wiring(h: Harness) -> None:
    bad = component(
        "bad", {"type": "state.redis", "metadata": [{"name": "redisHots", "value": "x"}]}
    )
    h.set_components(bad, component("sessions", SESSIONS))
    await h.reconcile()
    valid = h.cluster.condition("bad", "Valid")
    assert valid["status"] == "False"
    assert "redisHots" in valid["message"]
    assert [c.name for c in h.cluster.wiring()] == ["sessions"]


async def test_backend_reachability_flips_and_keeps_transition_times(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))
    await h.reconcile()
    up_since = h.cluster.condition("sessions", "BackendReachable")["lastTransitionTime"]
    h.now += timedelta(minutes=1)
    h.reach["sessions"] = DOWN
    await h.reconcile()
    down = h.cluster.condition("sessions", "BackendReachable")
    assert (down["status"], down["reason"]) == ("False", "ConnectionRefused")
    assert down["lastTransitionTime"] != up_since
    assert h.cluster.condition("sessions", "Valid")["lastTransitionTime"] == up_since
    assert ("sessions", "Warning", "ConnectionRefused") in [e[:3] for e in h.events.recorded]
    h.reach["sessions"] = UP
    await h.reconcile()
    assert h.cluster.condition("sessions", "BackendReachable")["status"] == "True"


async def test_a_stale_index_does_not_cause_a_second_write(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))
    await h.reconciler.reconcile_namespace("shop")  # index keeps the empty status (stale)
    h.cluster.writes.clear()
    h.now += timedelta(minutes=1)
    await h.reconciler.reconcile_namespace("shop")
    assert h.cluster.writes == []


async def test_a_follower_writes_nothing(h: Harness) -> None:
    h.leader = False
    h.set_components(component("sessions", SESSIONS))
    await h.reconcile()
    assert h.cluster.writes == []


async def test_watch_events_mark_namespaces_only_when_something_relevant_changed(
    h: Harness,
) -> None:
    entry = component("sessions", SESSIONS)
    h.reconciler.component_changed(entry, deleted=False)
    assert h.reconciler._dirty == {"shop"}
    h.reconciler._dirty.clear()
    with_status = ComponentEntry(**{**entry.__dict__, "status": {"conditions": []}})
    h.reconciler.component_changed(with_status, deleted=False)  # a status write: no news
    assert h.reconciler._dirty == set()
    h.reconciler.component_changed(component("sessions", SESSIONS, generation=2), deleted=False)
    assert h.reconciler._dirty == {"shop"}
    h.reconciler._dirty.clear()
    h.reconciler.component_changed(entry, deleted=True)
    assert h.reconciler._dirty == {"shop"}


async def test_our_own_wiring_write_is_no_news_but_someone_elses_is(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))
    await h.reconcile()
    written = h.cluster.secrets[("shop", "statecar-wiring")]["metadata"]["annotations"][
        "statecar.io/config-hash"
    ]
    h.reconciler._dirty.clear()
    h.reconciler.wiring_secret_changed("shop", "statecar-wiring", written, deleted=False)
    assert h.reconciler._dirty == set()
    h.reconciler.wiring_secret_changed("shop", "statecar-wiring", "edited", deleted=False)
    assert h.reconciler._dirty == {"shop"}
    h.reconciler._dirty.clear()
    h.reconciler.wiring_secret_changed("shop", "statecar-wiring", written, deleted=True)
    assert h.reconciler._dirty == {"shop"}


async def test_the_loop_reconciles_marked_namespaces_while_leading(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))
    task = asyncio.create_task(h.reconciler.run())
    try:
        h.reconciler.mark("shop")
        for _ in range(100):
            if ("shop", "statecar-wiring") in h.cluster.secrets:
                break
            await asyncio.sleep(0.02)
        assert ("shop", "statecar-wiring") in h.cluster.secrets
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_nothing_happens_before_every_component_is_indexed(h: Harness) -> None:
    # A wiring Secret whose components are not indexed yet must not look orphaned.
    h.cluster.put_secret(
        "shop",
        "statecar-wiring",
        {"components.json": "{}"},
        labels={"app.kubernetes.io/managed-by": "statecar"},
    )
    h.warm = False
    task = asyncio.create_task(h.reconciler.run())
    try:
        h.reconciler.mark("shop")
        await asyncio.sleep(0.3)
        assert h.cluster.writes == []
        h.set_components(component("sessions", SESSIONS))
        h.warm = True
        for _ in range(100):
            if h.cluster.writes:
                break
            await asyncio.sleep(0.02)
        assert h.cluster.writes[0] == "replace statecar-wiring"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_conflict_marks_the_namespace_again(h: Harness) -> None:
    h.set_components(component("sessions", SESSIONS))

    async def conflict(namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        raise ConflictError(409, "AlreadyExists", "raced")

    h.cluster.create_secret = conflict  # type: ignore[method-assign]  # another writer wins the race
    h.reconciler.mark("shop")
    await h.reconciler.run_pass()
    assert h.reconciler._dirty == {"shop"}


async def test_encryption_keys_reach_the_wiring_with_their_secret_names(h: Harness) -> None:
    # daprd tags every encrypted value with the key's secret name, so the sidecar needs it too.
    new, old = "ab" * 32, "cd" * 16
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret"})
    h.cluster.put_secret("shop", "state-key-2", {"key": new})
    h.cluster.put_secret("shop", "state-key-1", {"key": old})
    spec = {
        **ORDERS,
        "metadata": [
            *ORDERS["metadata"],
            {"name": "primaryEncryptionKey", "secretKeyRef": {"name": "state-key-2", "key": "key"}},
            {
                "name": "secondaryEncryptionKey",
                "secretKeyRef": {"name": "state-key-1", "key": "key"},
            },
        ],
    }
    h.set_components(component("orders", spec))
    await h.reconcile()
    orders = h.cluster.wiring()[0]
    assert orders.key_names == {
        "primaryEncryptionKey": "state-key-2",
        "secondaryEncryptionKey": "state-key-1",
    }
    keys = orders.encryption()
    assert keys is not None
    assert (keys.primary.name, keys.primary.key) == ("state-key-2", bytes.fromhex(new))
    assert keys.secondary is not None
    assert (keys.secondary.name, keys.secondary.key) == ("state-key-1", bytes.fromhex(old))
    # A key AES cannot take is that component's problem, named, never echoed.
    h.cluster.put_secret("shop", "state-key-2", {"key": "abc"})
    await h.reconcile()
    resolved = h.cluster.condition("orders", "SecretsResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "SecretValueInvalid")
    assert "spec.metadata.primaryEncryptionKey" in resolved["message"]
    assert "abc" not in resolved["message"]


async def test_scoped_credentials_go_only_to_their_apps_secrets(h: Harness) -> None:
    """Issue 11.1: the shared Secret holds only unscoped components; each app id named in a
    scope gets a Secret with exactly its components; a scope removed takes its Secret away."""
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret"})
    h.set_components(
        component("orders", {**ORDERS, "scopes": ["checkout", "cart"]}),
        component("sessions", SESSIONS),
    )
    await h.reconcile()

    def content(name: str) -> dict[str, ResolvedComponent]:
        body = h.cluster.secrets[("shop", name)]
        return {c.name: c for c in decode(base64.b64decode(body["data"][WIRING_FILE])).components}

    assert set(content("statecar-wiring")) == {"sessions"}
    for app in ("checkout", "cart"):
        orders = content(app_secret_name(app))
        assert set(orders) == {"orders"}
        assert orders["orders"].metadata["redisPassword"] == "s3cret"
        owners = h.cluster.secrets[("shop", app_secret_name(app))]["metadata"]["ownerReferences"]
        assert [o["name"] for o in owners] == ["orders"]
    status = h.cluster.statuses[("shop", "orders")]
    shared = h.cluster.secrets[("shop", "statecar-wiring")]
    assert status["configHash"]
    assert status["configHash"] != shared["metadata"]["annotations"]["statecar.io/config-hash"]

    # cart leaves the scopes: its Secret goes; checkout's stays, nothing else is touched.
    h.cluster.writes.clear()
    h.set_components(
        component("orders", {**ORDERS, "scopes": ["checkout"]}, generation=2),
        component("sessions", SESSIONS),
    )
    await h.reconcile()
    assert ("shop", app_secret_name("cart")) not in h.cluster.secrets
    assert f"delete {app_secret_name('cart')}" in h.cluster.writes
    assert set(content(app_secret_name("checkout"))) == {"orders"}

    # Unscoped now: it moves to the shared Secret and no per-app Secret is left.
    h.set_components(component("orders", ORDERS, generation=3), component("sessions", SESSIONS))
    await h.reconcile()
    assert set(content("statecar-wiring")) == {"orders", "sessions"}
    assert [n for ns, n in h.cluster.secrets if n.startswith("statecar-wiring-")] == []


async def test_a_foreign_secret_with_an_apps_wiring_name_is_never_overwritten(h: Harness) -> None:
    h.cluster.put_secret("shop", app_secret_name("checkout"), {"mine": "x"})
    h.set_components(component("sessions", {**SESSIONS, "scopes": ["checkout"]}))
    await h.reconcile()
    assert h.cluster.secrets[("shop", app_secret_name("checkout"))]["data"].keys() == {"mine"}
    ready = h.cluster.condition("sessions", "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WiringConflict")
    assert app_secret_name("checkout") in ready["message"]


def dapr_component(name: str, spec: dict[str, Any], **extra: Any) -> ComponentEntry:
    return component_entry(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1},
            "spec": spec,
            **extra,
        }
    )


DAPR_ORDERS = {
    "type": "state.redis",
    "version": "v1",
    "metadata": [
        {"name": "redisHost", "value": "redis:6379"},
        {"name": "redisPassword", "secretKeyRef": {"name": "redis-auth", "key": "password"}},
    ],
}


async def test_a_dapr_component_is_wired_like_ours_but_its_status_is_left_alone(
    h: Harness,
) -> None:
    """Issue 10.5: Dapr's own state.* Components are wired (secrets resolved, scopes kept,
    owned for garbage collection) and reported with Events, never with a status write."""
    h.cluster.put_secret("shop", "redis-auth", {"password": "s3cret"})
    entry = dapr_component("dapr-orders", DAPR_ORDERS, scopes=["checkout"])
    assert entry.is_dapr
    h.set_components(entry, component("sessions", SESSIONS))
    await h.reconcile()
    body = h.cluster.secrets[("shop", app_secret_name("checkout"))]
    (wired,) = decode(base64.b64decode(body["data"][WIRING_FILE])).components
    assert (wired.name, wired.metadata["redisPassword"]) == ("dapr-orders", "s3cret")
    assert wired.key_prefix == "appid"
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["apiVersion"], owner["kind"], owner["name"]) == (
        "dapr.io/v1alpha1",
        "Component",
        "dapr-orders",
    )
    assert ("shop", "dapr-orders") not in h.cluster.statuses
    assert ("shop", "sessions") in h.cluster.statuses
    # A missing Secret: an Event on the Dapr Component, still no status write.
    h.cluster.secrets.pop(("shop", "redis-auth"))
    h.set_components(dapr_component("dapr-orders", DAPR_ORDERS, scopes=["checkout"]))
    await h.reconcile()
    assert ("dapr-orders", "Warning", "SecretNotFound") in [e[:3] for e in h.events.recorded]
    assert ("shop", "dapr-orders") not in h.cluster.statuses


def test_a_dapr_component_on_another_secret_store_is_refused_by_name() -> None:
    entry = dapr_component("vaulted", DAPR_ORDERS, auth={"secretStore": "vault"})
    assert entry.spec is None
    assert entry.error is not None
    assert "auth.secretStore" in entry.error
    assert dapr_component("default", DAPR_ORDERS, auth={"secretStore": "kubernetes"}).spec


def test_ours_wins_over_a_dapr_component_of_the_same_name() -> None:
    ours = component("orders", SESSIONS)
    theirs = dapr_component("orders", DAPR_ORDERS)
    other = dapr_component("other", DAPR_ORDERS)
    assert merged([ours], [theirs, other]) == [ours, other]
