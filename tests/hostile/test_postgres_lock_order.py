"""
Hostile tier: writes that touch the same keys in opposite orders never deadlock, on any backend.

Four clients (four stores, as four sidecars would be) each run 100 requests over the same four
keys: transactions and multi-item saves, half of the clients walking the keys forwards and half
backwards. PostgreSQL used to lock rows in request order, so two such requests deadlocked: the
server's detector broke the cycle after `deadlock_timeout` (1 s), about 10 of the 400 requests
failed and the run took ~37 s. It now locks a request's keys in one canonical order first.

Also here, PostgreSQL only: a serialization failure or deadlock that still happens (a server
running SERIALIZABLE, say) is retried within the timeout and, if it persists, reported as a
conflict (an ETag-mismatch error, 409 on a save), never as "unavailable"; and a request too big
for PostgreSQL's 32,767 bind parameters neither fails as "unavailable" nor drops the pool.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import pg_server
from tests.support.redis_server import RedisProcess, running_redis

from statecar_sidecar.stores.base import DeleteOp, Operation, SetOp, StateStore
from statecar_sidecar.stores.errors import ETagMismatchError, StoreError, StoreUnavailableError
from statecar_sidecar.stores.postgresql import PostgreSQLStore
from statecar_sidecar.stores.postgresql.statements import KEY_LOCKS
from statecar_sidecar.stores.query import parse_query
from statecar_sidecar.stores.registry import open_store

CLIENTS = 4
REQUESTS = 100
# Few keys are locked one by one; more than KEY_LOCKS take the table's writers lock.
KEY_SETS = {
    "4 keys": [f"lock-order-{i}" for i in range(4)],
    f"{KEY_LOCKS + 6} keys": [f"lock-order-{i}" for i in range(KEY_LOCKS + 6)],
}
BACKENDS = ["postgres", "sqlite", "redis", "memory"]
COMPONENT_TYPES = {
    "memory": "state.in-memory",
    "sqlite": "state.sqlite",
    "redis": "state.redis",
    "postgres": "state.postgresql",
}


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    with running_redis() as server:
        yield server


async def _open_clients(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> list[StateStore]:
    """CLIENTS stores sharing one backend (the in-memory store has no sharing: one instance)."""
    metadata: dict[str, str] = {}
    if kind == "sqlite":
        metadata["connectionString"] = str(tmp_path / "state.db")
    elif kind == "redis":
        metadata["redisHost"] = request.getfixturevalue("redis_server").address
    elif kind == "postgres":
        metadata["connectionString"] = request.getfixturevalue("postgres").dsn
        metadata["tableName"] = "t_" + uuid.uuid4().hex[:12]
    if kind == "memory":
        store = await open_store(COMPONENT_TYPES[kind], metadata)
        return [store] * CLIENTS
    first = await open_store(COMPONENT_TYPES[kind], metadata)  # creates the table
    rest = [await open_store(COMPONENT_TYPES[kind], metadata) for _ in range(CLIENTS - 1)]
    return [first, *rest]


def _request(all_keys: list[str], client: int, n: int) -> tuple[str, list[Operation]]:
    keys = all_keys if client % 2 == 0 else all_keys[::-1]
    value = f'"{client}-{n}"'.encode()
    if n % 3 == 2:  # a delete in the middle keeps absent keys (inserts) in the mix
        ops: list[Operation] = [SetOp(k, value) for k in keys]
        ops[1] = DeleteOp(keys[1])
        return "transaction", ops
    return ("transaction" if n % 3 == 0 else "set_many"), [SetOp(k, value) for k in keys]


async def _client(store: StateStore, keys: list[str], client: int, failures: list[str]) -> None:
    for n in range(REQUESTS):
        kind, ops = _request(keys, client, n)
        try:
            if kind == "transaction":
                await store.transact(ops)
            else:
                results = await store.set_many([op for op in ops if isinstance(op, SetOp)])
                failures.extend(f"{kind}: {r}" for r in results if r is not None)
        except StoreError as exc:
            failures.append(f"{kind}: {exc}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("key_set", KEY_SETS)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_opposite_order_writes_never_fail(
    backend: str, key_set: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    keys = KEY_SETS[key_set]
    clients = await _open_clients(backend, request, tmp_path)
    try:
        failures: list[str] = []
        started = time.perf_counter()
        await asyncio.gather(*(_client(s, keys, i, failures) for i, s in enumerate(clients)))
        elapsed = time.perf_counter() - started
        print(
            f"\n{backend}, {key_set}: {CLIENTS}x{REQUESTS} opposite-order writes, "
            f"{len(failures)} failed, {elapsed:.2f} s"
        )
        assert failures == [], failures[:5]
        # Every deadlock costs deadlock_timeout (1 s) before the server breaks it.
        assert elapsed < 10.0, f"{elapsed:.1f} s: requests waited on each other"
        assert len(await clients[0].bulk_get(keys)) == len(keys)  # and the store still serves
    finally:
        for store in dict.fromkeys(clients):
            await store.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL only: what remains of a conflict, and requests too big for one statement.


async def _postgres_store(postgres: pg_server.PgServer, **metadata: str) -> PostgreSQLStore:
    metadata.setdefault("connectionString", postgres.dsn)
    metadata.setdefault("tableName", "t_" + uuid.uuid4().hex[:12])
    return await PostgreSQLStore.open(metadata)


async def test_a_persistent_deadlock_is_retried_then_reported_as_a_conflict(
    postgres: pg_server.PgServer,
) -> None:
    import asyncpg

    store = await _postgres_store(postgres, timeoutInSeconds="1")
    try:
        calls = 0

        async def deadlocks_twice(conn: Any) -> int:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
            return int(await conn.fetchval("SELECT 7"))

        assert await store._run(deadlocks_twice, keys=["a"]) == 7
        assert calls == 3

        async def always(conn: Any) -> None:
            nonlocal calls
            calls += 1
            raise asyncpg.exceptions.SerializationError("could not serialize access")

        calls = 0
        started = time.monotonic()
        with pytest.raises(ETagMismatchError, match="nothing was applied, retry") as caught:
            await store._run(always, keys=["a", "b"])
        assert not isinstance(caught.value, StoreUnavailableError)
        assert "'a', 'b'" in str(caught.value)
        assert calls > 3  # retried for as long as the timeout allowed
        assert time.monotonic() - started < 1.2
    finally:
        await store.close()


async def test_an_in_filter_beyond_the_parameter_limit_just_works(
    postgres: pg_server.PgServer,
) -> None:
    store = await _postgres_store(postgres)
    try:
        for i in range(5):
            await store.set(SetOp(f"app||k{i}", f'{{"n": {i}}}'.encode()))
        values = [*range(100_000, 140_000), 1, 3]
        query = parse_query({"filter": {"IN": {"n": values}}})
        page = await store.query(query, key_prefix="app||")
        assert [r.key for r in page.results] == ["k1", "k3"]
        # An OR of more EQs than PostgreSQL binds parameters is evaluated by the engine.
        eqs = [{"EQ": {"n": v}} for v in values]
        page = await store.query(parse_query({"filter": {"OR": eqs}}), key_prefix="app||")
        assert [r.key for r in page.results] == ["k1", "k3"]
    finally:
        await store.close()


async def test_too_many_parameters_is_the_requests_fault_and_keeps_the_pool(
    postgres: pg_server.PgServer,
) -> None:
    store = await _postgres_store(postgres)
    try:
        # Two idle connections in the pool.
        await asyncio.gather(store.ping(), store.ping(), store.get("x"), store.get("y"))
        idle_before = [conn for conn, _ in store._pool._idle]
        assert len(idle_before) >= 2
        marks = ", ".join(f"${i}::int" for i in range(1, 40_001))
        with pytest.raises(StoreError, match="32767") as caught:
            await store._fetch(f"SELECT 1 WHERE 1 IN ({marks})", *range(40_000))
        assert not isinstance(caught.value, StoreUnavailableError)
        idle_after = [conn for conn, _ in store._pool._idle]
        assert set(map(id, idle_after)) == set(map(id, idle_before))
        assert all(not conn.is_closed() for conn in idle_after)
        await store.ping()
        # Key lists bind as one array: a bulk get or a transaction of 40,000 keys just works.
        keys = [f"bulk-{i}" for i in range(40_000)]
        await store.transact([SetOp(k, b"1") for k in keys])
        items = await store.bulk_get(keys)
        assert all(item is not None for item in items)
        await store.transact([DeleteOp(k) for k in keys])
    finally:
        await store.close()


def test_a_persistent_conflict_is_a_409_on_save_and_delete() -> None:
    from statecar_sidecar.api.handlers import _write_error
    from statecar_sidecar.stores.errors import WriteConflictError

    conflict = WriteConflictError("k", "keys 'k': concurrent requests kept aborting this one")
    error = _write_error("ERR_STATE_SAVE", "failed saving state", [conflict])
    assert (error.status, error.code) == (409, "ERR_STATE_SAVE")
