"""
Backend reachability as the operator measures it.

Most tests talk to a tiny in-process RESP server (no Redis needed); the last ones use a real
`redis-server` and PostgreSQL when installed (skipped otherwise), including the stop/start flip
of BackendReachable that the e2e tier checks end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from tests.support import pg_server
from tests.support.ports import free_port
from tests.support.redis_server import running_redis

from statecar_contract.components import ResolvedComponent
from statecar_operator.reconciliation.reachability import measure

Reply = Callable[[list[bytes]], bytes | None]


@contextlib.asynccontextmanager
async def resp_server(reply: Reply) -> AsyncIterator[int]:
    """A RESP server answering each command with `reply(args)` (None: never answer)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readline()
                if not header:
                    return
                count = int(header[1:])
                args = []
                for _ in range(count):
                    await reader.readline()
                    args.append((await reader.readline())[:-2])
                answer = reply(args)
                if answer is None:
                    await asyncio.sleep(3600)
                writer.write(answer or b"")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()


def redis(port: int, **metadata: str) -> ResolvedComponent:
    return ResolvedComponent(
        name="orders", type="state.redis", metadata={"redisHost": f"127.0.0.1:{port}", **metadata}
    )


def password_server(password: bytes) -> Reply:
    state = {"authed": False}

    def reply(args: list[bytes]) -> bytes:
        if args[0] == b"AUTH":
            if args[-1] == password:
                state["authed"] = True
                return b"+OK\r\n"
            return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        if not state["authed"]:
            return b"-NOAUTH Authentication required.\r\n"
        return b"+PONG\r\n"

    return reply


async def test_ping_answered_is_reachable() -> None:
    async with resp_server(lambda args: b"+PONG\r\n") as port:
        outcome = await measure(redis(port), timeout=2)
    assert (outcome.status, outcome.reason) == ("True", "Reachable")
    assert outcome.message == f"127.0.0.1:{port} answers PING"


async def test_auth_then_ping() -> None:
    # One server per case: the fake keeps its "authenticated" flag for the server's lifetime.
    async with resp_server(password_server(b"s3cret")) as port:
        assert (await measure(redis(port, redisPassword="s3cret"), timeout=2)).status == "True"
    async with resp_server(password_server(b"s3cret")) as port:
        wrong = await measure(redis(port, redisPassword="nope"), timeout=2)
    async with resp_server(password_server(b"s3cret")) as port:
        missing = await measure(redis(port), timeout=2)
    assert (wrong.status, wrong.reason) == ("False", "AuthenticationFailed")
    assert "WRONGPASS" in wrong.message
    assert (missing.status, missing.reason) == ("False", "AuthenticationRequired")


async def test_acl_user_is_sent_with_the_password() -> None:
    seen: list[list[bytes]] = []

    def reply(args: list[bytes]) -> bytes:
        seen.append(args)
        return b"+OK\r\n" if args[0] == b"AUTH" else b"+PONG\r\n"

    async with resp_server(reply) as port:
        await measure(redis(port, redisUsername="app", redisPassword="pw"), timeout=2)
    assert seen[0] == [b"AUTH", b"app", b"pw"]


async def test_a_closed_port_is_refused() -> None:
    outcome = await measure(redis(free_port()), timeout=2)
    assert (outcome.status, outcome.reason) == ("False", "ConnectionRefused")


async def test_a_silent_server_times_out_within_the_bound() -> None:
    async with resp_server(lambda args: None) as port:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = await measure(redis(port), timeout=0.3)
        assert loop.time() - started < 2
    assert (outcome.status, outcome.reason) == ("False", "Timeout")


async def test_an_unresolvable_host() -> None:
    component = ResolvedComponent(
        name="x", type="state.redis", metadata={"redisHost": "no-such-host.invalid:6379"}
    )
    outcome = await measure(component, timeout=5)
    assert outcome.status == "False"
    assert outcome.reason in {"NameResolutionFailed", "Timeout"}


async def test_the_first_answering_host_of_a_list_wins() -> None:
    async with resp_server(lambda args: b"+PONG\r\n") as port:
        component = ResolvedComponent(
            name="x",
            type="state.redis",
            metadata={
                "redisHost": f"127.0.0.1:{free_port()},127.0.0.1:{port}",
                # Only Sentinel takes a list of hosts: the probe PINGs the Sentinels.
                "failover": "true",
                "sentinelMasterName": "mymaster",
            },
        )
        assert (await measure(component, timeout=2)).status == "True"


