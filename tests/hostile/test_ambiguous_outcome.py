"""
Hostile tier: a write whose answer never came says "outcome unknown", and means it.

A write that was sent and then timed out or lost its connection may have been applied: the
client must read the key before retrying (a blind retry of a conditional write is judged
against its own result). It gets 500 `ERR_STATE_OUTCOME_UNKNOWN` with "outcome unknown: read
the key before retrying". A write that never left the sidecar (no connection could be had)
keeps daprd's 500 `ERR_STATE_SAVE`/`_DELETE`/`_TRANSACTION` "unavailable": nothing was applied.

Redis: the primary is stopped with SIGSTOP, as the issue did (writes used to hang, answer a plain
500 and be applied anyway). PostgreSQL: a row lock held by another session keeps a sent write
waiting past the timeout, and a terminated backend loses the connection under one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from tests.support import pg_server
from tests.support.redis_server import RedisProcess, running_redis
from tests.support.sidecar import SidecarProcess

from statecar_sidecar.stores.base import SetOp
from statecar_sidecar.stores.errors import OutcomeUnknownError, StoreUnavailableError
from statecar_sidecar.stores.postgresql import PostgreSQLStore

OUTCOME_UNKNOWN = "ERR_STATE_OUTCOME_UNKNOWN"
READ_TIMEOUT = 2.0  # the Redis component's readTimeout
DIAL_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def redis_primary() -> Iterator[RedisProcess]:
    with running_redis(["--appendonly", "yes"]) as server:
        yield server


@pytest.fixture(scope="module")
def sidecar(redis_primary: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("components")
    (folder / "redis.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata:
              name: redis
            spec:
              type: state.redis
              version: v1
              metadata:
              - name: redisHost
                value: {redis_primary.address}
              - name: readTimeout
                value: {int(READ_TIMEOUT * 1000)}ms
              - name: dialTimeout
                value: {int(DIAL_TIMEOUT * 1000)}ms
            """
        )
    )
    process = SidecarProcess(app_id="hostile", components_path=folder)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@pytest.mark.timeout(60)
def test_writes_sent_to_a_stopped_redis_say_outcome_unknown_and_were_applied(
    sidecar: SidecarProcess, redis_primary: RedisProcess
) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"ambiguous-{run}"
    with httpx.Client(base_url=f"{sidecar.url}/v1.0/state/redis", timeout=30) as api:
        assert api.post("", json=[{"key": f"{key}-del", "value": 0}]).status_code == 204
        writes = {
            "save": lambda: api.post("", json=[{"key": f"{key}-a", "value": 1}]),
            "bulk save": lambda: api.post(
                "", json=[{"key": f"{key}-b", "value": 2}, {"key": f"{key}-c", "value": 3}]
            ),
            "transaction": lambda: api.post(
                "/transaction",
                json={
                    "operations": [
                        {"operation": "upsert", "request": {"key": f"{key}-d", "value": 4}}
                    ]
                },
            ),
            "delete": lambda: api.delete(f"/{key}-del"),
        }
        redis_primary.pause()  # SIGSTOP: connected, never answers
        try:
            with concurrent.futures.ThreadPoolExecutor(len(writes)) as pool:
                futures = {name: pool.submit(_timed, call) for name, call in writes.items()}
                outcomes = {name: f.result() for name, f in futures.items()}
            # The sent writes' connection is gone; a new one hangs in its handshake, so this
            # write is never sent: unavailable, as before, and not applied.
            unsent, unsent_elapsed = _timed(
                lambda: api.post("", json=[{"key": f"{key}-never", "value": 5}])
            )
        finally:
            redis_primary.resume()
        for name, (answer, elapsed) in outcomes.items():
            body = answer.json()
            print(f"\n{name}: {answer.status_code} {body['errorCode']} after {elapsed:.2f} s")
            assert answer.status_code == 500, (name, body)
            assert body["errorCode"] == OUTCOME_UNKNOWN, (name, body)
            assert "outcome unknown: read the key before retrying" in body["message"]
            assert READ_TIMEOUT - 0.2 < elapsed < READ_TIMEOUT + 1.5, (name, elapsed)
        print(f"unsent: {unsent.status_code} {unsent.json()} after {unsent_elapsed:.2f} s")
        assert unsent.status_code == 500
        assert unsent.json()["errorCode"] == "ERR_STATE_SAVE"
        assert "unavailable" in unsent.json()["message"]
        # After SIGCONT Redis runs what it had received: every "unknown" write was applied.
        deadline = time.monotonic() + 10
        while True:
            try:
                values = {s: api.get(f"/{key}-{s}") for s in ("a", "b", "c", "d", "del", "never")}
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
        assert [values[s].json() for s in ("a", "b", "c", "d")] == [1, 2, 3, 4]
        assert values["del"].status_code == 204  # deleted
        assert values["never"].status_code == 204  # never sent, never applied


# ---------------------------------------------------------------------------------------------
# PostgreSQL.


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


async def test_postgres_write_sent_then_timed_out_or_cut_off_is_outcome_unknown(
    postgres: pg_server.PgServer,
) -> None:
    table = "t_" + uuid.uuid4().hex[:12]
    store = await PostgreSQLStore.open(
        {
            "connectionString": postgres.dsn,
            "tableName": table,
            "timeoutInSeconds": "1",
            "maxConns": "1",
        }
    )
    admin = await asyncpg.connect(postgres.dsn)
    try:
        await store.set(SetOp("k", b"1"))
        # maxConns 1, and its one connection busy: the write waits for it and is never sent.
        async with store._pool.connection():
            with pytest.raises(StoreUnavailableError, match="did not answer within 1s"):
                await store.set(SetOp("other", b"1"))
        assert await store.get("other") is None
        # Another session holds the row: the store's write is sent, then waits for the lock.
        locker = admin.transaction()
        await locker.start()
        await admin.execute(f'SELECT 1 FROM "{table}" WHERE key = $1 FOR UPDATE', "k")
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError, match="outcome unknown: read the key") as caught:
            await store.set(SetOp("k", b"2"))
        assert time.monotonic() - started < 1.5
        assert "none within 1s" in str(caught.value)
        await locker.rollback()

        # The connection lost under a sent write (its backend terminated), with time to spare.
        await store.close()
        store = await PostgreSQLStore.open(
            {"connectionString": postgres.dsn, "tableName": table, "timeoutInSeconds": "10"}
        )
        locker = admin.transaction()
        await locker.start()
        await admin.execute(f'SELECT 1 FROM "{table}" WHERE key = $1 FOR UPDATE', "k")
        sent = asyncio.ensure_future(store.set(SetOp("k", b"3")))
        pid = None
        for _ in range(250):
            await asyncio.sleep(0.02)
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'statecar'"
                " AND wait_event_type = 'Lock'"
            )
            if pid is not None:
                break
        assert pid is not None, await admin.fetch(
            "SELECT pid, application_name, state, wait_event_type, query FROM pg_stat_activity"
        )
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(OutcomeUnknownError, match="connection lost") as caught:
            await sent
        print(f"\n{caught.value}")
        await locker.rollback()
        item = await store.get("k")
        assert item is not None
        assert item.value in (b"1", b"2", b"3")  # "2" may well have landed: unknown it was
    finally:
        await admin.close()
        await store.close()
