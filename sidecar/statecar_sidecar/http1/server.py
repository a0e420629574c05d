"""
One HTTP/1.1 listener: its sockets, its connections, the connection cap, and the graceful stop.

`HttpServer` serves one app on one or more addresses (the state API listens on loopback and on
any extra address the pod asks for). A connection beyond the listener's cap is answered with a
503 at once and closed (`listener.refusal`); it may linger briefly to read what the client sent,
so the close does not reset the connection and lose the answer.

`stop(grace)` is daprd's graceful shutdown for this port: the sockets stop accepting at once,
idle keep-alive connections close, each connection answering a request closes after its
response, and whatever still runs when `grace` has passed is cancelled and its connection
aborted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from statecar_sidecar.api.asgi import Reply, Request
from statecar_sidecar.busypoll import BusyPoll
from statecar_sidecar.http1.connection import HttpConnection
from statecar_sidecar.listener import (
    MAX_LINGERING_REFUSALS,
    REFUSAL_LINGER_SECONDS,
    ListenerLimits,
    body_timeout,
    create_server,
    header_timeout,
    refusal,
)

log = logging.getLogger("statecar.listener")

ASGI = Callable[[Any, Any, Any], Awaitable[None]]


class DirectApp(Protocol):
    """An app that answers some requests without ASGI (`api.routing.StateAPI`)."""

    def direct(self, request: Request, raw_path: bytes) -> Awaitable[Reply] | None: ...


class HttpServer:
    """One listener: `app` (ASGI) for every request `state_api` does not answer itself."""

    #: The loop it serves on, set by `listen` (connections and timers use it).
    loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        app: ASGI,
        limits: ListenerLimits,
        *,
        state_api: DirectApp | None = None,
        max_body_bytes: int,
        log_requests: bool = False,
        busy_poll: BusyPoll | None = None,
    ) -> None:
        self.app = app
        #: Told when each request starts and ends (`statecar_sidecar.busypoll`); None: never spin.
        self.busy_poll = busy_poll
        self.state_api = state_api
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.log_requests = log_requests
        self.connections: set[HttpConnection] = set()
        self.lingering = limits.lingering
        self.header_timeout_answer = header_timeout(limits)
        self.body_timeout_answer = body_timeout(limits)
        self._refusal = refusal(limits)
        self._servers: list[asyncio.Server] = []
        self._all_closed: asyncio.Event | None = None

    async def listen(self, host: str, port: int) -> None:
        """Accept connections on `host`:`port` (OSError if it cannot be bound)."""
        self.loop = asyncio.get_running_loop()
        server = await create_server(
            self.loop, lambda: HttpConnection(self), host, port, backlog=2048
        )
        self._servers.append(server)

    @property
    def ports(self) -> list[int]:
        """The ports bound (tests pass port 0)."""
        return [sock.getsockname()[1] for s in self._servers for sock in s.sockets]

    def refuse(self, transport: asyncio.Transport) -> None:
        """Answer a connection beyond the cap with the 503, and close it."""
        limits = self.limits
        limits.refused += 1
        if limits.refused == 1 or limits.refused % 1000 == 0:
            log.warning(
                "%s listener: %d connections open, its limit (%s); refused %d so far",
                limits.name,
                limits.max_connections,
                limits.setting,
                limits.refused,
            )
        transport.write(self._refusal)
        if len(self.lingering) >= MAX_LINGERING_REFUSALS or not transport.can_write_eof():
            transport.close()
            return
        # Half-close, read and drop what the client sends, and close on its EOF or soon.
        transport.write_eof()
        self.lingering.add(transport)
        self.loop.call_later(REFUSAL_LINGER_SECONDS, transport.close)

    def connection_closed(self) -> None:
        if self._all_closed is not None and not self.connections:
            self._all_closed.set()

    async def stop(self, grace: float | None) -> bool:
        """Stop accepting, let the requests in flight finish within `grace` seconds (None: as
        long as they take), then cancel the rest; whether everything finished in time."""
        for server in self._servers:
            server.close()
        self._all_closed = asyncio.Event()
        for connection in list(self.connections):
            connection.draining = True
            if not connection.busy:
                connection.close()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()
                for server in self._servers:
                    await server.wait_closed()
                return False
        for server in self._servers:
            await server.wait_closed()
        return True
