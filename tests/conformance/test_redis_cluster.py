"""
What only a real Redis Cluster can show (3 primaries, 3 replicas, `tests/support/redis_cluster.py`),
through the sidecar's HTTP API: keys spread over every primary and read back in one bulk get, a
transaction across slots refused with a 400 naming keys and slots, `keyPrefixHashTag` making an
app's transactions atomic, a slot migration followed through ASK then MOVED, and failovers
under write load: the coordinated `CLUSTER FAILOVER`
loses no acknowledged write, and after a primary is killed the sidecar serves its slots again
within seconds. The rest of the state API on the cluster is the `redis-cluster` backend of
test_state_api.py and test_properties.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
import redis
from tests.conformance.conftest import APP_ID, BACKENDS
from tests.support.redis_cluster import RedisCluster
from tests.support.sidecar import SidecarProcess

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from statecar_sidecar.stores.base import SetOp
from statecar_sidecar.stores.redis.slots import key_slot
from statecar_sidecar.stores.registry import open_store

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif("redis-cluster" not in BACKENDS, reason="STATECAR_TEST_BACKENDS omits it"),
]

PLAIN, TAGGED = "redis-cluster", "redis-cluster-tagged"
WRITERS = 4
SAVES_PER_WRITER = 500  # 2,000 saves in all
KEYS_PER_WRITER = 40


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    redis_cluster.wait_healthy()
    yield redis_cluster
    redis_cluster.wait_healthy()  # each test leaves the cluster whole for the next


def _stored(key: str) -> str:
    return f"{APP_ID}||{key}"


def _owner_port(cluster: RedisCluster, stored_key: str) -> int:
    return cluster.owner(key_slot(stored_key)).port


def test_keys_spread_over_every_primary_and_bulk_get_reads_them_in_order(
    api: httpx.Client, cluster: RedisCluster
) -> None:
    keys = [f"spread-{uuid.uuid4().hex[:8]}-{i}" for i in range(60)]
    saved = api.post(
        f"/v1.0/state/{PLAIN}", json=[{"key": k, "value": i} for i, k in enumerate(keys)]
    )
    assert saved.status_code == 204, saved.text
    owners = {_owner_port(cluster, _stored(k)) for k in keys}
    assert owners == {p.port for p in cluster.primaries()}
    for key in keys[:6]:  # each key is on the primary that owns its slot, in daprd's layout
        with cluster.client(_owner_port(cluster, _stored(key))) as raw:
            assert raw.hget(_stored(key), "data") == str(keys.index(key)).encode()
    bulk = api.post(f"/v1.0/state/{PLAIN}/bulk", json={"keys": [*keys, "never-saved"]})
    assert bulk.status_code == 200
    items = bulk.json()
    assert [i["key"] for i in items] == [*keys, "never-saved"]
    assert [i.get("data") for i in items] == [*range(60), None]


def _two_keys_on_different_slots() -> tuple[str, str]:
    first = f"tx-{uuid.uuid4().hex[:8]}"
    second = next(
        k
        for k in (f"tx-{uuid.uuid4().hex[:8]}" for _ in range(100))
        if key_slot(_stored(k)) != key_slot(_stored(first))
    )
    return first, second


def test_a_transaction_across_slots_is_a_400_naming_keys_and_slots(
    sidecar: SidecarProcess, api: httpx.Client, cluster: RedisCluster
) -> None:
    a, b = _two_keys_on_different_slots()
    ops = [
        {"operation": "upsert", "request": {"key": a, "value": 1}},
        {"operation": "upsert", "request": {"key": b, "value": 2}},
    ]
    answer = api.post(f"/v1.0/state/{PLAIN}/transaction", json={"operations": ops})
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["errorCode"] == "ERR_STATE_TRANSACTION"
    for key in (a, b):
        assert f"slot {key_slot(_stored(key))}: '{_stored(key)}'" in body["message"]
    assert "keyPrefixHashTag" in body["message"]
    assert "nothing was applied" in body["message"]
    # gRPC says the same with INVALID_ARGUMENT, HTTP 400's counterpart.
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        operations = [
            state_pb2.TransactionalStateOperation(
                operationType="upsert", request=common_pb2.StateItem(key=k, value=b"1")
            )
            for k in (a, b)
        ]
        with pytest.raises(grpc.RpcError) as raised:
            dapr_pb2_grpc.DaprStub(channel).ExecuteStateTransaction(
                state_pb2.ExecuteStateTransactionRequest(storeName=PLAIN, operations=operations)
            )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"slot {key_slot(_stored(a))}" in str(raised.value.details())
    for key in (a, b):
        assert api.get(f"/v1.0/state/{PLAIN}/{key}").status_code == 204


def test_the_hash_tagged_prefix_makes_an_apps_transactions_atomic(
    api: httpx.Client, cluster: RedisCluster
) -> None:
    a, b = _two_keys_on_different_slots()  # different slots without the tag
    ops = [
        {"operation": "upsert", "request": {"key": a, "value": 1}},
        {"operation": "upsert", "request": {"key": b, "value": 2}},
    ]
    answer = api.post(f"/v1.0/state/{TAGGED}/transaction", json={"operations": ops})
    assert answer.status_code == 204, answer.text
    # Stored as {app}||key: both on the slot of the app id, on one primary.
    owner = cluster.owner(key_slot(APP_ID)).port
    with cluster.client(owner) as raw:
        assert raw.hget(f"{{{APP_ID}}}||{a}", "data") == b"1"
        assert raw.hget(f"{{{APP_ID}}}||{b}", "data") == b"2"
    etag = api.get(f"/v1.0/state/{TAGGED}/{a}").headers["etag"]
    # All or nothing across the two keys: the second op's ETag is stale, so the first is undone.
    stale = [
        {"operation": "upsert", "request": {"key": a, "value": 10, "etag": etag}},
        {"operation": "upsert", "request": {"key": b, "value": 20, "etag": "1"}},
    ]
    refused = api.post(f"/v1.0/state/{TAGGED}/transaction", json={"operations": stale})
    assert refused.status_code == 500
    assert "operation 1" in refused.json()["message"]
    assert api.get(f"/v1.0/state/{TAGGED}/{a}").content == b"1"
    assert api.get(f"/v1.0/state/{TAGGED}/{b}").content == b"2"
    # The query sees the tagged keys, under the user's names.
    found = api.post(f"/v1.0-alpha1/state/{TAGGED}/query", json={"filter": {}})
    assert found.status_code == 200
    assert {a, b} <= {r["key"] for r in found.json()["results"]}


class _Load:
    """WRITERS threads, each saving SAVES_PER_WRITER times over its own keys with rising values.

    Per key, `acked` is the last value a 2xx acknowledged and `unknown` the values whose save
    failed (they may or may not have been applied).
    """

    def __init__(self, sidecar: SidecarProcess, run: str) -> None:
        self.sidecar = sidecar
        self.run = run
        self.acked: dict[str, int] = {}
        self.unknown: dict[str, set[int]] = {}
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.done = 0
        self.lock = threading.Lock()
        self.half = threading.Event()

    def keys(self, writer: int) -> list[str]:
        return [f"load-{self.run}-{writer}-{i}" for i in range(KEYS_PER_WRITER)]

    def writer(self, index: int) -> None:
        keys = self.keys(index)
        with httpx.Client(base_url=self.sidecar.url, timeout=30) as client:
            for n in range(SAVES_PER_WRITER):
                key = keys[n % len(keys)]
                started = time.monotonic()
                answer = client.post(f"/v1.0/state/{PLAIN}", json=[{"key": key, "value": n}])
                elapsed = time.monotonic() - started
                with self.lock:
                    self.latencies.append(elapsed)
                    if answer.is_success:
                        self.acked[key] = n
                        self.unknown.pop(key, None)
                    else:
                        self.unknown.setdefault(key, set()).add(n)
                        self.failures.append(f"{answer.status_code} {answer.text[-400:]}")
                    self.done += 1
                    if self.done >= WRITERS * SAVES_PER_WRITER // 4:
                        self.half.set()

    def check_read_back(self, api: httpx.Client) -> None:
        keys = [k for w in range(WRITERS) for k in self.keys(w)]
        items = api.post(f"/v1.0/state/{PLAIN}/bulk", json={"keys": keys}).json()
        for item in items:
            key = item["key"]
            if key in self.acked:
                allowed = {self.acked[key], *self.unknown.get(key, ())}
                assert item.get("data") in allowed, (key, item, self.acked[key])


def _first_success_after(api: httpx.Client, key: str, deadline: float) -> float:
    """Save `key` every 20 ms until one is acknowledged; the time that happened."""
    while True:
        if api.post(f"/v1.0/state/{PLAIN}", json=[{"key": key, "value": "probe"}]).is_success:
            return time.monotonic()
        assert time.monotonic() < deadline, f"saves to {key!r} still fail"
        time.sleep(0.02)


def _key_on(cluster: RedisCluster, port: int) -> str:
    return next(
        k
        for k in (f"probe-{uuid.uuid4().hex[:8]}" for _ in range(1000))
        if _owner_port(cluster, _stored(k)) == port
    )


def test_a_coordinated_failover_under_write_load_loses_no_acknowledged_write(
    sidecar: SidecarProcess, api: httpx.Client, cluster: RedisCluster
) -> None:
    load = _Load(sidecar, uuid.uuid4().hex[:8])
    primary = cluster.primaries()[0]
    replica = cluster.replica_of(primary)
    probe_key = _key_on(cluster, primary.port)
    with ThreadPoolExecutor(WRITERS) as pool:
        writers = [pool.submit(load.writer, i) for i in range(WRITERS)]
        assert load.half.wait(60), "the write load did not start"
        started = time.monotonic()
        cluster.failover(replica)
        promoted = time.monotonic()
        served = _first_success_after(api, probe_key, promoted + 10)
        for future in writers:
            future.result(timeout=120)
    assert cluster.owner(key_slot(_stored(probe_key))).port == replica.port
    load.check_read_back(api)
    assert load.failures == [], load.failures[:5]
    assert len(load.acked) == WRITERS * KEYS_PER_WRITER
    worst = max(load.latencies)
    print(
        f"\ncoordinated failover: promoted {promoted - started:.2f} s after CLUSTER FAILOVER,"
        f" first save on the new primary {served - promoted:.3f} s after promotion;"
        f" {len(load.latencies)} saves, 0 failed, slowest {worst:.2f} s"
    )
    assert served - promoted < 3
    assert worst < 5


def test_after_a_primary_is_killed_its_slots_are_served_again_within_seconds(
    api: httpx.Client, cluster: RedisCluster
) -> None:
    primary = cluster.primaries()[-1]
    replica = cluster.replica_of(primary)
    key = _key_on(cluster, primary.port)
    assert api.post(f"/v1.0/state/{PLAIN}", json=[{"key": key, "value": 1}]).status_code == 204
    # Wait until the replica has it: a kill may lose writes the replica had not received yet
    # (asynchronous replication; the Redis Cluster spec, "Write safety").
    with cluster.client(primary.port) as raw:
        assert raw.execute_command("WAIT", 1, 5000) == 1
    process = cluster.process(primary.port)
    killed = time.monotonic()
    process.stop(sig=9)
    served = _first_success_after(api, key, killed + 30)
    print(f"\nprimary killed: its slots served again by the sidecar after {served - killed:.2f} s")
    assert served - killed < 10
    assert cluster.owner(key_slot(_stored(key))).port == replica.port
    assert api.get(f"/v1.0/state/{PLAIN}/{key}").content == b'"probe"'
    # The old primary comes back as a replica of the new one (its nodes.conf says so).
    process.start()
    cluster.wait_healthy()
    with cluster.client(process.port) as raw:
        assert raw.info("replication")["role"] == "slave"


def test_health_reports_the_cluster(api: httpx.Client, cluster: RedisCluster) -> None:
    assert api.get("/v1.0/healthz").status_code == 204
    with redis.Redis(host="127.0.0.1", port=cluster.primaries()[0].port) as raw:
        assert raw.execute_command("CLUSTER", "KEYSLOT", "foo") == key_slot("foo")


async def test_a_slot_in_migration_is_followed_through_ask_then_moved(
    cluster: RedisCluster,
) -> None:
    """Redis's resharding protocol by hand (CLUSTER SETSLOT, the spec's "Live resharding"):
    while a slot migrates, a key the source lacks is answered with ASK and must be written and
    read on the target after ASKING; once the slot is handed over, MOVED points there."""
    primaries = cluster.primaries()
    key = ""
    for _ in range(1000):
        candidate = f"{{ask-{uuid.uuid4().hex[:8]}}}k"
        source = cluster.owner(key_slot(candidate))
        with cluster.client(source.port) as raw:
            if raw.execute_command("CLUSTER", "COUNTKEYSINSLOT", key_slot(candidate)) == 0:
                key = candidate
                break
    slot = key_slot(key)
    target = next(p for p in primaries if p.port != source.port)
    store = await open_store("state.redis", {"redisHost": cluster.seeds, "redisType": "cluster"})
    try:
        await store.ping()  # the table says: the slot is on source
        with cluster.client(target.port) as raw:
            raw.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        with cluster.client(source.port) as raw:
            raw.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        await store.set(SetOp(key, b'"asked"'))
        with cluster.client(target.port) as raw:
            assert raw.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        with cluster.client(source.port) as raw:
            assert raw.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        item = await store.get(key)
        assert item is not None
        assert item.value == b'"asked"'
        bulk = await store.bulk_get([key, "conformance||elsewhere"])
        assert bulk[0] is not None
        assert bulk[0].value == b'"asked"'
        # Hand the slot over everywhere: from now on the source answers MOVED.
        for node in primaries:
            with cluster.client(node.port) as raw:
                raw.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
        cluster.wait_healthy()
        await store.set(SetOp(key, b'"moved"'))
        item = await store.get(key)
        assert item is not None
        assert item.value == b'"moved"'
        assert cluster.owner(slot).port == target.port
    finally:
        await store.close()


def test_strong_writes_wait_for_the_replica_of_the_keys_primary(
    api: httpx.Client, cluster: RedisCluster
) -> None:
    """consistency=strong on a cluster: WAIT on the primary that owns the key, for its own
    replicas, failing clearly (and fast) when the replica does not confirm."""
    key = f"strong-{uuid.uuid4().hex[:8]}"
    primary = cluster.owner(key_slot(_stored(key)))
    replica = cluster.replica_of(primary)
    strong = [{"key": key, "value": 1, "options": {"consistency": "strong"}}]
    answer = api.post(f"/v1.0/state/{PLAIN}", json=strong)
    assert answer.status_code == 204, answer.text
    with redis.Redis(host="127.0.0.1", port=replica.port, single_connection_client=True) as raw:
        raw.execute_command("READONLY")  # a cluster replica serves reads only after READONLY
        assert raw.hget(_stored(key), "data") == b"1"  # confirmed means on the replica
    process = cluster.process(replica.port)
    process.pause()  # SIGSTOP: still connected, never acknowledges (resumed well within the
    try:  # cluster's node timeout, so no failover starts)
        started = time.monotonic()
        answer = api.post(f"/v1.0/state/{PLAIN}", json=[{**strong[0], "value": 2}])
        elapsed = time.monotonic() - started
    finally:
        process.resume()
    assert answer.status_code == 500
    assert "0 of 1 connected replicas" in answer.json()["message"]
    assert elapsed < 1.8
    eventual = [{"key": key, "value": 3}]
    assert api.post(f"/v1.0/state/{PLAIN}", json=eventual).status_code == 204
