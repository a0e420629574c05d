"""
The RESP client (`statecar_sidecar.stores.redis.resp` and `.client`) against real `redis-server` processes.

Each test that disturbs its server (pause, kill, restart, password, replication) starts its own;
the read/write tests share one per module. redis-py's synchronous client is used only as an
independent observer (INFO, replication state), never as the thing under test.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, running_redis
from tests.support.require import require

from statecar_sidecar.stores.redis.client import Client, SentinelConfig
from statecar_sidecar.stores.redis.resp import (
    Connection,
    RedisEndpoint,
    RedisReplyLostError,
    RedisUnavailableError,
    ReplyError,
    Script,
    frame,
)

pytestmark = pytest.mark.timeout(90)

HOST = "127.0.0.1"


def observer(server: RedisProcess, **kwargs: Any) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, socket_timeout=5, **kwargs)


def command_calls(server: RedisProcess, **kwargs: Any) -> dict[str, int]:
    """`INFO commandstats` as {command: calls}, read with an independent client."""
    stats = observer(server, **kwargs).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def count_writes(conn: Connection) -> list[bytes]:
    """Record every transport.write of `conn` (to check commands are coalesced)."""
    writes: list[bytes] = []
    transport = conn._transport
    assert transport is not None
    original = transport.write

    def write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        original(data)

    conn._transport = _WriteSpy(transport, write)  # type: ignore[assignment]  # a spy in the transport's place
    return writes


class _WriteSpy:
    def __init__(self, transport: asyncio.Transport, write: Any) -> None:
        self._transport = transport
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


async def eventually(check: Any, timeout: float, interval: float = 0.05) -> Any:
    """Call async `check()` until it stops raising; return its result or re-raise at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- shared server


@pytest.fixture(scope="module")
def server() -> Iterator[RedisProcess]:
    with running_redis() as srv:
        yield srv


@pytest.fixture
async def conn(server: RedisProcess) -> AsyncIterator[Connection]:
    connection = await Connection.open(RedisEndpoint(HOST, server.port))
    yield connection
    await connection.close()


async def test_execute_decodes_replies(conn: Connection) -> None:
    assert await conn.execute("SET", "greeting", "héllo") == b"OK"
    assert await conn.execute(b"GET", b"greeting") == "héllo".encode()
    assert await conn.execute("GET", "no-such-key") is None
    assert await conn.execute("DEL", "counter") in (0, 1)
    assert await conn.execute("INCR", "counter") == 1
    assert await conn.execute("INCRBY", "counter", 41) == 42
    assert await conn.execute("HSET", "h", "f1", "v1", "f2", 2) == 2
    assert await conn.execute("HGETALL", "h") == [b"f1", b"v1", b"f2", b"2"]
    assert await conn.execute("HMGET", "h", "f1", "nope") == [b"v1", None]
    assert await conn.execute("LRANGE", "no-list", 0, -1) == []
    assert await conn.execute("BLPOP", "no-list", 0.01) is None  # nil array
    assert await conn.execute("PING") == b"PONG"
    # Binary-safe values with CR/LF and NUL, and one large enough to arrive in many chunks.
    binary = b"a\r\nb\x00c" * 3
    big = bytes(range(256)) * 8192  # 2 MiB
    assert await conn.execute("SET", "bin", binary) == b"OK"
    assert await conn.execute("GET", "bin") == binary
    assert await conn.execute("SET", "big", big) == b"OK"
    assert await conn.execute("GET", "big") == big
    assert await conn.execute("SET", "float", 1.5) == b"OK"
    assert await conn.execute("GET", "float") == b"1.5"
    assert not conn.closed


