"""
The operator end to end, part 2: reconciling components.

Runs after parts 1-1 on the fixtures they share (`conftest.py`).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    OperatorProcess,
    condition,
    wait_for,
)
from tests.e2e.test_operator_e2e.helpers import (
    LIFECYCLE,
    OUTAGE_NOTICED,
    PASSWORD,
    REACT,
    SECRETS,
    SHOP,
    WIRING,
    component_manifest,
    entry,
    timing,
    wait_condition,
    wait_event,
    wired,
    wiring_document_of,
)
from tests.support.redis_server import RedisProcess

from statecar_contract.wiring import app_secret_name

pytestmark = pytest.mark.e2e


def test_component_on_real_redis_becomes_ready(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """Ready/BackendReachable measured against the real Redis, observedGeneration set, the wiring
    Secret rendered with the resolved password, and kubectl's printer columns tell it."""
    generation = orders["metadata"]["generation"]
    status = orders["status"]
    assert status["observedGeneration"] == generation
    for kind in ("Ready", "Valid", "SecretsResolved", "BackendReachable"):
        found = condition(orders, kind)
        assert found.get("status") == "True", found
        assert found["observedGeneration"] == generation
    reachable = condition(orders, "BackendReachable")
    assert reachable["reason"] == "Reachable"
    assert redis.address in reachable["message"]

    # orders is scoped to checkout, cart and web: it is in each of their Secrets (which it owns)
    # and not in the namespace's shared one.
    shared = api.secret(SHOP, WIRING)
    assert shared is not None
    assert orders["metadata"]["uid"] in {o["uid"] for o in shared["metadata"]["ownerReferences"]}
    for app in ("checkout", "cart", "web"):
        secret = api.secret(SHOP, app_secret_name(app))
        assert secret is not None, app
        assert secret["metadata"]["annotations"]["statecar.io/app-id"] == app
        owners = {o["uid"] for o in secret["metadata"].get("ownerReferences") or []}
        assert owners == {orders["metadata"]["uid"]}
    assert "orders" not in wiring_document_of(shared)
    assert status["configHash"]
    rendered = wired(api, SHOP)["orders"]
    assert rendered["metadata"] == {"redisHost": redis.address, "redisPassword": PASSWORD}
    assert (rendered["concurrency"], rendered["consistency"]) == ("first-write", "strong")
    assert rendered["scopes"] == ["checkout", "cart", "web"]

    table = cluster.kubectl("get", "ssc", "-n", SHOP, "-o", "wide").stdout
    header, row = table.splitlines()[0].split(), table.splitlines()[1].split()
    assert header == [
        "NAME",
        "TYPE",
        "CONCURRENCY",
        "CONSISTENCY",
        "READY",
        "REASON",
        "STALE",  # this operator watches injected pods (part 5e)
        "AGE",
    ]
    assert row[:6] == ["orders", "state.redis", "first-write", "strong", "True", "Ready"]
    wait_event(api, SHOP, "orders", "WiringUpdated")


def test_stopped_redis_flips_backend_reachable_and_back(
    api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """Stopping the Redis turns BackendReachable (and Ready) False with a reason and a Warning
    Event within a bounded time; starting it again turns them True."""
    started = time.monotonic()
    redis.stop()
    try:
        down = wait_condition(
            api, SHOP, "orders", "BackendReachable", "False", timeout=OUTAGE_NOTICED
        )
        timing("BackendReachable False after stopping Redis", time.monotonic() - started)
        reachable = condition(down, "BackendReachable")
        assert reachable["reason"] == "ConnectionRefused", reachable
        assert redis.address in reachable["message"]
        assert condition(down, "Ready")["status"] == "False"
        event = wait_event(api, SHOP, "orders", "ConnectionRefused")
        assert event["type"] == "Warning"
        assert redis.address in event["message"]
    finally:
        redis.start()
    started = time.monotonic()
    up = wait_condition(api, SHOP, "orders", "BackendReachable", "True", timeout=OUTAGE_NOTICED)
    timing("BackendReachable True after restarting Redis", time.monotonic() - started)
    assert condition(up, "Ready")["status"] == "True"


def test_missing_secret_is_a_condition_and_an_event_not_a_crash(
    cluster: LocalCluster, api: Api, operator: OperatorProcess, webhooks: str, redis: RedisProcess
) -> None:
    """A secretKeyRef to a Secret that does not exist: SecretsResolved=False with the reason and
    a Warning Event, the operator keeps serving; creating the Secret makes the component Ready."""
    ghost = component_manifest(
        "ghost",
        SECRETS,
        {
            "type": "state.redis",
            "metadata": [
                entry("redisHost", redis.address),
                {
                    "name": "redisPassword",
                    "secretKeyRef": {"name": "ghost-auth", "key": "password"},
                },
            ],
        },
    )
    cluster.apply(ghost)
    pending = wait_condition(api, SECRETS, "ghost", "SecretsResolved", "False")
    resolved = condition(pending, "SecretsResolved")
    assert resolved["reason"] == "SecretNotFound", resolved
    assert "ghost-auth" in resolved["message"]
    assert "spec.metadata[1]" in resolved["message"]
    assert condition(pending, "Ready")["status"] == "False"
    assert condition(pending, "BackendReachable")["status"] == "Unknown"
    event = wait_event(api, SECRETS, "ghost", "SecretNotFound")
    assert event["type"] == "Warning"
    assert "ghost-auth" in event["message"]
    assert operator.running
    assert operator.healthz() == 200
    assert operator.readyz()["ready"] is True
    # Nothing unresolved is rendered: the sidecars would get a component without its password.
    assert "ghost" not in wired(api, SECRETS)

    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "ghost-auth",
        "-n",
        SECRETS,
        f"--from-literal=password={PASSWORD}",
    )
    ready = wait_condition(api, SECRETS, "ghost", "Ready", "True")
    assert condition(ready, "SecretsResolved")["reason"] == "Resolved"
    assert wired(api, SECRETS)["ghost"]["metadata"]["redisPassword"] == PASSWORD


