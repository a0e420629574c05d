"""
gRPC over `http2`: the request checks, length-prefixed messages, deadlines, statuses.

This is the "gRPC over HTTP2" protocol (grpc/grpc doc/PROTOCOL-HTTP2.md): a call is a POST to
`/<service>/<method>` with `content-type: application/grpc[+proto]`; each message is a 1-byte
compressed flag, a 4-byte big-endian length and the bytes; the response is HEADERS (`:status
200`), the messages, and trailers carrying `grpc-status`, the percent-encoded `grpc-message`
and, on errors with details, `grpc-status-details-bin` (a base64 `google.rpc.Status`). An error
before any message is a "trailers-only" response: one HEADERS frame with END_STREAM.

A route is unary (the handler gets the one request message once the body is complete and
returns the response message) or streaming (the handler gets a `Call` to read and write
messages as they come: reflection, health's Watch, and the Dapr API's streaming RPCs, which
statecar refuses). Message (de)serialization is the handler's: this module moves bytes.
`grpc-timeout` bounds a call (DEADLINE_EXCEEDED); a client's RST_STREAM cancels its task;
compressed requests (`grpc-encoding: gzip`/`deflate`) are inflated, responses never compressed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from statecar_sidecar.busypoll import BusyPoll
from statecar_sidecar.grpcapi import hpack
from statecar_sidecar.grpcapi.http2 import Stream
from statecar_sidecar.grpcapi.status import RpcError, StatusCode

log = logging.getLogger("statecar.grpc")

Metadata = Mapping[str, str]
UnaryHandler = Callable[[bytes, Metadata], Awaitable[bytes]]
StreamHandler = Callable[["Call"], Awaitable[None]]

_RESPONSE_HEADERS: Final = hpack.encode([(":status", "200"), ("content-type", "application/grpc")])
_OK_TRAILERS: Final = hpack.encode([("grpc-status", "0")])
_TIMEOUT_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_MESSAGE_LIMIT: Final = 4096  # a grpc-message longer than this is cut: trailers stay small


@dataclass(frozen=True)
class Route:
    """A method: `unary` handles one message; `stream` handles a `Call`."""

    unary: UnaryHandler | None = None
    stream: StreamHandler | None = None


def _percent_encode(message: str) -> bytes:
    """PROTOCOL-HTTP2.md: grpc-message is UTF-8 with bytes outside 0x20-0x7E and '%' escaped."""
    raw = message.encode("utf-8")[:_MESSAGE_LIMIT]
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def status_fields(error: RpcError) -> list[tuple[str, str | bytes]]:
    fields: list[tuple[str, str | bytes]] = [
        ("grpc-status", str(int(error.code))),
        ("grpc-message", _percent_encode(error.message)),
    ]
    for name, value in error.trailer():
        # Binary metadata is base64 on the wire; gRPC implementations accept it unpadded.
        fields.append((name, base64.b64encode(value).rstrip(b"=")))
    return fields


def trailers_only(error: RpcError) -> bytes:
    return hpack.encode(
        [(":status", "200"), ("content-type", "application/grpc"), *status_fields(error)]
    )


def frame_message(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def parse_timeout(value: str) -> float | None:
    """`grpc-timeout` (TimeoutValue TimeoutUnit, at most 8 digits) in seconds; None if bad."""
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


def no_such_method(path: str) -> RpcError:
    return RpcError(StatusCode.UNIMPLEMENTED, f"statecar serves no method {path!r}")


class _BadMessage(Exception):
    def __init__(self, error: RpcError) -> None:
        super().__init__(error.message)
        self.error = error


def _inflate(payload: bytes, encoding: str | None, limit: int) -> bytes:
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise _BadMessage(
            RpcError(
                StatusCode.UNIMPLEMENTED,
                f"statecar cannot decompress grpc-encoding {encoding!r}: send identity, gzip or "
                "deflate",
            )
        )
    try:
        data = inflater.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise _BadMessage(
            RpcError(StatusCode.INTERNAL, f"a {encoding} compressed message is corrupt: {exc}")
        ) from None
    if len(data) > limit:
        raise _BadMessage(_too_large(limit + 1, limit))
    return data


def _too_large(size: int, limit: int) -> RpcError:
    return RpcError(
        StatusCode.RESOURCE_EXHAUSTED,
        f"grpc: received message larger than max ({size} vs. {limit}): raise the sidecar's "
        "--max-body-size (STATECAR_MAX_BODY_BYTES) to accept it",
    )


class Call:
    """A streaming call: read request messages, write response messages, then finish."""

    def __init__(self, stream: Stream, metadata: Metadata, limit: int) -> None:
        self.stream = stream
        self.metadata = metadata
        self._limit = limit
        self._offset = 0
        self._started = False

    @property
    def path(self) -> str:
        return self.metadata.get(":path", "")

    async def read(self) -> bytes | None:
        """The next request message, or None once the client has half-closed."""
        stream = self.stream
        while True:
            if stream.overflowed:
                raise _BadMessage(_too_large(len(stream.body) + 1, self._limit))
            body = stream.body
            available = len(body) - self._offset
            if available >= 5:
                size = int.from_bytes(body[self._offset + 1 : self._offset + 5], "big")
                if size > self._limit:
                    raise _BadMessage(_too_large(size, self._limit))
                if available >= 5 + size:
                    start = self._offset + 5
                    compressed = body[self._offset]
                    message = bytes(body[start : start + size])
                    # Drop what was read, so a long stream does not hold all its messages.
                    del body[: start + size]
                    self._offset = 0
                    if compressed:
                        message = _inflate(message, self.metadata.get("grpc-encoding"), self._limit)
                    return message
            if stream.ended:
                if available:
                    raise _BadMessage(
                        RpcError(StatusCode.INTERNAL, "the request ends inside a message")
                    )
                return None
            if stream.closed:
                raise asyncio.CancelledError
            await stream.wait()

    def write(self, message: bytes) -> None:
        if not self._started:
            self._started = True
            self.stream.connection.send(
                self.stream, _RESPONSE_HEADERS, frame_message(message), None
            )
        else:
            self.stream.send_data(frame_message(message))

    def finish(self, error: RpcError | None = None) -> None:
        if error is None:
            if self._started:
                self.stream.send_headers(_OK_TRAILERS, end_stream=True)
            else:
                self.stream.send_headers(_RESPONSE_HEADERS + _OK_TRAILERS, end_stream=True)
        elif self._started:
            self.stream.send_headers(hpack.encode(status_fields(error)), end_stream=True)
        else:
            self.stream.send_headers(trailers_only(error), end_stream=True)


class GrpcApplication:
    """Routes each stream by `:path` and answers it (`http2.Application`)."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        max_message_bytes: int,
        *,
        fallback: Callable[[str], Route | None] | None = None,
        busy_poll: BusyPoll | None = None,
    ) -> None:
        self._routes = dict(routes)
        #: Told when each unary call starts and ends (`statecar_sidecar.busypoll`).
        self._busy_poll = busy_poll
        #: The route of a path not in `routes`, decided per call; None: there is no such method.
        self._fallback = fallback
        self._limit = max_message_bytes
        self.tasks: set[asyncio.Task[None]] = set()

    def request(self, stream: Stream) -> None:
        metadata = dict(stream.headers)
        content_type = metadata.get("content-type", "")
        if metadata.get(":method") != "POST" or not content_type.startswith("application/grpc"):
            # PROTOCOL-HTTP2.md: a request that is not gRPC gets an HTTP status, not a grpc one.
            stream.send_headers(
                hpack.encode(
                    [
                        (":status", "415"),
                        ("content-type", "text/plain"),
                        ("grpc-status", str(int(StatusCode.INTERNAL))),
                        ("grpc-message", b"statecar serves gRPC here: POST application/grpc"),
                    ]
                ),
                end_stream=True,
            )
            return
        path = metadata.get(":path", "")
        route = self._routes.get(path)
        if route is None and self._fallback is not None:
            route = self._fallback(path)
        if route is None:
            stream.send_headers(trailers_only(no_such_method(path)), end_stream=True)
            return
        stream.limit = self._limit + 5
        loop = asyncio.get_running_loop()
        if route.unary is not None:
            handler = route.unary

            def ready(stream: Stream) -> None:
                self._spawn(loop.create_task(self._unary(stream, handler, metadata)), stream)

            stream.complete = ready
        else:
            assert route.stream is not None
            call = Call(stream, metadata, self._limit)
            self._spawn(loop.create_task(self._streaming(call, route.stream)), stream)

    def _spawn(self, task: asyncio.Task[None], stream: Stream) -> None:
        stream.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _message(self, stream: Stream, metadata: Metadata) -> bytes:
        """The one request message of a unary call."""
        body = stream.body
        if stream.overflowed:
            raise _BadMessage(_too_large(self._limit + 1, self._limit))
        if len(body) < 5:
            raise _BadMessage(
                RpcError(StatusCode.INTERNAL, "a unary call ended without its request message")
            )
        size = int.from_bytes(body[1:5], "big")
        if len(body) != 5 + size:
            raise _BadMessage(
                RpcError(
                    StatusCode.INTERNAL,
                    "a unary call's body is not exactly one message "
                    f"({len(body)} bytes for a message of {size})",
                )
            )
        message = bytes(body[5:])
        if body[0]:
            message = _inflate(message, metadata.get("grpc-encoding"), self._limit)
        return message

    async def _unary(self, stream: Stream, handler: UnaryHandler, metadata: Metadata) -> None:
        busy_poll = self._busy_poll
        if busy_poll is not None:
            busy_poll.request_started()
        try:
            message = self._message(stream, metadata)
            timeout = metadata.get("grpc-timeout")
            if timeout is None:
                response = await handler(message, metadata)
            else:
                seconds = parse_timeout(timeout)
                if seconds is None:
                    raise _BadMessage(
                        RpcError(StatusCode.INTERNAL, f"malformed grpc-timeout {timeout!r}")
                    )
                try:
                    async with asyncio.timeout(seconds):
                        response = await handler(message, metadata)
                except TimeoutError:
                    raise _BadMessage(
                        RpcError(StatusCode.DEADLINE_EXCEEDED, "the call's grpc-timeout expired")
                    ) from None
        except RpcError as exc:
            stream.send_headers(trailers_only(exc), end_stream=True)
        except _BadMessage as exc:
            stream.send_headers(trailers_only(exc.error), end_stream=True)
        except asyncio.CancelledError:
            if not stream.closed:
                raise
        except Exception as exc:  # handlers convert their errors; anything else is a bug
            log.exception("%s failed", metadata.get(":path"))
            path = metadata.get(":path")
            error = RpcError(StatusCode.INTERNAL, f"statecar: {path} failed: {exc}")
            stream.send_headers(trailers_only(error), end_stream=True)
        else:
            stream.respond(_RESPONSE_HEADERS, frame_message(response), _OK_TRAILERS)
        finally:
            if busy_poll is not None:
                busy_poll.request_finished()

    async def _streaming(self, call: Call, handler: StreamHandler) -> None:
        try:
            await handler(call)
        except RpcError as exc:
            call.finish(exc)
        except _BadMessage as exc:
            call.finish(exc.error)
        except asyncio.CancelledError:
            if not call.stream.closed:
                raise
        except Exception as exc:  # a handler bug is INTERNAL, and logged
            log.exception("%s failed", call.path)
            call.finish(RpcError(StatusCode.INTERNAL, f"statecar: {call.path} failed: {exc}"))
        else:
            call.finish()
