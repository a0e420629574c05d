"""
The PostgreSQL store's connection pool, and which asyncpg errors mean "the server is gone".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import asyncpg

__all__ = ["UNAVAILABLE", "Pool"]

# Errors that mean "the server cannot serve us now", not "this request is wrong".
UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, crash, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby
)
# Server errors after which the session is gone (the others leave the connection usable).
_SESSION_LOST: Final[tuple[type[BaseException], ...]] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


class Pool:
    """At most `max_size` connections, reused newest first; idle ones retire after a while.

    Smaller than asyncpg's Pool, which by default costs a second round trip per operation
    (RESET ALL on release) and tens of µs of bookkeeping; measured here, this pool adds about
    5 µs to a query on a bare connection. A connection that only got an SQL error back is in
    sync and is reused; one whose state is unknown after an error (socket gone, operation
    cancelled by the timeout) never is.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        max_size: int,
        idle_lifetime: float,
        grace: float,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(max_size)
        self._idle: collections.deque[tuple[Any, float]] = collections.deque()
        self._idle_lifetime = idle_lifetime
        self._grace = grace
        self._retiring: dict[Any, asyncio.TimerHandle] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        async with self._slots:
            if self._closed:
                raise asyncpg.exceptions.InterfaceError("the store is closed")
            conn = self._take_idle()
            if conn is None:
                conn = await self._connect()
            try:
                yield conn
            except asyncpg.PostgresError as exc:
                if isinstance(exc, _SESSION_LOST):
                    conn.terminate()
                else:
                    self._give_back(conn)
                raise
            except asyncpg.exceptions.InterfaceError:
                # asyncpg refusing the request before sending it (too many parameters, a
                # value it cannot encode) leaves the connection in sync: the request was at
                # fault, not the connection. (No other user can have an operation in progress
                # on it: the pool hands each connection to one user at a time.)
                if conn.is_closed():
                    conn.terminate()
                else:
                    self._give_back(conn)
                raise
            except asyncio.CancelledError:
                self._retire(conn)
                raise
            except BaseException:
                conn.terminate()
                raise
            self._give_back(conn)

    def _take_idle(self) -> Any:
        while self._idle:
            conn, _ = self._idle.pop()
            # A server that shut down told its idle sessions so; asyncpg then marks them closed.
            if not conn.is_closed():
                return conn
        return None

    def _give_back(self, conn: Any) -> None:
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            return
        self._idle.append((conn, time.monotonic()))
        if self._reaper is None and len(self._idle) > 1:
            self._reaper = asyncio.get_running_loop().call_later(self._idle_lifetime, self._reap)

    def _reap(self) -> None:
        """Close connections idle for longer than the lifetime, keeping one for the next request."""
        self._reaper = None
        cutoff = time.monotonic() - self._idle_lifetime
        while len(self._idle) > 1 and self._idle[0][1] <= cutoff:
            conn, _ = self._idle.popleft()  # the longest idle: reuse takes the newest
            conn.terminate()
        if len(self._idle) > 1:
            wait = self._idle[0][1] - cutoff
            self._reaper = asyncio.get_running_loop().call_later(wait, self._reap)

    def _retire(self, conn: Any) -> None:
        """Close a connection whose operation was cancelled, after a grace period.

        asyncpg answers the cancellation by sending the server a cancel request on a separate
        socket; closing the connection at once would abort that request. A commit waiting for
        synchronous standbys (a strong write) only stops waiting, and releases its row locks,
        when cancelled: a closed socket alone leaves it waiting, blocking later writes of the
        same keys (https://www.postgresql.org/docs/current/warm-standby.html#SYNCHRONOUS-REPLICATION).
        """
        handle = asyncio.get_running_loop().call_later(self._grace, self._terminate, conn)
        self._retiring[conn] = handle

    def _terminate(self, conn: Any) -> None:
        self._retiring.pop(conn, None)
        conn.terminate()

    def expire(self) -> None:
        """Drop every idle connection (after one turned out dead: the others likely are too)."""
        while self._idle:
            conn, _ = self._idle.pop()
            conn.terminate()

    async def close(self, grace: float) -> None:
        """Close idle connections (each given `grace` seconds); busy ones close on release."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn, handle in list(self._retiring.items()):
            handle.cancel()
            self._terminate(conn)
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        for conn in idle:
            try:
                await conn.close(timeout=grace)
            except (*UNAVAILABLE, asyncpg.PostgresError):
                conn.terminate()
