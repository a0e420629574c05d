"""
An HTTP/2 server (RFC 9113) on an asyncio Protocol: just what a gRPC server needs.

It speaks cleartext HTTP/2 with prior knowledge (gRPC's `h2c`; no upgrade, no TLS, no server
push): the connection preface, SETTINGS and their ACK, HEADERS with CONTINUATION (decoded by
`hpack.Decoder`), DATA, flow control in both directions (the peer's INITIAL_WINDOW_SIZE and
MAX_FRAME_SIZE honoured; our windows replenished as data arrives), PING/ACK, RST_STREAM, and
GOAWAY both ways. PRIORITY and unknown frame types are ignored (§5.3.2, §5.5).

What a request *means* is the application's business (`grpcapi.transport`): the connection hands
it each stream when the stream's headers are complete (`Application.request`), collects the
stream's body, calls `Stream.complete` when the body is whole (or over its limit), and sends what
the application writes with `Stream.respond` / `send_*`, splitting DATA by the peer's frame size
and holding back what the flow-control windows do not allow yet.

Errors follow §5.4: a connection error sends GOAWAY with the code and closes; a stream error
sends RST_STREAM. Hostile peers are bounded: a frame larger than our SETTINGS_MAX_FRAME_SIZE, a
header block larger than `MAX_HEADER_BLOCK`, more than `MAX_CONCURRENT_STREAMS` open streams,
a body over the stream's limit, a connection that has not finished its preface within the
handshake timeout, a peer that does not read (reading pauses while our writes are backed up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from typing import Final, Protocol, cast

from statecar_sidecar.grpcapi import hpack
from statecar_sidecar.listener import create_server

log = logging.getLogger("statecar.grpc.http2")

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6

DEFAULT_WINDOW: Final = 65_535
DEFAULT_MAX_FRAME: Final = 16_384
MAX_WINDOW: Final = (1 << 31) - 1
#: What we accept: the default frame size (every client copes), 100 streams (RFC 9113's
#: recommended minimum), 16 KiB of decoded headers (grpc-go's default is 16 MiB, grpc-java's
#: 8 KiB: gRPC metadata is small), a 1 MiB window per stream and 4 MiB per connection.
MAX_FRAME: Final = DEFAULT_MAX_FRAME
MAX_CONCURRENT_STREAMS: Final = 100
MAX_HEADER_LIST: Final = 16_384
#: An encoded header block (HEADERS + CONTINUATIONs) larger than this closes the connection:
#: CONTINUATION floods (CVE-2024-27316 and kin) are a memory attack.
MAX_HEADER_BLOCK: Final = 65_536
STREAM_WINDOW: Final = 1 << 20
CONNECTION_WINDOW: Final = 4 << 20
#: A connection that has buffered this many unread request bytes (over all its streams) has
#: its largest stream refused: the streams' own limits bound each body, this bounds their sum.
MAX_BUFFERED_PER_CONNECTION: Final = 32 << 20

_FRAME_HEADER: Final = struct.Struct(">HBBBL")
_SETTING: Final = struct.Struct(">HL")
_U32: Final = struct.Struct(">L")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame: the 9-octet header (§4.1) and the payload."""
    size = len(payload)
    return _FRAME_HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def _settings_payload(values: dict[int, int]) -> bytes:
    return b"".join(_SETTING.pack(k, v) for k, v in values.items())


#: Our SETTINGS (sent first) and the connection WINDOW_UPDATE that raises its window.
SERVER_PREFACE: Final = frame(
    SETTINGS,
    0,
    0,
    _settings_payload(
        {
            SETTINGS_ENABLE_PUSH: 0,
            SETTINGS_MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
            SETTINGS_INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            SETTINGS_MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
        }
    ),
) + frame(WINDOW_UPDATE, 0, 0, _U32.pack(CONNECTION_WINDOW - DEFAULT_WINDOW))
_SETTINGS_ACK: Final = frame(SETTINGS, ACK, 0)


class ConnectionError_(Exception):
    """A connection error (§5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Application(Protocol):
    """What the connection asks of the application (grpcapi.transport.GrpcApplication)."""

    def request(self, stream: Stream) -> None:
        """A stream's headers are complete: decide how to answer (see `Stream`)."""


