"""
The operator end to end, part 5: a component edit reaches the running sidecar.

Runs after parts 1-4 on the fixtures they share (`conftest.py`).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import redis as redis_client
from tests.e2e.kubelet import PodProcess
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    condition,
    wait_for,
    wait_for_object,
)
from tests.e2e.test_operator_e2e.helpers import (
    PASSWORD,
    REACT,
    SHOP,
    orders_manifest,
    serving_from,
    timing,
    wait_condition,
)
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, running_redis

pytestmark = pytest.mark.e2e


class Traffic(threading.Thread):
    """An app's requests, back to back: save a new key, read it back."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stopping = threading.Event()
        self.requests = 0
        self.misses = 0  # a read that went to the new Redis right after a save to the old one
        self.failures: list[str] = []
        self.saved: list[str] = []

    def run(self) -> None:
        store = f"{self.url}/v1.0/state/orders"
        with httpx.Client(timeout=5, trust_env=False) as http:
            n = 0
            while not self.stopping.is_set():
                n += 1
                key = f"switch-{n}"
                try:
                    saved = http.post(store, json=[{"key": key, "value": {"n": n}}])
                    self.requests += 1
                    if saved.status_code != 204:
                        self.failures.append(f"POST {key}: {saved.status_code} {saved.text[:300]}")
                        continue
                    self.saved.append(key)
                    read = http.get(f"{store}/{key}")
                    self.requests += 1
                    if read.status_code == 204:
                        self.misses += 1
                    elif read.status_code != 200 or read.json() != {"n": n}:
                        self.failures.append(f"GET {key}: {read.status_code} {read.text[:300]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{key}: {exc!r}")


def test_component_edit_reaches_the_running_sidecar_without_a_failed_request(
    cluster: LocalCluster, api: Api, sidecar: PodProcess, redis: RedisProcess
) -> None:
    """Pointing the component at a second Redis re-renders the wiring, the kubelet refreshes the
    mounted file, and the sidecar switches make-before-break: same process, zero failed requests
    while an app's loop runs through the switch, new writes land in the new Redis."""
    pid = sidecar.pid
    with running_redis(["--requirepass", PASSWORD]) as second:
        traffic = Traffic(sidecar.url)
        traffic.start()
        try:
            time.sleep(0.5)  # some requests on the old Redis first
            before = traffic.requests
            started = time.monotonic()
            cluster.apply(orders_manifest(second.address))
            with redis_client.Redis(port=second.port, password=PASSWORD) as new:
                wait_for(
                    "the sidecar's writes to land in the second Redis",
                    lambda: new.keys("checkout||switch-*"),
                    timeout=REACT,
                    interval=0.1,
                )
            timing("component edit to first write in the new Redis", time.monotonic() - started)
            time.sleep(1.0)  # and some requests after the switch
        finally:
            traffic.stopping.set()
            traffic.join(timeout=15)
        assert not traffic.is_alive(), "the request loop did not stop within 15s"
        assert traffic.requests > before > 0, (before, traffic.requests)
        assert traffic.failures == [], (
            f"{len(traffic.failures)} of {traffic.requests} requests failed during the switch:\n"
            + "\n".join(traffic.failures[:20])
        )
        print(f"[traffic] {traffic.requests} requests, {traffic.misses} reads across the switch")

        assert sidecar.running, "the sidecar stopped"
        assert sidecar.pid == pid, "the sidecar was restarted"
        assert "components reloaded" in sidecar.log
        last = traffic.saved[-1]
        with (
            redis_client.Redis(port=second.port, password=PASSWORD) as new,
            redis_client.Redis(port=redis.port, password=PASSWORD) as old,
        ):
            assert new.exists(f"checkout||{last}")
            assert not old.exists(f"checkout||{last}")
            saved = httpx.post(
                f"{sidecar.url}/v1.0/state/orders",
                json=[{"key": "after-switch", "value": 1}],
                timeout=10,
                trust_env=False,
            )
            assert saved.status_code == 204, saved.text
            assert new.exists("checkout||after-switch")
            assert not old.exists("checkout||after-switch")

        edited = wait_for_object(
            "orders' status to describe the new Redis",
            lambda: api.component(SHOP, "orders"),
            lambda c: second.address in condition(c, "BackendReachable").get("message", ""),
            timeout=REACT,
        )
        assert edited["status"]["observedGeneration"] == edited["metadata"]["generation"] > 1
        assert condition(edited, "Ready")["status"] == "True"
        # Back to the first Redis, and wait until the sidecar uses it, before this one stops.
        cluster.apply(orders_manifest(redis.address))
        serving_from(sidecar, redis)


def test_broken_component_edit_keeps_the_old_store_serving(
    cluster: LocalCluster, api: Api, sidecar: PodProcess, redis: RedisProcess
) -> None:
    """Make-before-break's other half: an edit the sidecar cannot open (nothing listens there)
    is reported (metadata, health) while the previous store keeps serving every request; fixing
    the component clears the report."""
    serving_from(sidecar, redis)  # the starting point: the sidecar on the first Redis
    nowhere = f"127.0.0.1:{free_port()}"
    store = f"{sidecar.url}/v1.0/state/orders"
    cluster.apply(orders_manifest(nowhere))
    with httpx.Client(timeout=5, trust_env=False) as http:
        reported = wait_for(
            "the sidecar to report that it cannot open the edited component",
            lambda: http.get(f"{sidecar.url}/v1.0/metadata").json()["extended"],
            lambda extended: "statecarLastReloadError" in extended,
            timeout=REACT,
        )
        assert "orders" in reported["statecarLastReloadError"]
        assert http.get(sidecar.probe()).status_code >= 500  # not ready: misconfigured
        for n in range(10):  # ... but the app is served by the previous store meanwhile
            saved = http.post(store, json=[{"key": f"kept-{n}", "value": n}])
            assert saved.status_code == 204, saved.text
        with redis_client.Redis(port=redis.port, password=PASSWORD) as old:
            assert old.exists("checkout||kept-9")
        down = wait_condition(api, SHOP, "orders", "BackendReachable", "False")
        assert nowhere in condition(down, "BackendReachable")["message"]

        cluster.apply(orders_manifest(redis.address))
        wait_for(
            "the report to clear once the component is fixed",
            lambda: http.get(f"{sidecar.url}/v1.0/metadata").json()["extended"],
            lambda extended: "statecarLastReloadError" not in extended,
            timeout=REACT,
        )
        wait_for(
            "the probe to pass again",
            lambda: http.get(sidecar.probe()).status_code,
            lambda status: status == 204,
            timeout=REACT,
        )