@pytest.mark.parametrize(
    ("head", "rest"),
    [
        ((b"EVALSHA", b"0" * 40, b"1"), (b"app||k", b"", b"0", b'"x"', b"5000")),
        ((b"HMGET",), (b"k", b"data", b"version")),
        ((b"SET", b"100%"), (b"%d %s %b %%",)),  # a % in a word or an argument is literal
        ((b"ECHO",), ("\u00e9\r\n$3".encode(), b"\x00" * 3)),
        ((b"PING",), ()),
    ],
)
def test_a_filled_in_frame_is_the_command_hiredis_packs(
    head: tuple[bytes, ...], rest: tuple[bytes, ...]
) -> None:
    filled = frame(*head, rest=len(rest)) % tuple(x for arg in rest for x in (len(arg), arg))
    packed = hiredis.pack_command((*head, *rest))  # type: ignore[arg-type]  # its stub types a 1-tuple
    assert filled == packed


async def test_a_packed_command_runs_in_order_with_the_others(conn: Connection) -> None:
    set_frame = frame(b"SET", rest=2)
    calls = [
        conn.execute_packed(set_frame % (6, b"packed", 2, b"\xff%")),
        conn.execute("GET", "packed"),
        conn.execute_packed(frame(b"GET", rest=1) % (6, b"packed")),
    ]
    assert await asyncio.gather(*calls) == [b"OK", b"\xff%", b"\xff%"]
    with pytest.raises(ReplyError, match="wrong number of arguments"):
        await conn.execute_packed(frame(b"GET", rest=0))
    assert await conn.execute("PING") == b"PONG"


async def test_a_packed_command_reconnects_as_execute_does(server: RedisProcess) -> None:
    client = Client(RedisEndpoint(HOST, server.port))
    ping = frame(b"PING", rest=0)
    assert await client.execute_packed(ping) == b"PONG"
    connection = client._conn
    assert connection is not None
    await connection.close()  # as a dropped connection leaves it: the next call opens another
    assert await client.execute_packed(ping) == b"PONG"
    assert client._conn is not connection
    await client.close()


async def test_bad_arguments_are_refused_before_sending(conn: Connection) -> None:
    with pytest.raises(ValueError, match="empty"):
        await conn.execute()
    with pytest.raises(TypeError):
        await conn.execute("SET", "k", True)  # bool is an int to the type checker, not to us
    with pytest.raises(TypeError):
        await conn.execute("SET", "k", None)  # type: ignore[arg-type]  # the wrong type is the point
    assert await conn.execute("PING") == b"PONG"


async def test_error_replies_raise_and_the_connection_stays_usable(conn: Connection) -> None:
    await conn.execute("SET", "text", "abc")
    with pytest.raises(ReplyError) as info:
        await conn.execute("INCR", "text")
    assert info.value.code == "ERR"
    assert "not an integer" in str(info.value)
    with pytest.raises(ReplyError) as info:
        await conn.execute("HGET", "text", "f")
    assert info.value.code == "WRONGTYPE"
    assert str(info.value).startswith("WRONGTYPE Operation against a key")
    with pytest.raises(ReplyError, match="unknown command"):
        await conn.execute("NOSUCHCOMMAND")
    assert await conn.execute("GET", "text") == b"abc"
    assert not conn.closed


async def test_thousand_concurrent_calls_share_one_connection(conn: Connection) -> None:
    await conn.execute("DEL", "concurrent-counter")
    writes = count_writes(conn)

    async def one(i: int) -> tuple[Any, Any, Any]:
        set_reply = await conn.execute("SET", f"c:{i}", f"value-{i}")
        get_reply = await conn.execute("GET", f"c:{i}")
        incr = await conn.execute("INCR", "concurrent-counter")
        return set_reply, get_reply, incr

    results = await asyncio.gather(*(one(i) for i in range(1000)))
    assert [r[:2] for r in results] == [(b"OK", f"value-{i}".encode()) for i in range(1000)]
    # Each INCR got its own reply: a mismatched FIFO would show duplicates or gaps.
    assert sorted(r[2] for r in results) == list(range(1, 1001))
    # Implicit pipelining: the 3000 commands went out in far fewer writes than commands.
    assert sum(w.count(b"*") for w in writes) >= 3000
    assert len(writes) < 300, len(writes)


