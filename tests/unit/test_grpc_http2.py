"""
The gRPC port's HTTP/2 server (`grpcapi.http2` + `grpcapi.transport`), frame by frame.

A real server on a loopback port in a thread of its own, with a small gRPC application (echo,
slow, stream), driven by a raw client (`tests/support/h2_client.py`) that sends exactly the
frames each test needs: the handshake, a unary call, CONTINUATION, flow control both ways, the
peer's max frame size, PING, RST_STREAM, grpc-timeout, the stream cap, GOAWAY on stop, and the
connection errors (bad preface, oversized frames and header blocks).
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from tests.support.h2_client import H2Client, grpc_headers, message

from statecar_sidecar.grpcapi import hpack, http2, huffman
from statecar_sidecar.grpcapi.status import RpcError, StatusCode
from statecar_sidecar.grpcapi.transport import Call, GrpcApplication, Metadata, Route

LIMIT = 64 * 1024


@dataclass
class Served:
    port: int
    loop: asyncio.AbstractEventLoop
    server: http2.Server
    cancelled: list[str] = field(default_factory=list)


def _app(served: list[str]) -> GrpcApplication:
    async def echo(data: bytes, metadata: Metadata) -> bytes:
        if data == b"fail":
            raise RpcError(StatusCode.ABORTED, "echo refused: 100% \u00e9")
        return data * int(metadata.get("x-times", "1"))

    async def slow(data: bytes, metadata: Metadata) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            served.append("slow")
            raise
        return data

    async def stream(call: Call) -> None:
        while (got := await call.read()) is not None:
            call.write(got.upper())

    return GrpcApplication(
        {
            "/t.T/Echo": Route(unary=echo),
            "/t.T/Slow": Route(unary=slow),
            "/t.T/Up": Route(stream=stream),
        },
        LIMIT,
    )


@pytest.fixture
def served() -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    cancelled: list[str] = []
    server = http2.Server(_app(cancelled), handshake_timeout=0.5, max_connections=8)
    port = loop.run_until_complete(server.listen("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Served(port, loop, server, cancelled)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _client(served: Served, settings: bytes = b"") -> H2Client:
    client = H2Client(served.port)
    client.handshake(settings)
    return client


def test_the_server_speaks_first_and_acknowledges_the_clients_settings(served: Served) -> None:
    with _client(served) as client:
        first = client.read_frame()
        assert first is not None
        assert first.kind == http2.SETTINGS
        assert not first.flags
        assert struct.pack(">HL", http2.SETTINGS_MAX_CONCURRENT_STREAMS, 100) in first.payload
        window = client.read_frame()
        assert window is not None
        assert window.kind == http2.WINDOW_UPDATE
        ack = client.read_frame()
        assert ack is not None
        assert (ack.kind, ack.flags) == (http2.SETTINGS, http2.ACK)


def test_a_unary_call_gets_headers_its_message_and_ok_trailers(served: Served) -> None:
    with _client(served) as client:
        client.unary(1, "/t.T/Echo", b"hello")
        headers, data, trailers = client.response(1)
        assert headers[":status"] == "200"
        assert headers["content-type"] == "application/grpc"
        assert data == message(b"hello")
        assert trailers["grpc-status"] == "0"
        # The next call on the connection, with the headers now cached by the decoder.
        client.unary(3, "/t.T/Echo", b"again")
        assert client.response(3)[1] == message(b"again")


def test_an_error_is_trailers_only_with_a_percent_encoded_message(served: Served) -> None:
    with _client(served) as client:
        client.unary(1, "/t.T/Echo", b"fail")
        _headers, data, trailers = client.response(1)
        assert data == b""
        assert trailers["grpc-status"] == str(int(StatusCode.ABORTED))
        assert trailers["grpc-message"] == "echo refused: 100%25 %C3%A9"


def test_huffman_coded_dynamically_indexed_headers_split_over_continuation(
    served: Served,
) -> None:
    path = huffman.encode(b"/t.T/Echo")
    # :method POST (3), :scheme http (6), :path with incremental indexing, Huffman-coded.
    block = b"\x83\x86\x44" + bytes((0x80 | len(path),)) + path
    block += hpack.encode([("content-type", "application/grpc"), ("x-times", "2")])
    with _client(served) as client:
        client.frame(http2.HEADERS, 0, 1, block[:3])
        client.frame(http2.CONTINUATION, 0, 1, block[3:10])
        client.frame(http2.CONTINUATION, http2.END_HEADERS, 1, block[10:])
        client.frame(http2.DATA, http2.END_STREAM, 1, message(b"ab"))
        assert client.response(1)[1] == message(b"abab")
        # Stream 3 refers to the :path now in the dynamic table (index 62).
        client.frame(
            http2.HEADERS, http2.END_HEADERS, 3, b"\x83\x86\xbe" + block[3 + 1 + len(path) :]
        )
        client.frame(http2.DATA, http2.END_STREAM, 3, message(b"c"))
        assert client.response(3)[1] == message(b"cc")


def test_unknown_frame_types_and_priority_are_ignored(served: Served) -> None:
    with _client(served) as client:
        client.frame(0x42, 0x0, 0, b"whatever")
        client.frame(http2.PRIORITY, 0, 1, b"\x00\x00\x00\x00\x10")
        client.unary(1, "/t.T/Echo", b"x")
        assert client.response(1)[1] == message(b"x")


def test_ping_is_answered_with_the_same_payload(served: Served) -> None:
    with _client(served) as client:
        client.frame(http2.PING, 0, 0, b"12345678")
        (*_, pong) = client.frames_until(http2.PING)
        assert (pong.flags, pong.payload) == (http2.ACK, b"12345678")


def test_the_peers_window_holds_data_back_until_window_update(served: Served) -> None:
    settings = struct.pack(">HL", http2.SETTINGS_INITIAL_WINDOW_SIZE, 10)
    with _client(served, settings) as client:
        client.unary(1, "/t.T/Echo", b"0123456789abcdef", **{"x-times": "4"})  # 64 B + 5
        seen = client.frames_until(http2.DATA, 1)
        assert len(seen[-1].payload) == 10
        client.send(b"")  # nothing more may come before the window opens
        client.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.read_frame()
        client.sock.settimeout(10)
        client.frame(http2.WINDOW_UPDATE, 0, 1, struct.pack(">L", 1000))
        _, rest, trailers = client.response(1)
        assert len(rest) == 64 + 5 - 10
        assert trailers["grpc-status"] == "0"


def test_data_is_split_by_the_peers_max_frame_size(served: Served) -> None:
    settings = struct.pack(">HL", http2.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)
    with _client(served, settings) as client:
        client.frame(http2.WINDOW_UPDATE, 0, 0, struct.pack(">L", 1 << 20))
        client.unary(1, "/t.T/Echo", b"x" * 1000, **{"x-times": "40"})
        head = client.frames_until(http2.HEADERS, 1)  # SETTINGS, ACK, the response headers
        data = [f for f in client.frames_until(http2.HEADERS, 1) if f.kind == http2.DATA]
        assert head[-1].kind == http2.HEADERS
        assert data
        assert max(len(f.payload) for f in data) <= http2.DEFAULT_MAX_FRAME
        assert sum(len(f.payload) for f in data) == 40_000 + 5


def test_our_receive_window_is_given_back_for_large_requests(served: Served) -> None:
    with _client(served) as client:
        block = hpack.encode(grpc_headers("/t.T/Echo"))
        client.frame(http2.HEADERS, http2.END_HEADERS, 1, block)
        body = message(b"y" * 60_000)
        for offset in range(0, len(body), 16_384):
            flags = http2.END_STREAM if offset + 16_384 >= len(body) else 0
            client.frame(http2.DATA, flags, 1, body[offset : offset + 16_384])
        assert client.response(1)[1] == body


def test_a_message_over_the_limit_is_resource_exhausted(served: Served) -> None:
    with _client(served) as client:
        block = hpack.encode(grpc_headers("/t.T/Echo"))
        client.frame(http2.HEADERS, http2.END_HEADERS, 1, block)
        body = message(b"z" * (LIMIT + 1))
        for offset in range(0, len(body), 16_384):
            flags = http2.END_STREAM if offset + 16_384 >= len(body) else 0
            client.frame(http2.DATA, flags, 1, body[offset : offset + 16_384])
        trailers = client.response(1)[2]
        assert trailers["grpc-status"] == str(int(StatusCode.RESOURCE_EXHAUSTED))
        assert "larger than max" in trailers["grpc-message"]
        client.unary(3, "/t.T/Echo", b"still here")
        assert client.response(3)[1] == message(b"still here")


def test_rst_stream_cancels_the_call(served: Served) -> None:
    with _client(served) as client:
        client.unary(1, "/t.T/Slow", b"x")
        time.sleep(0.2)
        client.frame(http2.RST_STREAM, 0, 1, struct.pack(">L", http2.CANCEL))
        deadline = time.monotonic() + 5
        while not served.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
        assert served.cancelled == ["slow"]


def test_grpc_timeout_ends_the_call_with_deadline_exceeded(served: Served) -> None:
    with _client(served) as client:
        client.unary(1, "/t.T/Slow", b"x", **{"grpc-timeout": "200m"})
        trailers = client.response(1)[2]
        assert trailers["grpc-status"] == str(int(StatusCode.DEADLINE_EXCEEDED))


def test_unknown_methods_and_non_grpc_requests(served: Served) -> None:
    with _client(served) as client:
        client.unary(1, "/t.T/Nope", b"x")
        trailers = client.response(1)[2]
        assert trailers["grpc-status"] == str(int(StatusCode.UNIMPLEMENTED))
        assert "/t.T/Nope" in trailers["grpc-message"]
        block = hpack.encode([(":method", "GET"), (":scheme", "http"), (":path", "/")])
        client.frame(http2.HEADERS, http2.END_HEADERS | http2.END_STREAM, 3, block)
        assert client.response(3)[0][":status"] == "415"


def test_a_bidirectional_stream_answers_each_message_as_it_comes(served: Served) -> None:
    with _client(served) as client:
        client.frame(http2.HEADERS, http2.END_HEADERS, 1, hpack.encode(grpc_headers("/t.T/Up")))
        client.frame(http2.DATA, 0, 1, message(b"one"))
        got = [f for f in client.frames_until(http2.DATA, 1) if f.kind == http2.DATA]
        assert got[-1].payload == message(b"ONE")
        client.frame(http2.DATA, http2.END_STREAM, 1, message(b"two"))
        _, data, trailers = client.response(1)
        assert data == message(b"TWO")
        assert trailers["grpc-status"] == "0"


def test_streams_beyond_the_cap_are_refused(served: Served) -> None:
    with _client(served) as client:
        block = hpack.encode(grpc_headers("/t.T/Slow"))
        for stream in range(1, 2 * http2.MAX_CONCURRENT_STREAMS + 2, 2):
            client.frame(http2.HEADERS, http2.END_HEADERS, stream, block)
        refused = 2 * http2.MAX_CONCURRENT_STREAMS + 1
        (*_, reset) = client.frames_until(http2.RST_STREAM)
        assert (reset.stream, reset.error_code) == (refused, http2.REFUSED_STREAM)


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", http2.PROTOCOL_ERROR),
        (http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0, b"\x00" * 5), http2.FRAME_SIZE_ERROR),
        (http2.PREFACE + http2.frame(http2.PING, 0, 0, b"x" * (http2.MAX_FRAME + 1)), http2.FRAME_SIZE_ERROR),
        (http2.PREFACE + http2.frame(http2.DATA, 0, 1, b"x"), http2.PROTOCOL_ERROR),
        (http2.PREFACE + http2.frame(http2.HEADERS, http2.END_HEADERS, 2, b"\x82"), http2.PROTOCOL_ERROR),
        (http2.PREFACE + http2.frame(http2.HEADERS, http2.END_HEADERS, 1, b"\x80"), http2.COMPRESSION_ERROR),
        (http2.PREFACE + http2.frame(http2.CONTINUATION, http2.END_HEADERS, 1, b"\x82"), http2.PROTOCOL_ERROR),
        (http2.PREFACE + http2.frame(http2.WINDOW_UPDATE, 0, 0, b"\x00" * 4), http2.PROTOCOL_ERROR),
    ],
    ids=["http1", "settings-size", "oversized-frame", "data-idle", "even-stream", "hpack",
         "lone-continuation", "zero-window-update"],
)  # fmt: skip
def test_connection_errors_send_goaway_with_the_code_and_close(
    served: Served, send: bytes, code: int
) -> None:
    with H2Client(served.port) as client:
        client.send(send)
        (*_, goaway) = client.frames_until(http2.GOAWAY)
        assert goaway.kind == http2.GOAWAY
        assert goaway.error_code == code
        assert client.closed()


def test_a_frame_between_headers_and_continuation_is_a_protocol_error(served: Served) -> None:
    with _client(served) as client:
        client.frame(http2.HEADERS, 0, 1, b"\x83")
        client.frame(0x42, 0, 0, b"")  # even an unknown type may not interrupt a block (§6.10)
        (*_, goaway) = client.frames_until(http2.GOAWAY)
        assert goaway.error_code == http2.PROTOCOL_ERROR


def test_a_continuation_flood_is_cut_off_with_enhance_your_calm(served: Served) -> None:
    with _client(served) as client:
        client.frame(http2.HEADERS, 0, 1, b"\x82")
        flood = http2.frame(http2.CONTINUATION, 0, 1, b"\x00" * 16_000)
        assert client.send_until_refused(flood, 10_000) < 10_000
        (*_, goaway) = client.frames_until(http2.GOAWAY)
        assert goaway.error_code == http2.ENHANCE_YOUR_CALM


def test_a_connection_without_a_preface_is_closed_after_the_handshake_timeout(
    served: Served,
) -> None:
    with H2Client(served.port) as client:
        client.send(http2.PREFACE[:10])
        started = time.monotonic()
        (*_, goaway) = client.frames_until(http2.GOAWAY)
        assert goaway.error_code == http2.PROTOCOL_ERROR
        assert client.closed()
        assert time.monotonic() - started < 5


def test_stop_sends_goaway_and_lets_the_open_call_finish(served: Served) -> None:
    with _client(served) as client:
        client.unary(1, "/t.T/Echo", b"x")
        assert client.response(1)[1] == message(b"x")
        asyncio.run_coroutine_threadsafe(served.server.stop(1.0), served.loop).result(10)
        (*_, goaway) = client.frames_until(http2.GOAWAY)
        assert goaway.error_code == http2.NO_ERROR
        assert struct.unpack(">L", goaway.payload[:4])[0] == 1  # the last stream it took
        assert client.closed()


def test_the_sidecar_never_imports_grpcio() -> None:
    """The RSS and start-up win: grpcio stays installed for tests and `make protos` only."""
    code = (
        "import sys, statecar_sidecar.server, statecar_sidecar.grpcapi.server;"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
