#!/usr/bin/env python3
"""
Protobuf on the gRPC hot path: the generated upb classes against a hand-written codec.

Not a test. Times, in-process, what one GetState costs in (de)serialization either way:
parsing a `GetStateRequest` (store name, key) and building and serializing a
`GetStateResponse` (1 KB of data, an ETag). The hand-written codec is the smallest one that is
correct for these two messages (varint tags and lengths, unknown fields skipped); docs/grpc.md
records the numbers and the choice.

    python bench/grpc_codec.py
"""

from __future__ import annotations

import timeit

from statecar_sidecar._protos.dapr.proto.runtime.v1 import state_pb2

REQUEST = state_pb2.GetStateRequest(store_name="s", key="k123").SerializeToString()
DATA = b'{"data":"' + b"a" * 1013 + b'"}'


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def parse_get_state(buf: bytes) -> tuple[str, str, int]:
    store = key = ""
    consistency = 0
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            size, pos = _varint(buf, pos)
            value = buf[pos : pos + size]
            pos += size
            if field == 1:
                store = value.decode()
            elif field == 2:
                key = value.decode()
        elif wire == 0:
            number, pos = _varint(buf, pos)
            if field == 3:
                consistency = number
        else:
            raise ValueError(f"wire type {wire}")
    return store, key, consistency


def _len(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def serialize_get_state_response(data: bytes, etag: str) -> bytes:
    raw = etag.encode()
    return b"\x0a" + _len(len(data)) + data + b"\x12" + _len(len(raw)) + raw


def upb() -> bytes:
    request = state_pb2.GetStateRequest.FromString(REQUEST)
    _ = (request.store_name, request.key, request.consistency)
    return state_pb2.GetStateResponse(data=DATA, etag="1796539341041235").SerializeToString()


def hand() -> bytes:
    parse_get_state(REQUEST)
    return serialize_get_state_response(DATA, "1796539341041235")


def main() -> None:
    assert upb() == hand()
    for name, fn in (("upb", upb), ("hand-written", hand)):
        runs = timeit.repeat(fn, number=100_000, repeat=5)
        print(f"{name}: {min(runs) / 100_000 * 1e6:.2f} µs per GetState (parse + serialize)")


if __name__ == "__main__":
    main()