def test_rotated_password_reaches_the_wiring_and_deleted_components_leave_it(
    cluster: LocalCluster, api: Api, webhooks: str, redis: RedisProcess
) -> None:
    """Changing the referenced Secret re-renders the wiring (and the measurement uses the new
    password); deleting a component removes it from the wiring; deleting the last one deletes
    the wiring Secret."""
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "life-auth",
        "-n",
        LIFECYCLE,
        f"--from-literal=password={PASSWORD}",
    )
    cluster.apply(
        [
            component_manifest(
                "alpha",
                LIFECYCLE,
                {
                    "type": "state.redis",
                    "metadata": [
                        entry("redisHost", redis.address),
                        {
                            "name": "redisPassword",
                            "secretKeyRef": {"name": "life-auth", "key": "password"},
                        },
                    ],
                },
            ),
            component_manifest("beta", LIFECYCLE, {"type": "state.in-memory"}),
        ]
    )
    wait_condition(api, LIFECYCLE, "alpha", "Ready", "True")
    wait_condition(api, LIFECYCLE, "beta", "Ready", "True")
    assert wired(api, LIFECYCLE)["alpha"]["metadata"]["redisPassword"] == PASSWORD

    rotated = cluster.kubectl(
        "create",
        "secret",
        "generic",
        "life-auth",
        "-n",
        LIFECYCLE,
        "--from-literal=password=rotated-password",
        "--dry-run=client",
        "-o",
        "yaml",
    ).stdout
    started = time.monotonic()
    cluster.apply(rotated)
    wait_for(
        "the rotated password in the wiring Secret",
        lambda: wired(api, LIFECYCLE).get("alpha", {}).get("metadata", {}).get("redisPassword"),
        lambda password: password == "rotated-password",
        timeout=REACT,
    )
    timing("rotated password in the wiring", time.monotonic() - started)
    # This Redis still wants the old password: the operator measures with what it rendered.
    refused = wait_condition(api, LIFECYCLE, "alpha", "BackendReachable", "False")
    assert condition(refused, "BackendReachable")["reason"] == "AuthenticationFailed"

    before = api.secret(LIFECYCLE, WIRING)
    assert before is not None
    hash_before = before["metadata"]["annotations"]["statecar.io/config-hash"]
    cluster.kubectl("delete", "ssc", "alpha", "-n", LIFECYCLE)
    remaining = wait_for(
        "alpha to leave the wiring",
        lambda: wired(api, LIFECYCLE),
        lambda components: "alpha" not in components,
        timeout=REACT,
    )
    assert set(remaining) == {"beta"}
    secret = api.secret(LIFECYCLE, WIRING)
    assert secret is not None
    assert secret["metadata"]["annotations"]["statecar.io/config-hash"] != hash_before

    started = time.monotonic()
    cluster.kubectl("delete", "ssc", "beta", "-n", LIFECYCLE)
    wait_for(
        "the wiring Secret to be deleted with the last component",
        lambda: api.secret(LIFECYCLE, WIRING),
        lambda found: found is None,
        timeout=REACT,
    )
    timing("wiring Secret deleted after the last component", time.monotonic() - started)
