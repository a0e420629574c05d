"""
One HTTP/1.1 connection: parse requests with httptools, answer them in order, bound slow clients.

A request is read whole before it is answered: the state API's bodies are bounded
(`max_body_bytes`), so buffering costs nothing a handler would not hold anyway, and a handler
never waits on a client. A body over the limit is not kept: the rest of it is read and dropped,
and the request is answered (a 413 from the handler) once it is complete, or at once when the
client waits for `100 Continue`, which it then never gets.

Requests pipelined on one connection are answered one after another, in order, by one task.
The task lives as long as the connection: between requests it waits on a future rather than
ending, so a request costs a future, not a Task (~1 µs less; bench/README.md, S3).
Reading pauses while `MAX_QUEUED` requests wait or the client does not read its responses.

Timers (`listener.ListenerLimits`; docs/state-api.md "Slow and idle clients"):

* **header timeout**: a new connection must send a request's headers within it; so must a
  request that arrives in pieces, counted from its first byte. A request that arrives in one
  read (the usual case) arms no timer.
* **body timeout**: once the headers are in, the rest of a body that arrives in pieces must
  arrive within it.
* **idle keep-alive** (`KEEP_ALIVE_SECONDS`): a connection idle between requests is closed. One
  timer per connection checks the time of the last response lazily, so a request costs one
  clock read, not a timer.

A timeout answers 408 `ERR_REQUEST_TIMEOUT` (when no response is being written) and closes.
A request httptools cannot parse gets a JSON 400 naming what is wrong, and the connection
closes, as it does after a response to `Connection: close` or to an HTTP/1.0 request that did
not ask for keep-alive.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Final, cast

import httptools

from statecar_sidecar.api.asgi import Reply, Request
from statecar_sidecar.http1 import asgi_bridge
from statecar_sidecar.http1.wire import CLOCK, NO_BODY_STATUSES, status_line
from statecar_sidecar.listener import error_response

if TYPE_CHECKING:
    from statecar_sidecar.http1.server import HttpServer

log = logging.getLogger("statecar.http")
api_log = logging.getLogger("statecar.api")

#: How long a connection may stay idle between requests (uvicorn's default, daprd's is longer).
KEEP_ALIVE_SECONDS: Final = 5.0
#: Requests parsed ahead of the one being answered before reading pauses.
MAX_QUEUED: Final = 32
#: The request line and headers of one request, in bytes, before a 431 (Go's net/http: 1 MiB;
#: daprd's fasthttp reads 4 KiB by default, `--dapr-http-read-buffer-size`).
MAX_HEADER_BYTES: Final = 64 * 1024
#: A response body up to this size is sent in the same write as its headers.
_JOIN_BELOW: Final = 64 * 1024

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE: Final = b"connection: close\r\n"


class ParsedRequest(Request):
    """One request read whole: the state API's `Request` itself (no copy on the hot path), plus
    what the connection and the ASGI bridge need."""

    __slots__ = ("http_version", "keep_alive", "path")

    def __init__(
        self,
        method: str,
        path: bytes,
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        http_version: str,
        keep_alive: bool,
    ) -> None:
        # Request's fields set here directly: one call less on every request.
        self.method = method
        self.query_string = query_string
        self.headers = headers
        self.receive = None
        self.buffered = b""
        self.too_large = False
        self.path = path
        self.http_version = http_version
        self.keep_alive = keep_alive


class HttpConnection(asyncio.Protocol):
    """The protocol of one accepted connection (created by `HttpServer`)."""

    def __init__(self, listener: HttpServer) -> None:
        self.listener = listener
        self.loop = listener.loop
        self.limits = listener.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        # The message being read.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._current: ParsedRequest | None = None
        self._in_message = False
        # Answering.
        self._queue: deque[ParsedRequest] = deque()
        #: The answering task, from the first request on (see the module docstring).
        self.task: asyncio.Task[None] | None = None
        #: Set while the task waits for a request: `_finish_message` wakes it.
        self._next: asyncio.Future[None] | None = None
        #: Whether a request is being answered (its response may be partly written).
        self._answering = False
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closed = False
        self._refused = False
        #: Set by a graceful stop: close after the response being written.
        self.draining = False
        self.disconnected: asyncio.Future[None] | None = None
        # Timers.
        self._read_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0

    # -- the connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        listener = self.listener
        if len(listener.connections) >= self.limits.max_connections:
            self._refused = True
            listener.refuse(transport)
            return
        listener.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Responses are one write each: Nagle would only hold the last segment back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = _address(transport.get_extra_info("peername"))
        self.local = _address(transport.get_extra_info("sockname"))
        self._arm(self.limits.header_timeout, self.listener.header_timeout_answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._refused:
            if self.transport is not None:
                self.listener.lingering.discard(self.transport)
            return
        self.listener.connections.discard(self)
        self._queue.clear()
        if self._next is not None and not self._next.done():
            self._next.set_result(None)  # the task sees the connection closed, and ends
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self.listener.connection_closed()

    def eof_received(self) -> bool | None:
        if self._refused and self.transport is not None:
            self.transport.close()
        # Half-closed by the client: answer what was read, then close (return False).
        return None

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        if self._refused or self._closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No upgrade is offered (no websockets, no h2c): the request, if complete, is
            # answered as plain HTTP and the connection closes after it.
            if self._current is not None:
                self._current.keep_alive = False
            else:
                self._reject(400, "ERR_MALFORMED_REQUEST", "protocol upgrades are not supported")
                return
        except httptools.HttpParserError as exc:
            # A callback's exception reaches here as HttpParserCallbackError, from it.
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._reject(
                    431,
                    "ERR_MALFORMED_REQUEST",
                    f"the request line and headers exceed {MAX_HEADER_BYTES} bytes; send less",
                )
            else:
                self._reject(400, "ERR_MALFORMED_REQUEST", f"invalid HTTP request: {exc}")
            return
        if self._in_message and self._read_timer is None and not self._closed:
            # Only a request that arrives in pieces gets a timer.
            if self._current is None:
                self._arm(self.limits.header_timeout, self.listener.header_timeout_answer)
            else:
                self._arm(self.limits.body_timeout, self.listener.body_timeout_answer)

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._chunks = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _HeadersTooLarge
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self._read_timer is not None:
            self._disarm()
        parser = self.parser
        url = self._url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
            if b"#" in query:
                query = query.split(b"#", 1)[0]
            elif b"#" in path:
                path = path.split(b"#", 1)[0]
        else:  # absolute-form (RFC 9112 §3.2.2) or `*`
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
        request = ParsedRequest(
            parser.get_method().decode("ascii"),
            path,
            query,
            self._headers,
            parser.get_http_version(),
            parser.should_keep_alive(),
        )
        self._current = request
        limit = self.listener.max_body_bytes
        expects_continue = False
        for name, value in self._headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    request.too_large = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
        if expects_continue:
            if request.too_large:
                # The client waits for 100 Continue before it sends the body: answer now (the
                # handler's 413), and close after it, since the body will never come.
                request.keep_alive = False
                self._finish_message()
            elif self.transport is not None and request.http_version == "1.1":
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        request = self._current
        if request is None or request.too_large:
            return
        self._body_size += len(body)
        if self._body_size > self.listener.max_body_bytes:
            request.too_large = True
            self._chunks = []
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._read_timer is not None:
            self._disarm()
        if self._current is not None:
            self._finish_message()

    def _finish_message(self) -> None:
        request = self._current
        assert request is not None
        self._current = None
        chunks = self._chunks
        if chunks and not request.too_large:
            request.buffered = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._queue.append(request)
        waiting = self._next
        if waiting is not None:
            self._next = None
            waiting.set_result(None)
        elif self.task is None:
            self.task = self.loop.create_task(self._answer())
        if len(self._queue) >= MAX_QUEUED:
            self._pause_reading()

    # -- answering ----------------------------------------------------------------------------

    async def _answer(self) -> None:
        """Answer the queued requests in order, waiting for more between them; the connection's
        one task, which ends with the connection."""
        listener = self.listener
        queue = self._queue
        busy_poll = listener.busy_poll
        try:
            while not self._closed:
                if not queue:
                    self._next = self.loop.create_future()
                    await self._next
                    continue
                request = queue.popleft()
                if self._reading_paused and len(queue) < MAX_QUEUED // 2:
                    self._resume_reading()
                self._answering = True
                if busy_poll is not None:
                    busy_poll.request_started()
                try:
                    direct = listener.state_api
                    answer = None if direct is None else direct.direct(request, request.path)
                    if answer is not None:
                        reply: Reply = await answer
                        self.write_reply(request, reply.status, reply.headers, reply.body)
                        status = reply.status
                    else:
                        status = await asgi_bridge.run(self, request)
                finally:
                    self._answering = False
                    if busy_poll is not None:
                        busy_poll.request_finished()
                if listener.log_requests:
                    api_log.info(
                        "HTTP API Called: %s %s %d",
                        request.method,
                        asgi_bridge.decoded_path(request.path),
                        status,
                    )
                if self._closed:
                    return
                if self.closes_after(request):
                    self.close()
                    return
                if self._writable is not None:
                    await self._writable
                    if self._closed:
                        return
                if not queue:
                    self._idle_since = self.loop.time()
                    if self._idle_timer is None:
                        self._idle_timer = self.loop.call_at(
                            self._idle_since + KEEP_ALIVE_SECONDS, self._check_idle
                        )
        finally:
            self.task = None
            self._next = None
            self._answering = False

    def write_reply(
        self, request: ParsedRequest, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """The whole response in one write (a large body in a second one)."""
        transport = self.transport
        if transport is None or self._closed:
            return
        parts = [status_line(status), CLOCK.date_line()]
        for header in headers:  # a loop: on 3.11 a comprehension is one more frame per response
            parts.append(b"%s: %s\r\n" % header)
        if status not in NO_BODY_STATUSES:
            parts.append(b"content-length: %d\r\n" % len(body))
        else:
            body = b""
        if self.closes_after(request):
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        if request.method == "HEAD":
            body = b""
        if len(body) < _JOIN_BELOW:
            parts.append(body)
            transport.write(b"".join(parts))
        else:
            transport.write(b"".join(parts))
            transport.write(body)

    def closes_after(self, request: ParsedRequest) -> bool:
        """Whether the connection closes once `request` is answered (the client asked, or a
        graceful stop is draining it); the answer then says `connection: close`."""
        return not request.keep_alive or self.draining

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    @property
    def busy(self) -> bool:
        """Whether a request is being read, waits, or is answered (a graceful stop waits)."""
        return self._responding or self._in_message

    @property
    def _responding(self) -> bool:
        """Whether a response is being written or one is due: nothing else may be written."""
        return self._answering or bool(self._queue)

    # -- flow control and timers --------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self._closed:
            return
        if self.busy:
            return  # the answer re-arms the check when it is done
        due = self._idle_since + KEEP_ALIVE_SECONDS
        if self.loop.time() >= due:
            self.close()
        else:
            self._idle_timer = self.loop.call_at(due, self._check_idle)

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
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        self.limits.timed_out += 1
        if not self._responding:  # the 408 cannot interleave with a response
            self.transport.write(answer)
        log.debug("%s listener: closed a connection that sent too slowly", self.limits.name)
        self.transport.close()

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer a request that cannot be read, and close."""
        if self.transport is None:
            return
        if not self._responding:
            self.transport.write(error_response(status_line(status)[9:-2], code, message))
        self._in_message = False
        self._disarm()
        self.transport.close()


class _HeadersTooLarge(Exception):
    """Raised from a parser callback: httptools passes it out of `feed_data`."""


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return str(value[0]), int(value[1])
    return None
