"""
Every request the state API does not answer itself goes to an ASGI app through this bridge.

Probes, `/metrics`, `/v1.0/metadata` and FastAPI's routes (`api.front`) are ASGI apps; this is
the small part of an ASGI server they need (ASGI 3.0, HTTP spec 2.3): the scope, one
`http.request` message with the body the connection has already read, `http.disconnect` once
the client is gone or the response is done, and the response written as it is sent, with
`transfer-encoding: chunked` when the app gives no `content-length`. An app that fails before
it starts its response gets a plain 500, logged; one that fails after closes the connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from statecar_sidecar.http1.wire import CLOCK, NO_BODY_STATUSES, status_line

if TYPE_CHECKING:
    from statecar_sidecar.http1.connection import HttpConnection, ParsedRequest

log = logging.getLogger("statecar.http")

_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
_SERVER_ERROR: Final = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


def decoded_path(raw_path: bytes) -> str:
    """The ASGI `path`: percent-decoded (UTF-8), as uvicorn and Starlette's routing read it."""
    path = raw_path.decode("latin-1")
    return unquote(path) if "%" in path else path


class _Exchange:
    """One request's ASGI channel: `receive` and `send` over the connection."""

    __slots__ = ("chunked", "connection", "done", "head", "request", "sent", "status")

    def __init__(self, connection: HttpConnection, request: ParsedRequest) -> None:
        self.connection = connection
        self.request = request
        self.sent = False  # the body went to the app
        self.status = 0
        self.head: bytes | None = None  # the status line and headers, until the first body
        self.chunked = False
        self.done = False

    async def receive(self) -> dict[str, Any]:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.request.buffered, "more_body": False}
        connection = self.connection
        if not self.done:
            if connection.disconnected is None:
                connection.disconnected = connection.loop.create_future()
            await connection.disconnected
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        connection = self.connection
        if kind == "http.response.start":
            if self.status:
                raise RuntimeError("the ASGI app sent http.response.start twice")
            self.status = int(message["status"])
            self.head = self._head(message.get("headers") or [])
        elif kind == "http.response.body":
            if not self.status or self.done:
                raise RuntimeError(f"the ASGI app sent {kind} out of order")
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if self.request.method == "HEAD":
                body = b""
            if self.chunked:
                data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
                if not more:
                    data += b"0\r\n\r\n"
            else:
                data = body
            if self.head is not None:
                data, self.head = self.head + data, None
            if data:
                connection.write(data)
            if not more:
                self.done = True
                if connection.disconnected is not None and not connection.disconnected.done():
                    connection.disconnected.set_result(None)
                    connection.disconnected = None
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _head(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        parts = [status_line(self.status), CLOCK.date_line()]
        has_length = False
        for name, value in headers:
            lowered = bytes(name).lower()
            if lowered == b"content-length":
                has_length = True
            parts.append(b"%s: %s\r\n" % (bytes(name), bytes(value)))
        request = self.request
        if not has_length and self.status not in NO_BODY_STATUSES and request.method != "HEAD":
            if request.http_version == "1.1":
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:  # an HTTP/1.0 client reads to the end of the connection
                request.keep_alive = False
        if self.connection.closes_after(request):
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)


async def run(connection: HttpConnection, request: ParsedRequest) -> int:
    """Answer `request` with the listener's ASGI app; the status sent (500 if the app failed)."""
    exchange = _Exchange(connection, request)
    scope = {
        "type": "http",
        "asgi": _ASGI,
        "http_version": request.http_version,
        "server": connection.local,
        "client": connection.peer,
        "scheme": "http",
        "method": request.method,
        "root_path": "",
        "path": decoded_path(request.path),
        "raw_path": request.path,
        "query_string": request.query_string,
        "headers": request.headers,
        "state": {},
    }
    try:
        await connection.listener.app(scope, exchange.receive, exchange.send)
    except Exception:
        log.exception("%s %s: unexpected error", request.method, scope["path"])
        if not exchange.status:
            connection.write(_SERVER_ERROR)
            request.keep_alive = False
            return 500
        connection.close()
        return exchange.status
    if not exchange.done:
        # The app returned without finishing its response: the client cannot know where it
        # ends, so the connection closes (as uvicorn does).
        if not exchange.status:
            connection.write(_SERVER_ERROR)
            exchange.status = 500
        request.keep_alive = False
        connection.close()
    return exchange.status