async def test_a_cancelled_call_does_not_shift_replies(conn: Connection) -> None:
    await conn.execute("MSET", "a", "A", "b", "B")
    task = asyncio.ensure_future(conn.execute("GET", "a"))
    await asyncio.sleep(0)  # sent, reply not read yet
    task.cancel()
    assert await conn.execute("GET", "b") == b"B"
    assert await conn.execute("GET", "a") == b"A"
    assert task.cancelled()


async def test_pipeline_returns_errors_in_place_in_one_write(conn: Connection) -> None:
    writes = count_writes(conn)
    replies = await conn.pipeline(
        [
            ("SET", "p", "x"),
            ("INCR", "p"),
            ["GET", "p"],
            ("HGET", "p", "f"),
            ("EXISTS", "p", "nope"),
        ]
    )
    assert len(writes) == 1
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError)
    assert "not an integer" in str(replies[1])
    assert replies[2] == b"x"
    assert isinstance(replies[3], ReplyError)
    assert replies[3].code == "WRONGTYPE"
    assert replies[4] == 1
    assert await conn.pipeline([]) == []
    # A transaction: the EXEC reply nests each command's reply, errors included.
    replies = await conn.pipeline(
        [("MULTI",), ("SET", "t", "1"), ("HGET", "t", "f"), ("GET", "t"), ("EXEC",)]
    )
    assert replies[:4] == [b"OK", b"QUEUED", b"QUEUED", b"QUEUED"]
    exec_reply = replies[4]
    assert exec_reply[0] == b"OK"
    assert exec_reply[2] == b"1"
    assert isinstance(exec_reply[1], ReplyError)


async def test_pipelines_and_single_calls_interleave(conn: Connection) -> None:
    async def pipe(i: int) -> list[Any]:
        return await conn.pipeline([("SET", f"pi:{i}", i), ("GET", f"pi:{i}"), ("PING",)])

    async def single(i: int) -> Any:
        return await conn.execute("ECHO", f"e{i}")

    results = await asyncio.gather(*(pipe(i) if i % 2 else single(i) for i in range(400)))
    for i, result in enumerate(results):
        if i % 2:
            assert result == [b"OK", str(i).encode(), b"PONG"]
        else:
            assert result == f"e{i}".encode()


INCR_PLUS = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def test_evalsha_is_one_command_and_recovers_from_noscript(
    conn: Connection, server: RedisProcess
) -> None:
    assert INCR_PLUS.sha1 == observer(server).script_load(INCR_PLUS.source.decode()).encode()
    await conn.execute("DEL", "s")
    await conn.execute("SCRIPT", "FLUSH")
    before = command_calls(server)
    assert await conn.evalsha(INCR_PLUS, ["s"], [5]) == 5  # NOSCRIPT -> LOAD -> EVALSHA
    middle = command_calls(server)
    assert middle["evalsha"] - before.get("evalsha", 0) == 2
    assert middle["script|load"] - before.get("script|load", 0) == 1
    assert await conn.evalsha(INCR_PLUS, ["s"], [1]) == 6  # the normal path: one EVALSHA
    after = command_calls(server)
    assert after["evalsha"] - middle["evalsha"] == 1
    assert after["script|load"] == middle["script|load"]
    assert after.get("eval", 0) == before.get("eval", 0)

    failing = Script("return redis.call('NOSUCHCOMMAND')")
    with pytest.raises(ReplyError) as info:
        await conn.evalsha(failing)
    assert "NOSCRIPT" not in str(info.value)


async def test_pipeline_with_scripts_reloads_and_retries(
    conn: Connection, server: RedisProcess
) -> None:
    await conn.execute("DEL", "ps")
    await conn.execute("SCRIPT", "FLUSH")
    commands = [INCR_PLUS.command(["ps"], [2]), ("GET", "ps")]
    # Plain pipeline: NOSCRIPT comes back in place, nothing ran.
    first = await conn.pipeline(commands)
    assert isinstance(first[0], ReplyError)
    assert first[0].code == "NOSCRIPT"
    assert first[1] is None
    assert await conn.pipeline_with_scripts(commands, [INCR_PLUS]) == [2, b"2"]
    before = command_calls(server)
    assert await conn.pipeline_with_scripts(commands, [INCR_PLUS]) == [4, b"4"]
    after = command_calls(server)
    assert after["evalsha"] - before["evalsha"] == 1
    assert after["script|load"] == before["script|load"]


