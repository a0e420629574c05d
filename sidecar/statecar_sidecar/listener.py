"""
How each listener bounds slow and idle clients: read timeouts and a connection cap.

uvicorn's httptools protocol closes a keep-alive connection that stays idle between requests
(`timeout_keep_alive`), but it waits forever for a request's headers or its body: a client that
sends half a request line, or a Content-Length and then a trickle, holds its connection and a
file descriptor for good (slowloris). `bounded_protocol` returns a subclass of that protocol,
one per listener, that adds:

* **a header timeout**: the request's headers must be complete within it, counted from the
  connection's start or, on a keep-alive connection, from the request's first byte. A client
  that connects and sends nothing is closed after it too.
* **a body timeout**: once the headers are in, the whole body must arrive within it.
* **a connection cap**: a connection beyond the listener's cap is answered at once with 503
  `ERR_TOO_MANY_CONNECTIONS` (JSON, `Connection: close`, `Retry-After: 1`) and closed, so one
  listener's clients (300 idle connections to the metrics port, say) cannot use up the file
  descriptors the other listener needs.

A timeout answers 408 `ERR_REQUEST_TIMEOUT` when no response has started, then closes. The
timers are armed only when a request arrives in pieces: a request that comes in one read (the
usual case) arms none, so the fast path pays only for three flag updates.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("statecar.listener")

#: How long a refused connection may linger to read the client's request before it is closed
#: (closing with unread data would reset the connection and could lose the 503).
REFUSAL_LINGER_SECONDS = 0.5
#: At most this many refused connections linger at a time; beyond it they close at once.
MAX_LINGERING_REFUSALS = 16


@dataclass
class ListenerLimits:
    """The bounds of one listener (`name` is how messages and logs call it)."""

    name: str
    header_timeout: float
    body_timeout: float
    max_connections: int
    #: The variable that raises `max_connections`, named in the refusal.
    setting: str
    refused: int = 0
    timed_out: int = 0
    lingering: set[asyncio.Transport] = field(default_factory=set)


def _response(status: bytes, code: str, message: str, *extra: bytes) -> bytes:
    body = orjson.dumps({"errorCode": code, "message": message})
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n",
            *extra,
            b"\r\n",
            body,
        ]
    )


def bounded_protocol(limits: ListenerLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits` applied; pass it as `uvicorn.Config(http=...)`."""
    refusal = _response(
        b"503 Service Unavailable",
        "ERR_TOO_MANY_CONNECTIONS",
        f"statecar's {limits.name} listener has {limits.max_connections} connections open, its "
        f"limit; retry later, reuse connections, or raise {limits.setting}",
        b"retry-after: 1\r\n",
    )
    header_timeout = _response(
        b"408 Request Timeout",
        "ERR_REQUEST_TIMEOUT",
        f"the request's headers did not arrive within {limits.header_timeout:g}s",
    )
    body_timeout = _response(
        b"408 Request Timeout",
        "ERR_REQUEST_TIMEOUT",
        f"the request's body did not arrive within {limits.body_timeout:g}s",
    )

    class BoundedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._refused = False
            self._in_headers = True  # a connection starts waiting for a request's headers
            self._in_body = False
            self._read_timer: asyncio.TimerHandle | None = None

        # -- the connection cap ---------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                self._refuse(transport)
                return
            super().connection_made(transport)
            self._arm(limits.header_timeout, header_timeout)

        def _refuse(self, transport: asyncio.Transport) -> None:
            self._refused = True
            self.transport = transport
            limits.refused += 1
            if limits.refused == 1 or limits.refused % 1000 == 0:
                log.warning(
                    "%s listener: %d connections open, its limit (%s); refused %d so far",
                    limits.name,
                    limits.max_connections,
                    limits.setting,
                    limits.refused,
                )
            transport.write(refusal)
            if len(limits.lingering) >= MAX_LINGERING_REFUSALS or not transport.can_write_eof():
                transport.close()
                return
            # Half-close, read and drop what the client sends, and close on its EOF or soon.
            transport.write_eof()
            limits.lingering.add(transport)
            self._read_timer = self.loop.call_later(REFUSAL_LINGER_SECONDS, transport.close)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            # Only a request that arrives in pieces gets a timer.
            if self._read_timer is None and not self.transport.is_closing():
                if self._in_headers:
                    self._arm(limits.header_timeout, header_timeout)
                elif self._in_body:
                    self._arm(limits.body_timeout, body_timeout)

        def eof_received(self) -> None:
            if self._refused:
                self.transport.close()
                return
            super().eof_received()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._refused:
                limits.lingering.discard(self.transport)
                return
            super().connection_lost(exc)

        # -- read timeouts ----------------------------------------------------------------------

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._in_body = True
            if self._read_timer is not None:  # tested inline: this runs on every request
                self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            if self._read_timer is not None:
                self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float, answer: bytes) -> None:
            self._disarm()
            if seconds > 0:
                self._read_timer = self.loop.call_later(seconds, self._timed_out, answer)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _timed_out(self, answer: bytes) -> None:
            self._read_timer = None
            transport = self.transport
            if transport.is_closing():
                return
            limits.timed_out += 1
            cycle = self.cycle
            if self._in_body and cycle is not None and not cycle.response_started:
                # The handler waits for the rest of the body: it sees a disconnect, and what it
                # answers then goes nowhere.
                cycle.disconnected = True
                cycle.message_event.set()
                transport.write(answer)
            elif cycle is None or cycle.response_complete:
                transport.write(answer)
            log.debug("%s listener: closed a connection that sent too slowly", limits.name)
            transport.close()

    BoundedProtocol.__name__ = BoundedProtocol.__qualname__ = f"BoundedProtocol[{limits.name}]"
    return BoundedProtocol
