"""
What only Redis can show: real strong consistency with a replica, recovery from a restart with
nothing acknowledged lost, daprd's data layout in both directions, and the stored key prefixes.
"""

from __future__ import annotations

import datetime
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


def _command_calls(raw: redis.Redis) -> dict[str, int]:
    """Redis's count of calls per command so far (`cmdstat_<name>`), from INFO commandstats."""
    return {name: int(v["calls"]) for name, v in raw.info("commandstats").items()}


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
    """bench S4 as a guard: GET = 1 HMGET (no PTTL for a key statecar wrote last), save = 1
    EVALSHA, transaction of N = 1 EVALSHA, bulk of N = N HMGETs."""

    key = f"count-{uuid.uuid4().hex[:8]}"
    api.post("/v1.0/state/redis", json=[{"key": key, "value": 0}])  # scripts loaded
    before = _command_calls(raw)
    api.get(f"/v1.0/state/redis/{key}")
    api.post("/v1.0/state/redis", json=[{"key": key, "value": 1}])
    ops = [{"operation": "upsert", "request": {"key": f"{key}-{i}", "value": i}} for i in range(10)]
    api.post("/v1.0/state/redis/transaction", json={"operations": ops})
    api.post("/v1.0/state/redis/bulk", json={"keys": [f"{key}-{i}" for i in range(10)]})
    after = _command_calls(raw)
    delta = {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }
    # Commands the scripts run inside Redis count too; only what crossed the wire matters here.
    inside_scripts = {"hset", "hget", "hdel", "del", "persist", "pexpireat", "time"}
    measured = {"info", "ping"}  # our own measurement, and health checks that may run meanwhile
    sent = {k.removeprefix("cmdstat_"): v for k, v in delta.items()}
    sent = {k: v for k, v in sent.items() if k not in inside_scripts | measured}
    # HMGET is also what the scripts read a key with: once per save, once per upsert.
    assert sent == {"hmget": 11 + 1 + 10, "evalsha": 2}, sent


def _daprd_save(raw: redis.Redis, stored: str, data: bytes, ttl: int | None) -> None:
    """What daprd's Redis store does to a key on a save (components-contrib state/redis: its
    script HSETs `data` and HINCRBYs `version`, then a bare EXPIRE when the save has a TTL)."""
    raw.hset(stored, "data", data)
    raw.hincrby(stored, "version", 1)
    if ttl is not None:
        raw.expire(stored, ttl)


@pytest.mark.parametrize("statecar_ttl", [None, "100"])
def test_a_key_daprd_wrote_last_reports_its_own_ttl_not_statecars(
    api: httpx.Client, raw: redis.Redis, statecar_ttl: str | None
) -> None:
    """`exp` is trusted only while `exp-version` is the key's version: after daprd's write
    the key's own TTL (one more round trip, HMGET + PTTL) is what a GET and a bulk report."""
    key = f"after-daprd-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    _write(api, "save", key, statecar_ttl)
    _daprd_save(raw, stored, b'"daprd"', 600)
    single = api.get(f"/v1.0/state/redis/{key}")
    (bulk,) = api.post("/v1.0/state/redis/bulk", json={"keys": [key]}).json()
    now = time.time()
    for expiry in (single.headers["metadata.ttlexpiretime"], bulk["metadata"]["ttlExpireTime"]):
        seconds = _rfc3339_seconds(expiry)
        assert now + 600 - 5 <= seconds <= now + 600 + 5, (expiry, statecar_ttl)
    assert single.content == b'"daprd"'
    version = raw.hget(stored, "version")
    assert isinstance(version, bytes)
    assert single.headers["etag"] == version.decode()
    # daprd overwrote without a TTL of its own: none is reported, whatever statecar's `exp` said.
    raw.persist(stored)
    _daprd_save(raw, stored, b'"again"', None)
    assert "metadata.ttlexpiretime" not in api.get(f"/v1.0/state/redis/{key}").headers


def test_a_bulk_reads_again_only_the_keys_statecar_did_not_write_last(
    api: httpx.Client, raw: redis.Redis
) -> None:
    base = f"mixed-{uuid.uuid4().hex[:8]}"
    keys = [f"{base}-{i}" for i in range(6)]
    for key in keys:
        _write(api, "save", key, "100")
    # keys 1 and 4: daprd's write with its own TTL; key 3: a statecar write from before
    # `exp-version` (its `exp` is still right, and the key's TTL says the same).
    for i in (1, 4):
        _daprd_save(raw, f"conformance||{keys[i]}", b"1", 900)
    raw.hdel(f"conformance||{keys[3]}", "exp-version")

    before = _command_calls(raw)
    items = api.post("/v1.0/state/redis/bulk", json={"keys": keys}).json()
    after = _command_calls(raw)
    sent = {k: after[k] - before.get(k, 0) for k in ("cmdstat_hmget", "cmdstat_pttl")}
    assert sent == {"cmdstat_hmget": 6 + 3, "cmdstat_pttl": 3}, sent
    now = time.time()
    for i, item in enumerate(items):
        expected = 900 if i in (1, 4) else 100
        seconds = _rfc3339_seconds(item["metadata"]["ttlExpireTime"])
        assert now + expected - 5 <= seconds <= now + expected + 5, (i, item)