async def test_select_db_isolation(server: RedisProcess) -> None:
    db3 = await Connection.open(RedisEndpoint(HOST, server.port, db=3))
    db0 = await Connection.open(RedisEndpoint(HOST, server.port))
    try:
        await db0.execute("DEL", "isolated")
        assert await db3.execute("SET", "isolated", "three") == b"OK"
        assert await db0.execute("GET", "isolated") is None
        assert await db3.execute("GET", "isolated") == b"three"
        assert observer(server, db=3).get("isolated") == b"three"
    finally:
        await db3.close()
        await db0.close()
    with pytest.raises(ReplyError, match=rf"redis at {HOST}:{server.port} rejected SELECT 99"):
        await Connection.open(RedisEndpoint(HOST, server.port, db=99))


async def test_connect_failures_are_quick_and_named(server: RedisProcess) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match=rf"redis at {HOST}:{port}"):
        await Connection.open(RedisEndpoint(HOST, port))
    assert time.monotonic() - started < 0.5
    # An address that never answers (TEST-NET-1, RFC 5737): bounded by connect_timeout.
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match=r"192\.0\.2\.1:6379"):
        await Connection.open(RedisEndpoint("192.0.2.1", connect_timeout=0.2))
    assert time.monotonic() - started < 1.0


async def test_closed_connection_refuses_calls(server: RedisProcess) -> None:
    connection = await Connection.open(RedisEndpoint(HOST, server.port))
    await connection.close()
    assert connection.closed
    with pytest.raises(RedisUnavailableError, match="closed"):
        await connection.execute("PING")
    with pytest.raises(RedisUnavailableError, match="closed"):
        await connection.pipeline([("PING",)])
    await connection.close()  # idempotent


# --------------------------------------------------------------------------- authentication


async def test_auth_good_and_bad_passwords() -> None:
    user_acl = ["alice", "on", ">alice-pw", "~*", "&*", "+@all"]
    with running_redis(["--requirepass", "s3cret-pw", "--user", *user_acl]) as srv:
        # No credentials: the handshake's PING is refused, so is the connection.
        with pytest.raises(ReplyError, match=f"{HOST}:{srv.port} rejected PING: NOAUTH"):
            await Connection.open(RedisEndpoint(HOST, srv.port))

        good = await Connection.open(RedisEndpoint(HOST, srv.port, password="s3cret-pw", db=2))
        assert await good.execute("SET", "k", "v") == b"OK"
        await good.close()
        alice = await Connection.open(
            RedisEndpoint(HOST, srv.port, username="alice", password="alice-pw", db=2)
        )
        assert await alice.execute("GET", "k") == b"v"
        await alice.close()

        bad = RedisEndpoint(HOST, srv.port, password="wrong-pw-123", db=2)
        assert "wrong-pw-123" not in repr(bad)
        with pytest.raises(ReplyError) as info:
            await Connection.open(bad)
        text = str(info.value)
        assert text.startswith(f"redis at {HOST}:{srv.port} rejected AUTH: WRONGPASS")
        assert "wrong-pw-123" not in text
        assert "s3cret" not in text

        client = Client(bad)
        for _ in range(2):  # the second falls in the backoff window: same error, no attempt
            with pytest.raises(RedisUnavailableError) as unavailable:
                await client.execute("PING")
            assert "rejected AUTH" in str(unavailable.value)
            assert "wrong-pw-123" not in str(unavailable.value)
        await client.close()

        sentinel = SentinelConfig([(HOST, 1)], "m", password="sentinel-pw")
        assert "sentinel-pw" not in repr(sentinel)


