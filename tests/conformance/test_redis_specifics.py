"""
What only Redis can show: real strong consistency with a replica, recovery from a restart with
nothing acknowledged lost, daprd's data layout in both directions, and the stored key prefixes.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import redis
from tests.support.redis_server import RedisProcess
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.conformance


@pytest.fixture
def raw(redis_primary: RedisProcess) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=redis_primary.port)


def _wait_replica_synced(raw: redis.Redis) -> None:
    deadline = time.time() + 10

    def online() -> bool:
        info = raw.info("replication")
        return any(isinstance(v, dict) and v.get("state") == "online" for v in info.values())

    while not online():
        assert time.time() < deadline, "replica never came online"
        time.sleep(0.1)


def test_strong_writes_need_every_replica_and_fail_clearly_without_it(
    api: httpx.Client, raw: redis.Redis, redis_replica: RedisProcess
) -> None:
    _wait_replica_synced(raw)
    key = f"strong-{uuid.uuid4().hex[:8]}"
    strong = [{"key": key, "value": 1, "options": {"consistency": "strong"}}]
    assert api.post("/v1.0/state/redis", json=strong).status_code == 204
    replica = redis.Redis(host="127.0.0.1", port=redis_replica.port)
    assert replica.hget(f"conformance||{key}", "data") == b"1"  # confirmed means on the replica
    redis_replica.pause()  # SIGSTOP: still "connected", never acknowledges
    try:
        started = time.monotonic()
        answer = api.post("/v1.0/state/redis", json=[{**strong[0], "value": 2}])
        elapsed = time.monotonic() - started
        assert answer.status_code == 500
        body = answer.json()
        assert body["errorCode"] == "ERR_STATE_SAVE"
        assert "0 of 1 connected replicas" in body["message"]
        assert elapsed < 3, f"a strong write must fail within a bounded time, took {elapsed:.1f}s"
        # The component default works the same way, and eventual writes are unaffected.
        assert (
            api.post("/v1.0/state/redis-strong", json=[{"key": key, "value": 3}]).status_code == 500
        )
        eventual = [{"key": key, "value": 4, "options": {"consistency": "eventual"}}]
        assert api.post("/v1.0/state/redis", json=eventual).status_code == 204
        assert api.get(f"/v1.0/state/redis/{key}", params={"consistency": "strong"}).content == b"4"
    finally:
        redis_replica.resume()


def test_redis_restart_loses_nothing_acknowledged_and_the_sidecar_recovers(
    api: httpx.Client, sidecar: SidecarProcess, redis_primary: RedisProcess
) -> None:
    keys = [f"durable-{uuid.uuid4().hex[:8]}-{i}" for i in range(20)]
    assert (
        api.post(
            "/v1.0/state/redis", json=[{"key": k, "value": i} for i, k in enumerate(keys)]
        ).status_code
        == 204
    )
    redis_primary.stop()
    started = time.monotonic()
    answer = api.get(f"/v1.0/state/redis/{keys[0]}")
    assert answer.status_code == 500
    assert answer.json()["errorCode"] == "ERR_STATE_GET"
    assert "unavailable" in answer.json()["message"]
    assert time.monotonic() - started < 6
    health = httpx.get(f"{sidecar.ops_url}/v1.0/healthz", timeout=10)
    assert health.status_code == 500
    assert "redis" in health.json()["message"]
    # The other backends keep serving.
    assert api.get("/v1.0/state/memory/anything").status_code == 204
    redis_primary.start()
    deadline = time.monotonic() + 10
    while api.get(f"/v1.0/state/redis/{keys[0]}").status_code != 200:
        assert time.monotonic() < deadline, "the sidecar did not reconnect"
        time.sleep(0.1)
    bulk = api.post("/v1.0/state/redis/bulk", json={"keys": keys}).json()
    assert [item["data"] for item in bulk] == list(range(20))


def test_data_layout_is_daprds_both_ways(api: httpx.Client, raw: redis.Redis) -> None:
    key = f"compat-{uuid.uuid4().hex[:8]}"
    # Written by daprd's Redis store: a hash with data and version.
    raw.hset(f"conformance||{key}", mapping={"data": '{"from":"daprd"}', "version": "7"})
    answer = api.get(f"/v1.0/state/redis/{key}")
    assert (answer.content, answer.headers["etag"]) == (b'{"from":"daprd"}', "7")
    assert (
        api.post(
            "/v1.0/state/redis", json=[{"key": key, "value": "statecar", "etag": "7"}]
        ).status_code
        == 204
    )
    stored = raw.hgetall(f"conformance||{key}")
    assert stored[b"data"] == b'"statecar"'
    assert int(stored[b"version"]) > 7  # daprd's script HINCRBYs it: still an integer


@pytest.mark.parametrize(
    ("store", "stored"),
    [
        ("redis", "conformance||{k}"),
        ("prefix-name", "prefix-name||{k}"),
        ("prefix-none", "{k}"),
        ("prefix-custom", "myprefix||{k}"),
        ("prefix-namespace", "shop.conformance||{k}"),
        ("dapr-redis", "{k}"),
    ],
)
def test_key_prefixes_are_stored_as_daprd_stores_them(
    api: httpx.Client, raw: redis.Redis, store: str, stored: str
) -> None:
    key = f"prefix-{uuid.uuid4().hex[:8]}"
    assert api.post(f"/v1.0/state/{store}", json=[{"key": key, "value": 1}]).status_code == 204
    assert raw.hget(stored.format(k=key), "data") == b"1"


def test_redis_commands_per_call(api: httpx.Client, raw: redis.Redis) -> None:
    """bench S4 as a guard: GET = 1 HMGET + 1 PTTL (one pipelined round trip; the PTTL reports
    a TTL daprd set), save = 1 EVALSHA, transaction of N = 1 EVALSHA."""

    def stats() -> dict[str, int]:
        info = raw.info("commandstats")
        return {name: int(v["calls"]) for name, v in info.items()}

    key = f"count-{uuid.uuid4().hex[:8]}"
    api.post("/v1.0/state/redis", json=[{"key": key, "value": 0}])  # scripts loaded
    before = stats()
    api.get(f"/v1.0/state/redis/{key}")
    api.post("/v1.0/state/redis", json=[{"key": key, "value": 1}])
    ops = [{"operation": "upsert", "request": {"key": f"{key}-{i}", "value": i}} for i in range(10)]
    api.post("/v1.0/state/redis/transaction", json={"operations": ops})
    api.post("/v1.0/state/redis/bulk", json={"keys": [f"{key}-{i}" for i in range(10)]})
    after = stats()
    delta = {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }
    # Commands the scripts run inside Redis count too; only what crossed the wire matters here.
    inside_scripts = {"hset", "hget", "hdel", "del", "persist", "pexpireat", "time"}
    measured = {"info", "ping"}  # our own measurement, and health checks that may run meanwhile
    sent = {k.removeprefix("cmdstat_"): v for k, v in delta.items()}
    sent = {k: v for k, v in sent.items() if k not in inside_scripts | measured}
    assert sent == {"hmget": 11, "pttl": 11, "evalsha": 2}, sent
