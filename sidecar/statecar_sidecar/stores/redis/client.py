"""
``Client``: what the Redis store uses on top of `resp`'s connections.

One shared, lazily (re)connected multiplexed connection, optional Sentinel master discovery, a
small pool of dedicated connections for blocking commands such as ``WAIT``, fail-fast behaviour
with a short backoff while Redis is down, and recovery on its own once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from statecar_contract.settings import RedisSettings
from statecar_contract.settings.redis_tls import redis_tls_context
from statecar_contract.settings.values import SettingValueError
from statecar_sidecar.stores.errors import StoreError
from statecar_sidecar.stores.redis.resp import (
    Arg,
    Command,
    Connection,
    RedisEndpoint,
    RedisReplyLostError,
    RedisUnavailableError,
    ReplyError,
    Script,
)

__all__ = ["Client", "SentinelConfig", "tls_context"]

# Client's reconnect backoff: the next attempt is allowed 50 ms after a failure, doubling up to
# 0.5 s. A process is back at most half a second after Redis is, yet never hammers a dead server.
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 0.5

# Sentinel mode: how often Client asks Sentinel where the master is (see Client._watch_master).
_SENTINEL_POLL: Final = 1.0


@dataclass(frozen=True)
class SentinelConfig:
    """How to find the master through Redis Sentinel.

    The credentials here are the Sentinels' own. The master's credentials, db, TLS settings and
    timeouts come from the ``RedisEndpoint`` given to ``Client``, whose host and port are replaced
    by the address Sentinel reports.
    """

    sentinels: Sequence[tuple[str, int]]
    master_name: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_insecure: bool = False


class Client:
    """What stores use: one shared multiplexed connection plus a few dedicated ones.

    Nothing connects in ``__init__``. The first call connects, and so does any call made after
    the shared connection was closed or lost: through Sentinel again when configured, checking
    that ``ROLE`` is ``master``. Concurrent callers share one attempt. After a failed attempt,
    the next one waits out a short backoff (50 ms doubling to 0.5 s) and callers wait for it.
    So while Redis is down no call waits longer than the backoff plus ``connect_timeout``, the
    first call after Redis returns succeeds, and the process recovers on its own.

    Errors: ``RedisUnavailableError`` when no connection can be had or it broke (credentials
    rejected while connecting included: the store is just as unusable), as its subclass
    ``RedisReplyLostError`` when the call's own command had been sent; ``ReplyError`` for error
    replies. Calls on the shared connection always use ``command_timeout``: a longer deadline
    there would delay failure detection for every other caller. Use ``dedicated()`` instead.
    """

    def __init__(
        self,
        endpoint: RedisEndpoint,
        *,
        sentinel: SentinelConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_dedicated: int = 8,
    ) -> None:
        self._endpoint = endpoint
        self._sentinel = sentinel
        self._sentinels: list[tuple[str, int]] = list(sentinel.sentinels) if sentinel else []
        self._ssl_context = ssl_context
        self._max_dedicated = max_dedicated
        self._conn: Connection | None = None
        self._connecting: asyncio.Task[Connection] | None = None
        self._last_error: RedisUnavailableError | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._idle: list[Connection] = []
        self._dedicated_slots = asyncio.Semaphore(max_dedicated)
        self._sentinel_conn: Connection | None = None
        self._sentinel_lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def endpoint(self) -> RedisEndpoint:
        return self._endpoint

    @property
    def address(self) -> str | None:
        """host:port the shared connection is open to, or None while it is not open."""
        conn = self._conn
        return conn.address if conn is not None and not conn.closed else None

    # ----------------------------------------------------------- calls on the shared connection

    def execute(self, *args: Arg) -> Awaitable[Any]:
        conn = self._conn
        if self._sentinel is None and conn is not None and not conn.closed:
            # Nothing to do after the reply (only Sentinel mode acts on READONLY): the
            # connection's own future, one coroutine frame less per call (bench S3).
            return conn.execute(*args)
        return self._execute(args)

    def execute_packed(self, packed: bytes) -> Awaitable[Any]:
        """`execute` for one command already in RESP (`resp.frame`)."""
        conn = self._conn
        if self._sentinel is None and conn is not None and not conn.closed:
            return conn.execute_packed(packed)
        return self._execute(packed)

    async def _execute(self, command: tuple[Arg, ...] | bytes) -> Any:
        """One command, its arguments or already packed, after (re)connecting if need be."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._reconnect()
        try:
            if isinstance(command, bytes):
                return await conn.execute_packed(command)
            return await conn.execute(*command)
        except ReplyError as exc:
            await self._check_readonly(conn, exc)
            raise

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._reconnect()
        replies = await conn.pipeline(commands)
        await self._check_readonly_replies(conn, replies)
        return replies

    async def evalsha(
        self, script: Script, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._reconnect()
        try:
            return await conn.evalsha(script, keys, args)
        except ReplyError as exc:
            await self._check_readonly(conn, exc)
            raise

    async def pipeline_with_scripts(
        self, commands: Sequence[Command], scripts: Iterable[Script]
    ) -> list[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._reconnect()
        replies = await conn.pipeline_with_scripts(commands, scripts)
        await self._check_readonly_replies(conn, replies)
        return replies

    async def ping(self) -> bool:
        return bool(await self.execute(b"PING") == b"PONG")

    # ------------------------------------------------------------------ dedicated connections

    @contextlib.asynccontextmanager
    async def dedicated(self) -> AsyncIterator[Connection]:
        """An exclusive connection from a small pool (created on demand, reused).

        For blocking commands that must not stall the shared connection, and for ``WAIT``, which
        counts only the writes made on its own connection: a strongly consistent write is
        ``pipeline([script.command(...), (b"WAIT", n, ms)])`` on one dedicated connection. Give
        a ``reply_timeout`` above the ``WAIT`` timeout when that exceeds ``command_timeout``.
        Leave no state behind (no open ``MULTI``, no ``SELECT``): the connection is reused.
        """
        conn = await self._acquire()
        try:
            yield conn
        finally:
            await self._release(conn)

    async def _acquire(self) -> Connection:
        self._check_open()
        try:
            # Bounded, so that a burst of slow WAITs cannot make later callers hang.
            async with asyncio.timeout(self._endpoint.command_timeout):
                await self._dedicated_slots.acquire()
        except TimeoutError:
            raise RedisUnavailableError(
                f"all {self._max_dedicated} dedicated redis connections stayed busy for"
                f" {self._endpoint.command_timeout:g} s"
            ) from None
        try:
            # The shared connection knows where the master is (it went through Sentinel and ROLE).
            main = self._conn
            if main is None or main.closed:
                main = await self._reconnect()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed and conn.endpoint == main.endpoint:
                    return conn
                await conn.close()
            return await Connection.open(main.endpoint, ssl_context=self._ssl_context)
        except BaseException:
            self._dedicated_slots.release()
            raise

    async def _release(self, conn: Connection) -> None:
        try:
            main = self._conn
            reusable = (
                not self._closed
                and not conn.closed
                # A call still in flight (the body was cancelled mid-command) would make the next
                # user wait behind a reply that is not theirs.
                and conn.pending == 0
                and main is not None
                and conn.endpoint == main.endpoint
            )
            if reusable:
                self._idle.append(conn)
            else:
                await conn.close()
        finally:
            self._dedicated_slots.release()

    # ----------------------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        """Close the shared and idle connections; dedicated ones in use close on release."""
        self._closed = True
        watcher = self._watcher
        self._watcher = None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        connecting = self._connecting
        if connecting is not None:
            # Not cancelled: callers share it through shield() and would see a CancelledError
            # they did not ask for. It ends within connect_timeout and, seeing the client
            # closed, closes what it opened.
            with contextlib.suppress(Exception):
                await asyncio.shield(connecting)
        conns = [c for c in [self._conn, self._sentinel_conn, *self._idle] if c is not None]
        self._conn = None
        self._sentinel_conn = None
        self._idle.clear()
        for conn in conns:
            await conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RedisUnavailableError("the redis client is closed")

    async def _reconnect(self) -> Connection:
        self._check_open()
        task = self._connecting
        if task is None:
            loop = asyncio.get_running_loop()
            # During the backoff a caller waits for the next attempt (at most _BACKOFF_MAX)
            # rather than failing outright: failing fast would also fail the first requests
            # after Redis is back, until the backoff ran out. Callers still share one attempt.
            delay = max(0.0, self._retry_at - loop.time()) if self._last_error else 0.0
            task = self._connecting = loop.create_task(self._connect_main(delay))
            # Fetch the outcome even if every caller was cancelled: no "never retrieved" noise.
            task.add_done_callback(_consume_task_result)
        # shield: one caller giving up must not cancel the attempt others are waiting for.
        return await asyncio.shield(task)

    async def _connect_main(self, delay: float = 0.0) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            if delay:
                await asyncio.sleep(delay)
            conn = await self._open_master()
        except (RedisUnavailableError, ReplyError) as exc:
            self._backoff = (
                min(_BACKOFF_MAX, self._backoff * 2) if self._backoff else _BACKOFF_FIRST
            )
            self._retry_at = loop.time() + self._backoff
            if isinstance(exc, RedisReplyLostError):
                # ROLE's reply, lost while connecting: the callers' commands were never sent.
                self._last_error = RedisUnavailableError(str(exc))
                raise self._last_error from None
            if isinstance(exc, RedisUnavailableError):
                self._last_error = exc
                raise
            self._last_error = RedisUnavailableError(exc.message)
            raise self._last_error from exc
        finally:
            self._connecting = None
        self._backoff = 0.0
        self._last_error = None
        if self._closed:
            await conn.close()
            raise RedisUnavailableError("the redis client is closed")
        old = self._conn
        self._conn = conn
        if old is not None:
            await old.close()
        if self._sentinel is not None and (self._watcher is None or self._watcher.done()):
            self._watcher = loop.create_task(self._watch_master(self._sentinel))
            self._watcher.add_done_callback(_consume_task_result)
        return conn

    async def _open_master(self) -> Connection:
        if self._sentinel is None:
            return await Connection.open(self._endpoint, ssl_context=self._ssl_context)
        endpoint = await self._resolve_master(self._sentinel)
        conn = await Connection.open(endpoint, ssl_context=self._ssl_context)
        try:
            role = await conn.execute(b"ROLE", reply_timeout=endpoint.connect_timeout)
        except BaseException:
            await conn.close()
            raise
        if not role or role[0] != b"master":
            await conn.close()
            actual = role[0].decode(errors="replace") if role else "unknown"
            raise RedisUnavailableError(
                f"redis at {endpoint.address}, reported by sentinel as master"
                f" {self._sentinel.master_name!r}, has role {actual!r}"
            )
        return conn

    async def _resolve_master(self, config: SentinelConfig) -> RedisEndpoint:
        """Ask each Sentinel in turn; the first one that answers moves to the front."""
        failures: list[str] = []
        async with self._sentinel_lock:  # the watcher and a reconnect share one connection
            for index, (host, port) in enumerate(list(self._sentinels)):
                try:
                    reply = await self._ask_sentinel(config, host, port)
                except (RedisUnavailableError, ReplyError) as exc:
                    failures.append(f"sentinel {host}:{port}: {exc}")
                    continue
                if not reply:
                    failures.append(f"sentinel {host}:{port} does not know {config.master_name!r}")
                    continue
                if index:
                    self._sentinels.insert(0, self._sentinels.pop(index))
                host, port = reply[0].decode(), int(reply[1])
                return dataclasses.replace(self._endpoint, host=host, port=port)
        raise RedisUnavailableError(
            f"no sentinel could resolve master {config.master_name!r}: " + "; ".join(failures)
        )

    async def _ask_sentinel(self, config: SentinelConfig, host: str, port: int) -> Any:
        # One connection to the Sentinel that answered last is kept for the next question.
        conn = self._sentinel_conn
        if conn is None or conn.closed or conn.endpoint.host != host or conn.endpoint.port != port:
            self._sentinel_conn = None
            if conn is not None:
                await conn.close()
            timeout = self._endpoint.connect_timeout
            conn = await Connection.open(
                RedisEndpoint(
                    host=host,
                    port=port,
                    username=config.username,
                    password=config.password,
                    tls=config.tls,
                    tls_insecure=config.tls_insecure,
                    connect_timeout=timeout,
                    command_timeout=timeout,
                ),
                ssl_context=self._ssl_context if config.tls else None,
            )
            self._sentinel_conn = conn
        return await conn.execute(b"SENTINEL", b"get-master-addr-by-name", config.master_name)

    async def _watch_master(self, config: SentinelConfig) -> None:
        """Sentinel mode: every second, ask where the master is; drop the shared connection
        when it has moved, so the next call reconnects there (and checks ROLE).

        Why: after a manual failover or a network partition the old master goes on accepting
        writes until Sentinel demotes it, which can take 10 s or more, and those writes are
        lost when it resyncs as a replica. Polling keeps that window near one second, with one
        small command per second and no Pub/Sub machinery.
        """
        while not self._closed:
            await asyncio.sleep(_SENTINEL_POLL)
            conn = self._conn
            if conn is None or conn.closed:
                continue  # the next call resolves the master anyway
            try:
                endpoint = await self._resolve_master(config)
            except (RedisUnavailableError, ReplyError, ValueError, IndexError):
                continue  # no Sentinel answers sensibly: keep the master we have
            if endpoint != conn.endpoint and self._conn is conn:
                await conn.close()

    async def _check_readonly(self, conn: Connection, exc: ReplyError) -> None:
        # After a failover the old master answers writes with READONLY (Sentinel usually also
        # kills our connection). Dropping the connection makes the next call ask Sentinel again.
        # Without Sentinel a reconnect would reach the same replica, so the error just passes.
        if self._sentinel is not None and exc.message.startswith("READONLY"):
            await conn.close()

    async def _check_readonly_replies(self, conn: Connection, replies: list[Any]) -> None:
        if self._sentinel is None:
            return
        for reply in replies:
            if isinstance(reply, ReplyError) and reply.message.startswith("READONLY"):
                await conn.close()
                return


def tls_context(settings: RedisSettings) -> ssl.SSLContext:
    """The TLS context of every connection of a store (the contract's, shared with the operator's
    probe); bad PEM is a StoreError naming the setting."""
    try:
        return redis_tls_context(settings)
    except SettingValueError as exc:
        raise StoreError(str(exc)) from None


def _consume_task_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
