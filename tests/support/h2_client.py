"""
A raw HTTP/2 client over a blocking loopback socket, frame by frame, for the gRPC port's tests.

It sends exactly the frames a test writes (well-formed or not) and reads back the server's
frames, decoding header blocks with the sidecar's own `hpack.Decoder` (itself checked against
RFC 7541's vectors in tests/unit/test_grpc_hpack.py). grpcio cannot send malformed frames, so
the framing and hostile tests use this.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from statecar_sidecar.grpcapi import hpack, http2


@dataclass(frozen=True)
class Frame:
    kind: int
    flags: int
    stream: int
    payload: bytes

    @property
    def error_code(self) -> int:
        """RST_STREAM's code, or GOAWAY's."""
        if self.kind == http2.GOAWAY:
            return int(struct.unpack(">L", self.payload[4:8])[0])
        return int(struct.unpack(">L", self.payload[:4])[0])


def grpc_headers(path: str, **extra: str) -> list[tuple[str, str | bytes]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra.items(),
    ]


def message(data: bytes) -> bytes:
    return b"\x00" + len(data).to_bytes(4, "big") + data


class H2Client:
    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = hpack.Decoder(1 << 24)
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_until_refused(self, data: bytes, at_most: int) -> int:
        """Send `data` repeatedly until the server stops taking it (it closed, or stopped
        reading and the socket timed out); returns how many sends went through."""
        for count in range(at_most):
            try:
                self.sock.sendall(data)
            except OSError:
                return count
        return at_most

    def frame(self, kind: int, flags: int, stream: int, payload: bytes = b"") -> None:
        self.send(http2.frame(kind, flags, stream, payload))

    def handshake(self, settings: bytes = b"") -> None:
        """The preface and our SETTINGS; the server's SETTINGS and its ACK are read later."""
        self.send(http2.PREFACE + http2.frame(http2.SETTINGS, 0, 0, settings))

    def unary(self, stream: int, path: str, body: bytes, **extra: str) -> None:
        block = hpack.encode(grpc_headers(path, **extra))
        self.frame(http2.HEADERS, http2.END_HEADERS, stream, block)
        self.frame(http2.DATA, http2.END_STREAM, stream, message(body))

    def read_frame(self) -> Frame | None:
        """The next frame, or None when the server closed the connection."""
        while True:
            if len(self._buffer) >= 9:
                size = int.from_bytes(self._buffer[:3], "big")
                if len(self._buffer) >= 9 + size:
                    kind, flags = self._buffer[3], self._buffer[4]
                    stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
                    payload = self._buffer[9 : 9 + size]
                    self._buffer = self._buffer[9 + size :]
                    return Frame(kind, flags, stream, payload)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self._buffer += chunk

    def frames_until(self, kind: int, stream: int | None = None) -> list[Frame]:
        """Frames up to and including the first of `kind` (on `stream`); stops at close."""
        seen: list[Frame] = []
        while (got := self.read_frame()) is not None:
            seen.append(got)
            if got.kind == kind and (stream is None or got.stream == stream):
                break
        return seen

    def response(self, stream: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        """(headers, DATA bytes, trailers) of `stream`, up to its END_STREAM."""
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data = b""
        while (got := self.read_frame()) is not None:
            if got.stream != stream:
                continue
            if got.kind == http2.HEADERS:
                decoded = dict(self.decoder.decode(got.payload))
                if headers:
                    trailers = decoded
                else:
                    headers = decoded
            elif got.kind == http2.DATA:
                data += got.payload
            elif got.kind == http2.RST_STREAM:
                raise AssertionError(f"stream {stream} reset with {got.error_code}")
            if got.flags & http2.END_STREAM:
                return headers, data, trailers or headers
        raise AssertionError(f"the connection closed before stream {stream} ended")

    def closed(self) -> bool:
        """Whether the server has closed (everything left is read and dropped)."""
        while self.read_frame() is not None:
            pass
        return True
