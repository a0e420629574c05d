"""
Issue 9: hostile clients on the gRPC port cannot take the sidecar down.

A real `statecar sidecar` (in-memory store, 1 s header timeout, 64 KiB message limit) gets,
from raw sockets (`tests/support/h2_client.py`): bad prefaces, unknown and garbage frames,
CONTINUATION floods and oversized header lists, messages over the limit, slowloris prefaces, a
peer that floods PINGs and never reads, and a bounded seeded fuzz of random frames. Each
offender gets its GOAWAY / RST_STREAM / gRPC status; after each, a grpcio client on a fresh
channel still saves and reads a value, and the sidecar exits 0 at the end.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tests.hostile.test_slow_clients import sidecar_process
from tests.support.h2_client import H2Client, grpc_headers, message
from tests.support.sidecar import SidecarProcess

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from statecar_sidecar.grpcapi import hpack, http2
from statecar_sidecar.grpcapi.status import StatusCode
from statecar_sidecar.grpcapi.transport import frame_message

MEMORY = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: store}\n"
    "spec: {type: state.in-memory, version: v1}\n"
)
HEADER_TIMEOUT = 1.0
LIMIT = 64 * 1024
GET_STATE = "/dapr.proto.runtime.v1.Dapr/GetState"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SidecarProcess]:
    folder: Path = tmp_path_factory.mktemp("grpc-hostile")
    (folder / "store.yaml").write_text(MEMORY)
    env = {
        "STATECAR_READ_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "STATECAR_MAX_BODY_BYTES": str(LIMIT),
    }
    with sidecar_process(folder, env) as process:
        yield process


def assert_serving(sidecar: SidecarProcess) -> None:
    assert sidecar.process is not None
    assert sidecar.process.poll() is None, sidecar.log
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        value = bytes(range(256))
        item = common_pb2.StateItem(key="alive", value=value)
        stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=[item]), timeout=10)
        got = stub.GetState(state_pb2.GetStateRequest(store_name="store", key="alive"), timeout=10)
        assert got.data == value


def _goaway(client: H2Client) -> int:
    frames = client.frames_until(http2.GOAWAY)
    assert frames, "the connection closed without GOAWAY"
    assert frames[-1].kind == http2.GOAWAY, frames
    assert client.closed()
    return frames[-1].error_code


@pytest.mark.parametrize(
    "opening",
    [
        b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        bytes(random.Random(9).randrange(256) for _ in range(200)),
    ],
    ids=["http1", "tls", "almost-preface", "noise"],
)
def test_a_bad_preface_gets_goaway_and_the_sidecar_serves_on(
    sidecar: SidecarProcess, opening: bytes
) -> None:
    with H2Client(sidecar.grpc_port) as client:
        client.send(opening)
        assert _goaway(client) == http2.PROTOCOL_ERROR
    assert_serving(sidecar)


def test_unknown_frame_types_are_ignored_and_the_call_still_answers(
    sidecar: SidecarProcess,
) -> None:
    rng = random.Random(1)
    with H2Client(sidecar.grpc_port) as client:
        client.handshake()
        for _ in range(500):
            kind = rng.randrange(0x0A, 0x100)
            client.frame(kind, rng.randrange(256), rng.randrange(1 << 31), rng.randbytes(50))
        request = state_pb2.GetStateRequest(store_name="store", key="none")
        client.unary(1, GET_STATE, request.SerializeToString())
        _, data, trailers = client.response(1)
        assert trailers["grpc-status"] == "0"
        assert data == frame_message(b"")
    assert_serving(sidecar)


def test_a_continuation_flood_gets_goaway_enhance_your_calm(sidecar: SidecarProcess) -> None:
    with H2Client(sidecar.grpc_port) as client:
        client.handshake()
        client.frame(http2.HEADERS, 0, 1, b"\x83")
        flood = http2.frame(http2.CONTINUATION, 0, 1, b"\x00" * 16_000)
        # The server closes while we still send.
        assert client.send_until_refused(flood, 100_000) < 100_000
        assert _goaway(client) == http2.ENHANCE_YOUR_CALM
    assert_serving(sidecar)


def test_an_oversized_header_list_refuses_the_stream_not_the_connection(
    sidecar: SidecarProcess,
) -> None:
    with H2Client(sidecar.grpc_port) as client:
        client.handshake()
        block = hpack.encode([*grpc_headers(GET_STATE), ("x-big", "v" * 12_000)])
        block += hpack.encode([("x-big2", "w" * 12_000)])
        for offset in range(0, len(block), 16_384):
            last = offset + 16_384 >= len(block)
            kind = http2.HEADERS if offset == 0 else http2.CONTINUATION
            client.frame(kind, http2.END_HEADERS if last else 0, 1, block[offset : offset + 16_384])
        (*_, reset) = client.frames_until(http2.RST_STREAM, 1)
        assert reset.error_code == http2.REFUSED_STREAM
        request = state_pb2.GetStateRequest(store_name="store", key="none")
        client.unary(3, GET_STATE, request.SerializeToString())
        assert client.response(3)[2]["grpc-status"] == "0"
    assert_serving(sidecar)


def test_a_message_over_the_limit_is_resource_exhausted(sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        item = common_pb2.StateItem(key="big", value=b"x" * (LIMIT + 1))
        with pytest.raises(grpc.RpcError) as caught:
            stub.SaveState(
                state_pb2.SaveStateRequest(store_name="store", states=[item]), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "STATECAR_MAX_BODY_BYTES" in str(caught.value.details())
    # A length prefix announcing more than the limit, with the body never sent.
    with H2Client(sidecar.grpc_port) as client:
        client.handshake()
        client.frame(http2.HEADERS, http2.END_HEADERS, 1, hpack.encode(grpc_headers(GET_STATE)))
        client.frame(http2.DATA, http2.END_STREAM, 1, b"\x00\xff\xff\xff\xff")
        trailers = client.response(1)[2]
        assert trailers["grpc-status"] == str(int(StatusCode.INTERNAL))
    assert_serving(sidecar)


def test_slowloris_prefaces_are_closed_after_the_header_timeout(sidecar: SidecarProcess) -> None:
    clients = [H2Client(sidecar.grpc_port) for _ in range(40)]
    try:
        started = time.monotonic()
        for client in clients:
            client.send(http2.PREFACE[:7])
        assert_serving(sidecar)  # while they hang
        for client in clients:
            assert _goaway(client) == http2.PROTOCOL_ERROR
        assert time.monotonic() - started < HEADER_TIMEOUT + 5
    finally:
        for client in clients:
            client.close()
    assert_serving(sidecar)


def test_a_peer_that_floods_pings_and_never_reads_does_not_stall_others(
    sidecar: SidecarProcess,
) -> None:
    with H2Client(sidecar.grpc_port, timeout=2) as client:
        client.handshake()
        ping = http2.frame(http2.PING, 0, 0, b"12345678") * 1000
        # The sidecar stops reading, so our send buffer fills up: at most 34 MB are sent.
        assert client.send_until_refused(ping, 2000) < 2000
        assert_serving(sidecar)
    assert_serving(sidecar)


def test_seeded_random_frames_never_take_the_sidecar_down(sidecar: SidecarProcess) -> None:
    rng = random.Random(20261206)
    kinds = [*list(range(10)), 10, 255]
    for _ in range(150):
        with H2Client(sidecar.grpc_port, timeout=5) as client:
            client.handshake()
            try:
                for _ in range(rng.randrange(1, 8)):
                    kind = rng.choice(kinds)
                    stream = rng.choice([0, 1, 2, 3, rng.randrange(1 << 31)])
                    payload = rng.randbytes(rng.choice([0, 1, 4, 5, 8, 9, 30, 200]))
                    client.frame(kind, rng.randrange(256), stream, payload)
                client.sock.shutdown(socket.SHUT_WR)
                client.closed()
            except OSError:
                pass
    assert_serving(sidecar)


def test_a_window_update_overflow_is_a_flow_control_error(sidecar: SidecarProcess) -> None:
    with H2Client(sidecar.grpc_port) as client:
        client.handshake()
        client.frame(http2.WINDOW_UPDATE, 0, 0, struct.pack(">L", 0x7FFFFFFF))
        assert _goaway(client) == http2.FLOW_CONTROL_ERROR
    assert_serving(sidecar)


def test_a_message_body_is_read_whole_even_in_one_byte_frames(sidecar: SidecarProcess) -> None:
    request = state_pb2.GetStateRequest(store_name="store", key="alive").SerializeToString()
    with H2Client(sidecar.grpc_port) as client:
        client.handshake()
        client.frame(http2.HEADERS, http2.END_HEADERS, 1, hpack.encode(grpc_headers(GET_STATE)))
        body = message(request)
        for index in range(len(body)):
            flags = http2.END_STREAM if index == len(body) - 1 else 0
            client.frame(http2.DATA, flags, 1, body[index : index + 1])
        assert client.response(1)[2]["grpc-status"] == "0"


def test_a_response_larger_than_the_clients_window_arrives_whole(sidecar: SidecarProcess) -> None:
    """800 KB of GetBulkState through grpcio's 64 KiB initial window: WINDOW_UPDATE resumes it."""
    values = {f"bulk{i}": bytes([i % 256]) * 4096 for i in range(200)}
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        keys = list(values)
        for start in range(0, len(keys), 10):
            items = [common_pb2.StateItem(key=k, value=values[k]) for k in keys[start : start + 10]]
            stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=items), timeout=10)
        request = state_pb2.GetBulkStateRequest(store_name="store", keys=keys)
        got = stub.GetBulkState(request, timeout=30)
        assert {item.key: item.data for item in got.items} == values


def test_many_concurrent_calls_on_one_connection_all_answer(sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        item = common_pb2.StateItem(key="shared", value=b"v")
        stub.SaveState(state_pb2.SaveStateRequest(store_name="store", states=[item]), timeout=10)
        request = state_pb2.GetStateRequest(store_name="store", key="shared")
        futures = [stub.GetState.future(request, timeout=30) for _ in range(500)]
        assert {f.result().data for f in futures} == {b"v"}