async def test_bad_settings_are_reported() -> None:
    component = ResolvedComponent(
        name="x", type="state.redis", metadata={"redisHost": "a:notaport"}
    )
    outcome = await measure(component, timeout=1)
    assert (outcome.status, outcome.reason) == ("False", "BadAddress")


@pytest.mark.parametrize("kind", ["state.sqlite", "state.in-memory"])
async def test_pod_local_stores_have_nothing_to_reach(kind: str) -> None:
    outcome = await measure(ResolvedComponent(name="x", type=kind), timeout=1)
    assert (outcome.status, outcome.reason) == ("True", "PodLocal")


@pytest.mark.parametrize(
    ("metadata", "reason", "field"),
    [
        ({"redisHost": "[::1"}, "BadAddress", "redisHost"),
        ({"redisHost": "a", "redisPort": "abc"}, "BadAddress", "redisPort"),
        ({"redisHost": "a:6379", "enableTLS": "maybe"}, "BadSettings", "enableTLS"),
        ({"redisHost": "a:1,b:2"}, "BadAddress", "redisHost"),
        ({"redisHost": "a", "failover": "true"}, "BadSettings", "sentinelMasterName"),
    ],
)
async def test_settings_the_sidecar_refuses_are_reported_not_guessed(
    metadata: dict[str, str], reason: str, field: str
) -> None:
    # The probe reads the same RedisSettings as the sidecar: `enableTLS: maybe` is not false.
    outcome = await measure(
        ResolvedComponent(name="x", type="state.redis", metadata=metadata), timeout=1
    )
    assert (outcome.status, outcome.reason) == ("False", reason)
    assert f"spec.metadata.{field}" in outcome.message


async def test_a_malformed_connection_string_is_a_bad_address() -> None:
    component = ResolvedComponent(
        name="x",
        type="state.postgresql",
        metadata={"connectionString": "host=db port=notaport password=s3cret"},
    )
    outcome = await measure(component, timeout=1)
    assert (outcome.status, outcome.reason) == ("False", "BadAddress")
    assert "spec.metadata.connectionString" in outcome.message
    assert "s3cret" not in outcome.message


async def test_postgres_refused() -> None:
    component = ResolvedComponent(
        name="x",
        type="state.postgresql",
        metadata={"connectionString": f"host=127.0.0.1 port={free_port()} user=u dbname=x"},
    )
    outcome = await measure(component, timeout=3)
    assert (outcome.status, outcome.reason) == ("False", "ConnectionRefused")


async def test_postgres_without_asyncpg_falls_back_to_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    # reachability imports asyncpg through `importlib.import_module`, looked up at call time.
    real_import = importlib.import_module

    def no_asyncpg(name: str, *args: Any) -> Any:
        if name == "asyncpg":
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_asyncpg)
    async with resp_server(lambda args: b"") as port:
        component = ResolvedComponent(
            name="x",
            type="state.postgresql",
            metadata={"connectionString": f"host=127.0.0.1 port={port}"},
        )
        outcome = await measure(component, timeout=2)
    assert (outcome.status, outcome.reason) == ("True", "TCPOnly")


# --- real servers (skipped when not installed) ------------------------------------------------


async def test_a_real_redis_flips_when_stopped_and_started() -> None:
    with running_redis(["--requirepass", "s3cret"]) as server:
        component = ResolvedComponent(
            name="orders",
            type="state.redis",
            metadata={"redisHost": server.address, "redisPassword": "s3cret"},
        )
        assert (await measure(component, timeout=2)).status == "True"
        server.stop()
        down = await measure(component, timeout=2)
        assert (down.status, down.reason) == ("False", "ConnectionRefused")
        server.start()
        assert (await measure(component, timeout=2)).status == "True"


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


async def test_a_real_postgres_answers_select_1(postgres: pg_server.PgServer) -> None:
    component = ResolvedComponent(
        name="catalog", type="state.postgresql", metadata={"connectionString": postgres.dsn}
    )
    outcome = await measure(component, timeout=5)
    assert (outcome.status, outcome.reason) == ("True", "Reachable")
    libpq = (
        f"host={postgres.host} port={postgres.port} user={postgres.user} dbname=no_such_database"
    )
    missing = await measure(
        ResolvedComponent(name="c", type="state.postgresql", metadata={"connectionString": libpq}),
        timeout=5,
    )
    assert (missing.status, missing.reason) == ("False", "DatabaseNotFound")