def _rfc3339_seconds(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# What a save leaves in the hash, whatever was there: the guard of the save script's shortcuts
# (it deletes `exp`/`first-write` only when present, sets a TTL's fields in one HSET, builds the
# version from TIME's two parts). Each case: the fields before, and an expiry daprd set with a
# bare EXPIRE (no `exp` field), if any.
_BEFORE: dict[str, tuple[dict[str, str], int | None]] = {
    "absent": ({}, None),
    "statecar layout": ({"data": "1", "version": "5"}, None),
    "statecar ttl": ({"data": "1", "version": "5", "exp": "9999999999999"}, 600),
    "daprd ttl (bare EXPIRE)": ({"data": "1", "version": "5"}, 600),
    "daprd first-write flag": ({"data": "1", "version": "5", "first-write": "1"}, None),
    "daprd flag and exp": ({"data": "1", "version": "5", "first-write": "0", "exp": "1"}, 600),
}


def _seed(raw: redis.Redis, stored: str, before: str) -> None:
    fields, expire = _BEFORE[before]
    raw.delete(stored)
    for name, value in fields.items():
        raw.hset(stored, name, value)
    if expire is not None:
        raw.expire(stored, expire)


def _write(api: httpx.Client, route: str, key: str, ttl: str | None) -> None:
    metadata = {"ttlInSeconds": ttl} if ttl else {}
    item = {"key": key, "value": {"n": 2}, "metadata": metadata}
    if route == "save":
        answer = api.post("/v1.0/state/redis", json=[item])
    else:
        op = {"operation": "upsert", "request": item}
        answer = api.post("/v1.0/state/redis/transaction", json={"operations": [op]})
    assert answer.status_code == 204, answer.text


@pytest.mark.parametrize("route", ["save", "transaction"])
@pytest.mark.parametrize("before", list(_BEFORE))
def test_a_write_without_ttl_leaves_data_and_version_and_no_expiry(
    api: httpx.Client, raw: redis.Redis, route: str, before: str
) -> None:
    key = f"layout-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    _seed(raw, stored, before)
    _write(api, route, key, None)
    fields = raw.hgetall(stored)
    # no exp, no first-write left behind; exp-version says `exp`'s absence describes this write
    assert set(fields) == {b"data", b"version", b"exp-version"}, fields
    assert fields[b"exp-version"] == fields[b"version"]
    assert fields[b"data"] == b'{"n":2}'
    assert raw.ttl(stored) == -1  # the expiry is cleared, whoever set it
    answer = api.get(f"/v1.0/state/redis/{key}")
    assert "metadata.ttlexpiretime" not in answer.headers


@pytest.mark.parametrize("route", ["save", "transaction"])
@pytest.mark.parametrize("before", list(_BEFORE))
def test_a_write_with_ttl_leaves_exp_equal_to_the_keys_expiry(
    api: httpx.Client, raw: redis.Redis, route: str, before: str
) -> None:
    key = f"layout-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    _seed(raw, stored, before)
    seconds, microseconds = raw.time()
    now_ms = seconds * 1000 + microseconds // 1000
    _write(api, route, key, "100")
    fields = raw.hgetall(stored)
    assert set(fields) == {b"data", b"version", b"exp", b"exp-version"}, fields  # no flag
    assert fields[b"exp-version"] == fields[b"version"]
    exp = int(fields[b"exp"])
    assert now_ms + 100_000 <= exp <= now_ms + 100_000 + 5_000
    assert raw.pexpiretime(stored) == exp
    assert "metadata.ttlexpiretime" in api.get(f"/v1.0/state/redis/{key}").headers


def test_versions_are_redis_microseconds_whatever_the_microsecond_part(
    api: httpx.Client, raw: redis.Redis
) -> None:
    """The version is TIME in µs, as decimal digits: also when the µs part has fewer than six
    digits (the script pads it). Saves run until such a version was seen (at most ~2 s: one
    second in ten has them)."""
    key = f"clock-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    short_part_seen = False
    deadline = time.monotonic() + 3
    while not short_part_seen and time.monotonic() < deadline:
        seconds, microseconds = raw.time()
        before = seconds * 1_000_000 + microseconds
        assert api.post("/v1.0/state/redis", json=[{"key": key, "value": 1}]).status_code == 204
        seconds, microseconds = raw.time()
        after = seconds * 1_000_000 + microseconds
        version = raw.hget(stored, "version")
        assert version is not None
        assert version.isdigit(), version
        assert before <= int(version) <= after, (before, version, after)
        short_part_seen = int(version) % 1_000_000 < 100_000
    assert short_part_seen, "no save fell in the first 100 ms of a second within 3 s"


@pytest.mark.parametrize("route", ["save", "transaction"])
def test_a_version_ahead_of_the_clock_only_grows(
    api: httpx.Client, raw: redis.Redis, route: str
) -> None:
    """A stored version at or past Redis's clock (another server's clock, a clock set back) is
    followed by that version plus one, written in decimal: the ETag never repeats. (Lua's
    numbers are doubles: exact up to 2^53, ~9.0e15 µs, the year 2255.)"""
    key = f"ahead-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    raw.hset(stored, mapping={"data": "1", "version": "8999999999999999"})
    _write(api, route, key, None)
    assert raw.hget(stored, "version") == b"9000000000000000"
    _write(api, route, key, None)
    assert raw.hget(stored, "version") == b"9000000000000001"


@pytest.mark.parametrize("route", ["save", "transaction", "delete"])
def test_a_key_of_another_type_is_refused_by_name_and_left_alone(
    api: httpx.Client, raw: redis.Redis, route: str
) -> None:
    key = f"string-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    raw.set(stored, "not a hash")
    if route == "delete":
        answer = api.delete(f"/v1.0/state/redis/{key}")
    else:
        item = {"key": key, "value": 1}
        answer = (
            api.post("/v1.0/state/redis", json=[item])
            if route == "save"
            else api.post(
                "/v1.0/state/redis/transaction",
                json={"operations": [{"operation": "upsert", "request": item}]},
            )
        )
    assert answer.status_code == 500, answer.text
    assert f"WRONGTYPE key {stored} is not a statecar/dapr hash" in answer.json()["message"]
    assert raw.get(stored) == b"not a hash"


@pytest.mark.parametrize("route", ["save", "multi-item save", "transaction", "delete"])
def test_a_write_after_redis_lost_its_scripts_reloads_them_and_runs_once(
    api: httpx.Client, raw: redis.Redis, route: str
) -> None:
    """SCRIPT FLUSH (as a restart or a failover to a fresh replica does): the write's EVALSHA
    gets NOSCRIPT, which ran nothing; the sidecar loads its scripts and sends it once more."""
    key = f"flushed-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    assert api.post("/v1.0/state/redis", json=[{"key": key, "value": 1}]).status_code == 204
    raw.script_flush()
    calls = _command_calls(raw)
    if route == "save":
        answer = api.post("/v1.0/state/redis", json=[{"key": key, "value": 2}])
    elif route == "multi-item save":
        answer = api.post(
            "/v1.0/state/redis", json=[{"key": key, "value": 2}, {"key": f"{key}-b", "value": 2}]
        )
    elif route == "transaction":
        op = {"operation": "upsert", "request": {"key": key, "value": 2}}
        answer = api.post("/v1.0/state/redis/transaction", json={"operations": [op]})
    else:
        answer = api.delete(f"/v1.0/state/redis/{key}")
    assert answer.status_code == 204, answer.text
    assert raw.hget(stored, "data") == (None if route == "delete" else b"2")
    after = _command_calls(raw)
    loads = after.get("cmdstat_script|load", 0) - calls.get("cmdstat_script|load", 0)
    assert loads == 3  # all three scripts, once
    # Each item: NOSCRIPT, then the one run.
    items = 2 if route == "multi-item save" else 1
    assert after["cmdstat_evalsha"] - calls["cmdstat_evalsha"] == 2 * items


@pytest.mark.parametrize(
    ("ops", "fields", "expires"),
    [
        # The second write must see what the first left (exp), not the key as it was.
        ([("upsert", "100"), ("upsert", None)], {b"data", b"version", b"exp-version"}, False),
        (
            [("upsert", None), ("upsert", "100")],
            {b"data", b"version", b"exp", b"exp-version"},
            True,
        ),
        ([("delete", None), ("upsert", None)], {b"data", b"version", b"exp-version"}, False),
        (
            [("upsert", "100"), ("delete", None), ("upsert", None)],
            {b"data", b"version", b"exp-version"},
            False,
        ),
    ],
)
def test_a_key_written_twice_in_one_transaction_ends_as_its_last_write_left_it(
    api: httpx.Client,
    raw: redis.Redis,
    ops: list[tuple[str, str | None]],
    fields: set[bytes],
    expires: bool,
) -> None:
    key = f"twice-{uuid.uuid4().hex[:8]}"
    stored = f"conformance||{key}"
    raw.hset(stored, "data", "0")  # no exp: only what the transaction wrote can put one there
    raw.hset(stored, "version", "5")
    operations = [
        {
            "operation": kind,
            "request": {"key": key, "value": n, "metadata": {"ttlInSeconds": ttl} if ttl else {}},
        }
        for n, (kind, ttl) in enumerate(ops)
    ]
    answer = api.post("/v1.0/state/redis/transaction", json={"operations": operations})
    assert answer.status_code == 204, answer.text
    stored_fields = raw.hgetall(stored)
    assert set(stored_fields) == fields, stored_fields
    assert stored_fields[b"data"] == str(len(ops) - 1).encode()
    assert (raw.ttl(stored) > 0) is expires
    if expires:
        assert raw.pexpiretime(stored) == int(stored_fields[b"exp"])
    assert int(stored_fields[b"version"]) > 5
    assert stored_fields[b"exp-version"] == stored_fields[b"version"]