# --------------------------------------------------------------------------- failures


async def test_command_timeout_when_the_server_is_paused() -> None:
    with running_redis() as srv:
        endpoint = RedisEndpoint(HOST, srv.port, command_timeout=0.3, connect_timeout=0.5)
        client = Client(endpoint)
        assert await client.ping()
        direct = await Connection.open(endpoint)
        srv.pause()
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.execute("GET", f"k{i}") for i in range(20)),
                direct.pipeline([("PING",), ("PING",)]),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
            # Every command was written before the deadline: whether Redis runs it is unknown.
            assert all(isinstance(r, RedisReplyLostError) for r in results), results
            assert f"redis at {HOST}:{srv.port} did not reply in time" in str(results[0])
            assert 0.25 <= elapsed < 0.8, elapsed
            assert direct.closed
            # Still paused: the kernel accepts the TCP connection but the handshake's PING gets
            # no answer, so reconnecting fails within connect_timeout; the next call waits out
            # the backoff (50 ms after one failure) and fails within connect_timeout again.
            for bound in (0.8, 0.9):
                started = time.monotonic()
                with pytest.raises(RedisUnavailableError, match=r"within 0\.5 s") as caught:
                    await client.execute("GET", "k")
                assert time.monotonic() - started < bound
                # The handshake's PING was sent, the caller's GET never was.
                assert not isinstance(caught.value, RedisReplyLostError)
        finally:
            srv.resume()
        started = time.monotonic()
        assert await eventually(client.ping, timeout=3.0)
        assert time.monotonic() - started < 1.5
        assert await client.execute("SET", "after", "pause") == b"OK"
        await client.close()
        await direct.close()


async def test_connection_loss_fails_pending_calls() -> None:
    with running_redis() as srv:
        connection = await Connection.open(RedisEndpoint(HOST, srv.port))
        srv.pause()
        pending = [asyncio.ensure_future(connection.execute("GET", "k")) for _ in range(5)]
        await asyncio.sleep(0.05)
        srv.stop(signal.SIGKILL)
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, RedisUnavailableError) for r in results), results
        assert f"connection to redis at {HOST}:{srv.port} lost" in str(results[0])
        assert connection.closed


async def test_only_calls_whose_command_was_written_have_their_reply_lost() -> None:
    with running_redis() as srv:
        connection = await Connection.open(RedisEndpoint(HOST, srv.port))
        srv.pause()
        try:
            # The first call on an idle connection is written at once; the others issued in
            # the same loop iteration wait in the buffer for one write on the next iteration,
            # which the close comes before.
            calls = [connection.execute("SET", f"k{i}", "v") for i in range(3)]
            await connection.close()
            results = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            srv.resume()
        assert isinstance(results[0], RedisReplyLostError), results
        assert all(type(r) is RedisUnavailableError for r in results[1:]), results
        with pytest.raises(RedisUnavailableError) as caught:
            await connection.execute("SET", "k", "v")  # on a closed connection: never sent
        assert not isinstance(caught.value, RedisReplyLostError)
        with redis.Redis(host=HOST, port=srv.port) as raw:
            assert raw.get("k0") in (b"v", None)  # ran, or not: unknown
            assert raw.get("k1") is None
            assert raw.get("k2") is None


async def test_server_restart_fails_within_the_backoff_then_reconnects() -> None:
    with running_redis() as srv:
        client = Client(RedisEndpoint(HOST, srv.port, connect_timeout=1.0))
        assert await client.execute("SET", "k", "v") == b"OK"
        srv.stop()
        await asyncio.sleep(0.05)  # let the loop see the connection close
        started = time.monotonic()
        failures = 0
        while time.monotonic() - started < 1.0:
            call = time.monotonic()
            with pytest.raises(RedisUnavailableError, match=f"{HOST}:{srv.port}"):
                await client.execute("GET", "k")
            # Bounded by the backoff (0.5 s at most) plus a refused connect: well below
            # connect_timeout; callers wait for the shared next attempt instead of failing blind.
            assert time.monotonic() - call < 0.7
            failures += 1
            await asyncio.sleep(0.01)
        assert failures >= 3
        assert client.address is None

        srv.start()  # same port, empty dataset (no persistence)
        back = time.monotonic()
        assert await eventually(lambda: client.execute("GET", "k"), timeout=3.0) is None
        assert time.monotonic() - back < 1.0  # backoff is capped at 0.5 s
        assert client.address == f"{HOST}:{srv.port}"
        assert await client.ping()
        await client.close()
        with pytest.raises(RedisUnavailableError, match="closed"):
            await client.execute("PING")