class Stream:
    """One request stream: its headers, its body as it arrives, and the way back.

    The application sets `complete` (called once, when the body is whole or `overflowed`),
    `limit` (the body bytes it accepts) and `task` (cancelled when the peer resets the stream
    or the connection is lost), or reads the body incrementally with `wait`.
    """

    __slots__ = (
        "_waiter",
        "body",
        "closed",
        "complete",
        "connection",
        "ended",
        "headers",
        "id",
        "limit",
        "overflowed",
        "pending",
        "pending_end",
        "responded",
        "send_window",
        "task",
        "unacked",
    )

    def __init__(self, connection: Connection, stream_id: int, send_window: int) -> None:
        self.connection = connection
        self.id = stream_id
        self.headers: list[hpack.Header] = []
        self.body = bytearray()
        #: The peer sent END_STREAM.
        self.ended = False
        #: We sent END_STREAM (or RST_STREAM).
        self.responded = False
        #: Reset or the connection is gone: nothing more is sent.
        self.closed = False
        self.overflowed = False
        self.limit = STREAM_WINDOW
        self.complete: Callable[[Stream], None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.send_window = send_window
        #: Received bytes not yet returned to the peer's stream window.
        self.unacked = 0
        #: DATA the windows did not allow yet, and the trailers block to send after it.
        self.pending = b""
        self.pending_end: bytes | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- reading (streaming RPCs) ---------------------------------------------------------------

    async def wait(self) -> None:
        """Until more body arrives, the body ends, or the stream is reset."""
        if self.ended or self.closed or self.overflowed:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- writing -------------------------------------------------------------------------------

    def respond(self, headers: bytes, data: bytes, trailers: bytes) -> None:
        """A whole response: HEADERS, the DATA, trailers with END_STREAM, in one write."""
        self.connection.send(self, headers, data, trailers)

    def send_headers(self, block: bytes, *, end_stream: bool = False) -> None:
        if end_stream:
            self.connection.send(self, None, b"", block)
        else:
            self.connection.send(self, block, b"", None)

    def send_data(self, data: bytes) -> None:
        self.connection.send(self, None, data, None)


class Connection(asyncio.Protocol):
    """One client connection (a gRPC channel's subchannel)."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._app = server.app
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._preface_done = False
        self._decoder = hpack.Decoder(MAX_HEADER_LIST)
        self.streams: dict[int, Stream] = {}
        self._last_stream = 0
        #: The stream whose header block continues in CONTINUATION frames, and its parts.
        self._continued: Stream | None = None
        self._continued_parts: list[bytes] = []
        self._continued_size = 0
        self._continued_end = False
        self._continued_new = False
        self._peer_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._recv_unacked = 0
        self._buffered = 0
        self._blocked: dict[int, Stream] = {}
        self._going_away = False
        self._closed = False
        self._handshake_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        server = self._server
        if len(server.connections) >= server.max_connections:
            log.warning("refusing a gRPC connection: %d are open, the cap", server.max_connections)
            transport.write(
                SERVER_PREFACE + self._goaway_frame(ENHANCE_YOUR_CALM, b"too many connections")
            )
            transport.close()
            self._closed = True
            return
        server.connections.add(self)
        transport.write(SERVER_PREFACE)
        self._handshake_timer = asyncio.get_running_loop().call_later(
            server.handshake_timeout, self._handshake_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        for stream in self.streams.values():
            self._abandon(stream)
        self.streams.clear()
        self._blocked.clear()
        self._server.connection_closed()

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading what it sends (PINGs, requests).
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        buffer = self._buffer + data if self._buffer else data
        try:
            if not self._preface_done:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(buffer):
                        raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self._buffer = buffer
                    return
                if not buffer.startswith(PREFACE):
                    raise ConnectionError_(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                buffer = buffer[len(PREFACE) :]
                self._preface_done = True
                if self._handshake_timer is not None:
                    self._handshake_timer.cancel()
                    self._handshake_timer = None
                if self._server.on_client is not None:
                    self._server.on_client()
            position = self._frames(buffer)
        except ConnectionError_ as exc:
            self._connection_error(exc.code, str(exc))
            return
        except Exception as exc:  # a bug here must cost one connection, not the listener
            log.exception("a gRPC connection failed")
            self._connection_error(INTERNAL_ERROR, f"statecar: {exc}")
            return
        self._buffer = buffer[position:] if position < len(buffer) else b""
        if self._recv_unacked >= CONNECTION_WINDOW // 4 and not self._closed:
            assert self._transport is not None
            self._transport.write(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked)))
            self._recv_unacked = 0

    def eof_received(self) -> bool:
        return False

    # -- frames ---------------------------------------------------------------------------------

    def _frames(self, buffer: bytes) -> int:
        position = 0
        end = len(buffer)
        unpack = _FRAME_HEADER.unpack_from
        while end - position >= 9 and not self._closed:
            high, low, kind, flags, stream_id = unpack(buffer, position)
            size = (high << 8) | low
            if size > MAX_FRAME:
                raise ConnectionError_(
                    FRAME_SIZE_ERROR, f"a frame of {size} bytes exceeds SETTINGS_MAX_FRAME_SIZE"
                )
            start = position + 9
            if end - start < size:
                break
            payload = buffer[start : start + size]
            position = start + size
            stream_id &= 0x7FFFFFFF
            if self._continued is not None and kind != CONTINUATION:
                raise ConnectionError_(
                    PROTOCOL_ERROR, "a header block was interrupted before END_HEADERS"
                )
            if kind == DATA:
                self._data(flags, stream_id, payload)
            elif kind == HEADERS:
                self._headers(flags, stream_id, payload)
            elif kind == CONTINUATION:
                self._continuation(flags, stream_id, payload)
            elif kind == WINDOW_UPDATE:
                self._window_update(stream_id, payload)
            elif kind == PING:
                self._ping(flags, stream_id, payload)
            elif kind == SETTINGS:
                self._settings(flags, stream_id, payload)
            elif kind == RST_STREAM:
                self._rst_stream(stream_id, payload)
            elif kind == GOAWAY:
                if stream_id:
                    raise ConnectionError_(PROTOCOL_ERROR, "GOAWAY on a stream")
                self._going_away = True
                if not self.streams:
                    self._close()
            elif kind == PRIORITY:
                if not stream_id:
                    raise ConnectionError_(PROTOCOL_ERROR, "PRIORITY on stream 0")
                if size != 5:
                    self._reset(stream_id, FRAME_SIZE_ERROR)
            elif kind == PUSH_PROMISE:
                raise ConnectionError_(PROTOCOL_ERROR, "a client sent PUSH_PROMISE")
            # Unknown frame types are ignored (§4.1, §5.5).
        return position

    def _data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        # Flow control counts the whole payload, padding included (§6.9.1). The connection's
        # window is given back as data arrives; each stream's is given back as it is buffered.
        self._recv_unacked += size
        if flags & PADDED:
            payload = self._unpad(payload)
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream:
                raise ConnectionError_(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            return  # a stream we closed or reset: its data in flight is dropped
        if stream.ended:
            self._reset(stream_id, STREAM_CLOSED)
            return
        if payload:
            if stream.overflowed:
                pass
            elif len(stream.body) + len(payload) > stream.limit or (
                self._buffered + len(payload) > MAX_BUFFERED_PER_CONNECTION
            ):
                self._buffered -= len(stream.body)
                stream.body = bytearray()
                stream.overflowed = True
                self._finish_body(stream)
            else:
                stream.body += payload
                self._buffered += len(payload)
        if flags & END_STREAM:
            stream.ended = True
            self._finish_body(stream)
            if stream.responded:
                self._forget(stream)
        elif size and not stream.overflowed:
            stream.unacked += size
            if stream.unacked >= STREAM_WINDOW // 2:
                assert self._transport is not None
                self._transport.write(frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.unacked)))
                stream.unacked = 0
        stream._wake()

    def _finish_body(self, stream: Stream) -> None:
        complete = stream.complete
        if complete is not None:
            stream.complete = None
            complete(stream)

    @staticmethod
    def _unpad(payload: bytes) -> bytes:
        if not payload:
            raise ConnectionError_(PROTOCOL_ERROR, "a PADDED frame without its pad length")
        pad = payload[0]
        if pad >= len(payload):
            raise ConnectionError_(PROTOCOL_ERROR, "padding as long as the frame")
        return payload[1 : len(payload) - pad]

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id or not stream_id & 1:
            raise ConnectionError_(PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        if flags & PADDED:
            payload = self._unpad(payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError_(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        stream = self.streams.get(stream_id)
        new = stream is None
        if stream is None:
            if stream_id <= self._last_stream:
                raise ConnectionError_(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
            self._last_stream = stream_id
            stream = Stream(self, stream_id, self._peer_initial_window)
        elif stream.ended:
            raise ConnectionError_(STREAM_CLOSED, f"HEADERS after END_STREAM on {stream_id}")
        end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._header_block(stream, payload, end_stream, new)
        else:
            self._continued = stream
            self._continued_parts = [payload]
            self._continued_size = len(payload)
            self._continued_end = end_stream
            self._continued_new = new

    def _continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        stream = self._continued
        if stream is None or stream.id != stream_id:
            raise ConnectionError_(
                PROTOCOL_ERROR, "CONTINUATION without a header block to continue"
            )
        self._continued_size += len(payload)
        if self._continued_size > MAX_HEADER_BLOCK:
            raise ConnectionError_(
                ENHANCE_YOUR_CALM, f"a header block larger than {MAX_HEADER_BLOCK} bytes"
            )
        self._continued_parts.append(payload)
        if flags & END_HEADERS:
            self._continued = None
            block = b"".join(self._continued_parts)
            self._continued_parts = []
            self._header_block(stream, block, self._continued_end, self._continued_new)

    def _header_block(self, stream: Stream, block: bytes, end_stream: bool, new: bool) -> None:
        try:
            headers = self._decoder.decode(block)
        except hpack.HeaderListTooLarge as exc:
            log.info("gRPC stream %d refused: %s", stream.id, exc)
            if new:
                self._reset(stream.id, REFUSED_STREAM)
            return
        except hpack.HpackError as exc:
            raise ConnectionError_(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        if not new:
            # Trailers from the client: gRPC clients send none, but they end the stream.
            if end_stream:
                stream.ended = True
                self._finish_body(stream)
                stream._wake()
                if stream.responded:
                    self._forget(stream)
            return
        if self._going_away:
            self._reset(stream.id, REFUSED_STREAM)
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._reset(stream.id, REFUSED_STREAM)
            return
        stream.headers = headers
        stream.ended = end_stream
        self.streams[stream.id] = stream
        self._app.request(stream)
        if end_stream and not stream.closed:
            self._finish_body(stream)

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ConnectionError_(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._peer_window += increment
            if self._peer_window > MAX_WINDOW:
                raise ConnectionError_(FLOW_CONTROL_ERROR, "the connection window overflowed")
            for blocked in list(self._blocked.values()):
                self._flush(blocked)
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream:
                raise ConnectionError_(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return
        if not increment:
            self._reset(stream_id, PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._reset(stream_id, FLOW_CONTROL_ERROR)
            return
        if stream.id in self._blocked:
            self._flush(stream)

    def _ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError_(FRAME_SIZE_ERROR, "PING is not 8 bytes")
        if not flags & ACK:
            assert self._transport is not None
            self._transport.write(frame(PING, ACK, 0, payload))

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError_(FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionError_(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError_(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= (1 << 24) - 1:
                    raise ConnectionError_(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} out of range")
                self._peer_max_frame = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise ConnectionError_(PROTOCOL_ERROR, "ENABLE_PUSH is neither 0 nor 1")
            # HEADER_TABLE_SIZE bounds the table of *our* encoder, which never inserts.
        assert self._transport is not None
        self._transport.write(_SETTINGS_ACK)
        if self._blocked:
            for stream in list(self._blocked.values()):
                self._flush(stream)

    def _rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionError_(FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
        if not stream_id:
            raise ConnectionError_(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._last_stream:
                raise ConnectionError_(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            return
        stream.responded = True
        self._forget(stream)
        self._abandon(stream)

    # -- sending --------------------------------------------------------------------------------

    def send(
        self, stream: Stream, headers: bytes | None, data: bytes, trailers: bytes | None
    ) -> None:
        """Queue HEADERS / DATA / trailers (END_STREAM) on `stream`, as the windows allow."""
        if stream.closed or stream.responded or self._closed:
            return
        transport = self._transport
        assert transport is not None
        parts: list[bytes] = []
        if headers is not None:
            self._header_frames(parts, stream.id, headers, 0)
        if data:
            if stream.pending:
                stream.pending += data
            else:
                data = self._data_frames(parts, stream, data)
                if data:
                    stream.pending = data
                    self._blocked[stream.id] = stream
        if trailers is not None:
            if stream.pending:
                stream.pending_end = trailers
            else:
                self._end(parts, stream, trailers)
        transport.write(b"".join(parts))
        if stream.responded:
            self._forget(stream)

    def _end(self, parts: list[bytes], stream: Stream, trailers: bytes) -> None:
        self._header_frames(parts, stream.id, trailers, END_STREAM)
        stream.responded = True
        if not stream.ended:
            # The answer is complete before the request: the client need send no more (§8.1).
            parts.append(frame(RST_STREAM, 0, stream.id, _U32.pack(NO_ERROR)))

    def _header_frames(self, parts: list[bytes], stream_id: int, block: bytes, flags: int) -> None:
        limit = self._peer_max_frame
        if len(block) <= limit:
            parts.append(frame(HEADERS, flags | END_HEADERS, stream_id, block))
            return
        parts.append(frame(HEADERS, flags, stream_id, block[:limit]))
        for offset in range(limit, len(block), limit):
            last = offset + limit >= len(block)
            chunk = block[offset : offset + limit]
            parts.append(frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk))

    def _data_frames(self, parts: list[bytes], stream: Stream, data: bytes) -> bytes:
        """DATA frames for as much of `data` as the windows allow; returns the rest."""
        allowed = min(len(data), stream.send_window, self._peer_window)
        if allowed <= 0:
            return data
        limit = self._peer_max_frame
        for offset in range(0, allowed, limit):
            chunk = data[offset : min(offset + limit, allowed)]
            parts.append(frame(DATA, 0, stream.id, chunk))
        stream.send_window -= allowed
        self._peer_window -= allowed
        return data[allowed:]

    def _flush(self, stream: Stream) -> None:
        if stream.closed:
            self._blocked.pop(stream.id, None)
            return
        parts: list[bytes] = []
        stream.pending = self._data_frames(parts, stream, stream.pending)
        if not stream.pending:
            self._blocked.pop(stream.id, None)
            if stream.pending_end is not None:
                self._end(parts, stream, stream.pending_end)
                stream.pending_end = None
        if parts:
            assert self._transport is not None
            self._transport.write(b"".join(parts))
        if stream.responded:
            self._forget(stream)

    # -- stream and connection ends -------------------------------------------------------------

    def _forget(self, stream: Stream) -> None:
        """Drop a stream we are done with: answered (END_STREAM sent, and either the peer's
        END_STREAM received or RST_STREAM(NO_ERROR) sent), or reset by either side."""
        if self.streams.pop(stream.id, None) is not None:
            self._buffered -= len(stream.body)
            self._blocked.pop(stream.id, None)
            if self._going_away and not self.streams:
                self._close()

    def _abandon(self, stream: Stream) -> None:
        stream.closed = True
        stream._wake()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    def _reset(self, stream_id: int, code: int) -> None:
        assert self._transport is not None
        self._transport.write(frame(RST_STREAM, 0, stream_id, _U32.pack(code)))
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.responded = True
            stream.closed = True
            self._forget(stream)
            self._abandon(stream)

    def _goaway_frame(self, code: int, debug: bytes = b"") -> bytes:
        return frame(GOAWAY, 0, 0, _U32.pack(self._last_stream) + _U32.pack(code) + debug)

    def _connection_error(self, code: int, message: str) -> None:
        log.info("closing a gRPC connection: %s", message)
        if self._transport is not None and not self._closed:
            self._transport.write(self._goaway_frame(code, message.encode()[:256]))
        self._close()

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self._preface_done:
            self._connection_error(PROTOCOL_ERROR, "no connection preface within the timeout")

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._closed = True
        for stream in self.streams.values():
            self._abandon(stream)

    def go_away(self) -> None:
        """Graceful shutdown: no new streams; close once the open ones are answered."""
        if self._closed or self._going_away:
            return
        self._going_away = True
        assert self._transport is not None
        self._transport.write(self._goaway_frame(NO_ERROR))
        if not self.streams:
            self._close()

    def abort(self) -> None:
        self._close()


class Server:
    """The listening sockets and their connections."""

    def __init__(
        self,
        app: Application,
        *,
        handshake_timeout: float,
        max_connections: int,
        on_client: Callable[[], None] | None = None,
    ) -> None:
        #: What each new connection hands its streams to (it may be replaced while serving).
        self.app = app
        #: Called whenever a connection has sent the client preface: an HTTP/2 client is here,
        #: not a TCP probe or a port scan (grpcapi.port loads the gRPC API on the first one).
        self.on_client = on_client
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self._servers: list[asyncio.Server] = []
        self._idle: asyncio.Event | None = None

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); returns the port."""
        loop = asyncio.get_running_loop()
        server = await create_server(loop, lambda: Connection(self), host, port, backlog=1024)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def connection_closed(self) -> None:
        if self._idle is not None and not self.connections:
            self._idle.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening, GOAWAY every connection, wait up to `grace` s for open streams."""
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.go_away()
        if self.connections and grace:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for connection in list(self.connections):
            connection.abort()
        for server in self._servers:
            await server.wait_closed()
