"""
How each listener binds its address (`create_server`) and bounds slow and idle clients: read
timeouts and a connection cap.

Without bounds, a client that sends half a request line, or a Content-Length and then a
trickle, would hold its connection and a file descriptor for good (slowloris). Each listener
(`http1.HttpServer`) applies its `ListenerLimits`:

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
usual case) arms none (`http1.connection` applies them).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

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


def error_response(status: bytes, code: str, message: str, *extra: bytes) -> bytes:
    """A whole JSON error response that closes the connection (`status`: b"408 Request Timeout")."""
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


def refusal(limits: ListenerLimits) -> bytes:
    """The 503 a connection over the cap gets."""
    return error_response(
        b"503 Service Unavailable",
        "ERR_TOO_MANY_CONNECTIONS",
        f"statecar's {limits.name} listener has {limits.max_connections} connections open, its "
        f"limit; retry later, reuse connections, or raise {limits.setting}",
        b"retry-after: 1\r\n",
    )


def header_timeout(limits: ListenerLimits) -> bytes:
    """The 408 a request gets when its headers are late."""
    return error_response(
        b"408 Request Timeout",
        "ERR_REQUEST_TIMEOUT",
        f"the request's headers did not arrive within {limits.header_timeout:g}s",
    )


def body_timeout(limits: ListenerLimits) -> bytes:
    """The 408 a request gets when its body is late."""
    return error_response(
        b"408 Request Timeout",
        "ERR_REQUEST_TIMEOUT",
        f"the request's body did not arrive within {limits.body_timeout:g}s",
    )


async def create_server(
    loop: asyncio.AbstractEventLoop,
    protocol: Callable[[], asyncio.BaseProtocol],
    host: str,
    port: int,
    *,
    backlog: int,
) -> asyncio.Server:
    """`loop.create_server(protocol, host, port, reuse_address=True, backlog=backlog)`.

    An IP address is bound here, as the loop would bind it (SO_REUSEADDR; IPV6_V6ONLY for
    IPv6), because the loop runs even an address through getaddrinfo, whose IDNA encoding of
    the host imports encodings.idna, stringprep and unicodedata: ~1.5 ms of every cold start.
    A name is left to the loop, which binds each of its addresses.
    """
    family = _address_family(host)
    if family is None:
        return await loop.create_server(protocol, host, port, reuse_address=True, backlog=backlog)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return await loop.create_server(protocol, sock=sock, backlog=backlog)


def _address_family(host: str) -> socket.AddressFamily | None:
    """AF_INET or AF_INET6 when `host` is an IP address, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None