# --------------------------------------------------------------------------- replication


# Without it the master waits 5 s before a diskless full sync to a new replica.
FAST_SYNC = ["--repl-diskless-sync-delay", "0"]


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[RedisProcess, RedisProcess]]:
    with (
        running_redis(FAST_SYNC) as master,
        running_redis(["--replicaof", HOST, str(master.port)]) as replica,
    ):
        deadline = time.monotonic() + 15
        while observer(replica).info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica never synced"
            time.sleep(0.05)
        yield master, replica


async def test_dedicated_connections_are_pooled(
    replicated: tuple[RedisProcess, RedisProcess],
) -> None:
    master, _ = replicated
    client = Client(RedisEndpoint(HOST, master.port), max_dedicated=2)
    async with client.dedicated() as first:
        pass
    async with client.dedicated() as again:
        assert again is first  # reused
    assert not first.closed

    held: list[Connection] = []
    gate = asyncio.Event()

    async def hold() -> None:
        async with client.dedicated() as conn:
            held.append(conn)
            await gate.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert len(held) == 2
    assert held[0] is not held[1]
    gate.set()
    await asyncio.gather(*holders)
    assert len(held) == 3
    await client.close()
    assert first.closed


async def test_wait_on_a_dedicated_connection_does_not_stall_the_shared_one(
    replicated: tuple[RedisProcess, RedisProcess],
) -> None:
    master, replica = replicated
    client = Client(RedisEndpoint(HOST, master.port))
    async with client.dedicated() as conn:
        replies = await conn.pipeline_with_scripts(
            [INCR_PLUS.command(["w"], [1]), ("WAIT", 1, 2000)], [INCR_PLUS]
        )
        assert replies[1] == 1
    assert observer(replica).get("w") is not None

    replica.pause()
    try:

        async def strong_write() -> tuple[list[Any], float]:
            started = time.monotonic()
            async with client.dedicated() as conn:
                result = await conn.pipeline([("SET", "w2", "x"), ("WAIT", 1, 200)])
            return result, time.monotonic() - started

        async def reads() -> list[float]:
            latencies = []
            for _ in range(15):
                started = time.monotonic()
                assert await client.execute("GET", "w2") in (None, b"x")
                latencies.append(time.monotonic() - started)
                await asyncio.sleep(0.005)
            return latencies

        (result, elapsed), latencies = await asyncio.gather(strong_write(), reads())
        assert result == [b"OK", 0]  # no replica acknowledged
        assert 0.18 <= elapsed < 0.6, elapsed
        assert max(latencies) < 0.05, latencies  # the shared connection kept serving

        # A WAIT longer than command_timeout needs a reply_timeout past it, else the connection
        # gives up (and is closed, not returned to the pool).
        short = Client(RedisEndpoint(HOST, master.port, command_timeout=0.2))
        async with short.dedicated() as conn:
            started = time.monotonic()
            assert await conn.execute("WAIT", 1, 400, reply_timeout=1.0) == 0
            assert time.monotonic() - started >= 0.38
            with pytest.raises(RedisUnavailableError, match="did not reply in time"):
                await conn.execute("WAIT", 1, 400)
            assert conn.closed
        async with short.dedicated() as fresh:
            assert fresh is not conn
            assert await fresh.execute("PING") == b"PONG"
        await short.close()
    finally:
        replica.resume()
    await client.close()


# --------------------------------------------------------------------------- sentinel


async def test_sentinel_resolves_the_master_and_follows_a_failover() -> None:
    with (
        running_redis(FAST_SYNC) as master,
        running_redis(["--replicaof", HOST, str(master.port)]) as replica,
    ):
        config = (
            f"sentinel monitor mymaster {HOST} {master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 2000\n"
            "sentinel failover-timeout mymaster 5000\n"
            # Declared, so Sentinel need not wait for its next 10 s INFO round to find it.
            f"sentinel known-replica mymaster {HOST} {replica.port}\n"
            f"sentinel monitor notmaster {HOST} {replica.port} 1\n"
        )
        with running_redis(sentinel_config=config) as sentinel:
            dead_sentinel = (HOST, free_port())
            endpoint = RedisEndpoint("master.invalid", connect_timeout=1.0)
            client = Client(
                endpoint,
                sentinel=SentinelConfig([dead_sentinel, (HOST, sentinel.port)], "mymaster"),
            )
            assert await client.execute("SET", "s", "1") == b"OK"
            assert client.address == master.address
            assert client._sentinels[0] == (HOST, sentinel.port)  # the one that answered leads

            unknown = Client(endpoint, sentinel=SentinelConfig([(HOST, sentinel.port)], "nope"))
            with pytest.raises(RedisUnavailableError, match="does not know 'nope'"):
                await unknown.ping()
            await unknown.close()

            wrong_role = Client(
                endpoint, sentinel=SentinelConfig([(HOST, sentinel.port)], "notmaster")
            )
            with pytest.raises(RedisUnavailableError, match="has role 'slave'"):
                await wrong_role.ping()
            await wrong_role.close()

            # Fail over once Sentinel has discovered the replica; the client must follow.
            watcher = observer(sentinel)

            async def failover() -> None:
                # NOGOODSLAVE until Sentinel has discovered the replica and seen it healthy.
                watcher.execute_command("SENTINEL", "FAILOVER", "mymaster")  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

            await eventually(failover, timeout=30, interval=0.2)
            started = time.monotonic()

            async def written_to_new_master() -> None:
                await client.execute("SET", "s", "2")
                assert client.address == replica.address

            await eventually(written_to_new_master, timeout=30, interval=0.1)
            # The client polls Sentinel each second rather than waiting for the old master to
            # be demoted (which kills our connection, but only after 10 s or more).
            assert time.monotonic() - started < 6.0
            assert observer(replica).get("s") == b"2"
            await client.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("openssl")
    directory = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return directory


async def test_tls(tls_files: Path) -> None:
    cert, key = str(tls_files / "cert.pem"), str(tls_files / "key.pem")
    args = ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
    with running_redis([*args, "--tls-auth-clients", "no"], tls=True) as srv:
        insecure = await Connection.open(RedisEndpoint(HOST, srv.port, tls=True, tls_insecure=True))
        assert await insecure.execute("PING") == b"PONG"
        await insecure.close()

        context = ssl.create_default_context(cafile=cert)
        client = Client(RedisEndpoint(HOST, srv.port, tls=True), ssl_context=context)
        assert await client.execute("SET", "tls", "yes") == b"OK"
        assert await client.execute("GET", "tls") == b"yes"
        await client.close()

        with pytest.raises(RedisUnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
            await Connection.open(RedisEndpoint(HOST, srv.port, tls=True))


async def test_the_first_call_after_redis_returns_succeeds_even_inside_the_backoff() -> None:
    with running_redis() as srv:
        client = Client(RedisEndpoint(HOST, srv.port, connect_timeout=1.0))
        assert await client.execute("SET", "k", "v") == b"OK"
        srv.stop()
        for _ in range(4):  # grow the backoff to its cap
            with pytest.raises(RedisUnavailableError):
                await client.execute("GET", "k")
        srv.start()
        # No `eventually`: the very next call waits out the backoff and then connects.
        assert await client.execute("PING") == b"PONG"
        await client.close()
