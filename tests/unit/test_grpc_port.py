"""
The gRPC port's lazy load (`grpcapi.port.LazyApplication`), frame by frame.

A real `http2.Server` on a loopback port whose application is loaded on the first client, with
the load held on a `threading.Event` so each test decides when it finishes (or fails): the
handshake proceeds meanwhile, calls that came first wait and are answered once it is done,
a stream reset while waiting is dropped, and a failed load answers every call INTERNAL naming
the cause. The sidecar process's side (protobuf not imported before a client) is
tests/compat/test_grpc_lazy_load.py.
"""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from tests.support.h2_client import H2Client, grpc_headers, message

from statecar_sidecar.grpcapi import hpack, http2
from statecar_sidecar.grpcapi.port import LazyApplication
from statecar_sidecar.grpcapi.status import StatusCode
from statecar_sidecar.grpcapi.transport import Call, GrpcApplication, Metadata, Route

LIMIT = 64 * 1024


@dataclass
class Lazy:
    port: int
    loop: asyncio.AbstractEventLoop
    server: http2.Server
    app: LazyApplication
    release: threading.Event
    loads: list[str]
    fail: list[BaseException]

    def wait_loaded(self) -> None:
        """Until the load's result (or failure) has reached the event loop."""

        async def settled() -> bool:
            return self.app.loaded is not None or self.app.failure is not None

        for _ in range(500):
            if asyncio.run_coroutine_threadsafe(settled(), self.loop).result(10):
                return
            threading.Event().wait(0.01)
        raise AssertionError("the load did not finish")


def _echo_app() -> GrpcApplication:
    async def echo(data: bytes, metadata: Metadata) -> bytes:
        return data

    async def up(call: Call) -> None:
        while (got := await call.read()) is not None:
            call.write(got.upper())

    return GrpcApplication({"/t.T/Echo": Route(unary=echo), "/t.T/Up": Route(stream=up)}, LIMIT)


@pytest.fixture
def lazy() -> Iterator[Lazy]:
    loop = asyncio.new_event_loop()
    release = threading.Event()
    loads: list[str] = []
    fail: list[BaseException] = []

    def load() -> GrpcApplication:
        loads.append(threading.current_thread().name)
        assert release.wait(10), "the test never released the load"
        if fail:
            raise fail[0]
        return _echo_app()

    app = LazyApplication(load, LIMIT)
    server = http2.Server(app, handshake_timeout=2, max_connections=8)
    app.bind(server)
    port = loop.run_until_complete(server.listen("127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Lazy(port, loop, server, app, release, loads, fail)
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_nothing_is_loaded_until_a_client_sends_the_preface(lazy: Lazy) -> None:
    with H2Client(lazy.port) as silent:
        silent.send(b"PRI * HTTP/2.0")  # a partial preface: a probe, not a client yet
        threading.Event().wait(0.2)
        assert lazy.loads == []
    with H2Client(lazy.port) as client:
        client.handshake()
        for _ in range(200):
            if lazy.loads:
                break
            threading.Event().wait(0.01)
    # Once, on a worker thread: the event loop never runs the import.
    assert len(lazy.loads) == 1
    assert lazy.loads[0] != "MainThread"


def test_the_handshake_proceeds_and_early_calls_are_answered_once_loaded(lazy: Lazy) -> None:
    with H2Client(lazy.port) as client:
        client.handshake()
        client.unary(1, "/t.T/Echo", b"first")
        # The stream's body arrives in two DATA frames, the second after the load finished.
        client.frame(http2.HEADERS, http2.END_HEADERS, 3, hpack.encode(grpc_headers("/t.T/Up")))
        client.frame(http2.DATA, 0, 3, message(b"ab"))
        client.frame(http2.PING, 0, 0, b"12345678")
        # SETTINGS, WINDOW_UPDATE, SETTINGS ACK, PING ACK: all before any call is answered.
        frames = client.frames_until(http2.PING)
        assert [f.kind for f in frames] == [
            http2.SETTINGS,
            http2.WINDOW_UPDATE,
            http2.SETTINGS,
            http2.PING,
        ]
        assert frames[-1].flags == http2.ACK
        assert lazy.app.loaded is None
        lazy.release.set()
        headers, data, trailers = client.response(1)
        assert headers[":status"] == "200"
        assert (data, trailers["grpc-status"]) == (message(b"first"), "0")
        lazy.wait_loaded()
        client.frame(http2.DATA, http2.END_STREAM, 3, message(b"cd"))
        _, data, trailers = client.response(3)
        assert data == message(b"AB") + message(b"CD")
        assert trailers["grpc-status"] == "0"
    # Later connections go to the loaded application directly.
    assert lazy.server.app is lazy.app.loaded
    with H2Client(lazy.port) as client:
        client.handshake()
        client.unary(1, "/t.T/Echo", b"later")
        assert client.response(1)[1] == message(b"later")
    assert len(lazy.loads) == 1


def test_a_stream_reset_while_waiting_is_dropped_and_the_next_one_answered(lazy: Lazy) -> None:
    with H2Client(lazy.port) as client:
        client.handshake()
        client.unary(1, "/t.T/Echo", b"gone")
        client.frame(http2.RST_STREAM, 0, 1, http2.CANCEL.to_bytes(4, "big"))
        client.unary(3, "/t.T/Echo", b"kept")
        client.frame(http2.PING, 0, 0, b"12345678")
        client.frames_until(http2.PING)  # the server has read all of the above
        lazy.release.set()
        seen = client.frames_until(http2.DATA, stream=3)
        assert seen[-1].payload == message(b"kept")
        assert all(f.stream != 1 for f in seen)


def test_a_body_over_the_limit_while_waiting_is_refused_as_after_loading(lazy: Lazy) -> None:
    with H2Client(lazy.port) as client:
        client.handshake()
        client.frame(http2.HEADERS, http2.END_HEADERS, 1, hpack.encode(grpc_headers("/t.T/Echo")))
        body = message(b"x" * (LIMIT + 1))  # one byte over the message limit
        for offset in range(0, len(body) - 5, http2.MAX_FRAME):
            client.frame(http2.DATA, 0, 1, body[offset : offset + http2.MAX_FRAME])
        client.frame(http2.DATA, http2.END_STREAM, 1, body[len(body) - 5 :])
        lazy.release.set()
        _, data, trailers = client.response(1)
        assert data == b""
        assert trailers["grpc-status"] == str(int(StatusCode.RESOURCE_EXHAUSTED))


def test_a_failed_load_answers_the_waiting_and_later_calls_internal_naming_the_cause(
    lazy: Lazy,
) -> None:
    lazy.fail.append(ModuleNotFoundError("No module named 'google.protobuf'"))
    with H2Client(lazy.port) as client:
        client.handshake()
        client.unary(1, "/t.T/Echo", b"early")
        lazy.release.set()
        _, data, trailers = client.response(1)
        assert data == b""
        assert trailers["grpc-status"] == str(int(StatusCode.INTERNAL))
        assert "loading it failed" in trailers["grpc-message"]
        assert "ModuleNotFoundError" in trailers["grpc-message"]
        assert "google.protobuf" in trailers["grpc-message"]
        client.unary(3, "/t.T/Up", b"later")
        _, _, trailers = client.response(3)
        assert trailers["grpc-status"] == str(int(StatusCode.INTERNAL))
    with H2Client(lazy.port) as client:
        client.handshake()
        client.unary(1, "/t.T/Echo", b"new connection")
        assert client.response(1)[2]["grpc-status"] == str(int(StatusCode.INTERNAL))
    assert len(lazy.loads) == 1  # not retried: a broken install stays broken


def _modules_after(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    code = f"import sys, {imports}; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(ast.literal_eval(done.stdout.strip()))


def test_what_opens_the_port_imports_no_protobuf_and_no_generated_messages() -> None:
    """The sidecar's start-up path to a listening gRPC port (`server`, `grpcapi.port`)."""
    loaded = _modules_after(
        "statecar_sidecar.server, statecar_sidecar.grpcapi.port",
        ("google", "grpc", "statecar_sidecar._protos", "statecar_sidecar.grpcapi.service"),
    )
    assert loaded == []


def test_the_loaded_api_does_not_read_the_package_metadata_nor_load_dapr_proto() -> None:
    """importlib.metadata (~0.8 MiB) waits for GetMetadata, the one RPC that needs the version;
    dapr.proto and the 13 files it imports (~0.85 MiB) for reflection or an unimplemented RPC."""
    loaded = _modules_after(
        "statecar_sidecar.grpcapi.server",
        ("importlib.metadata", "statecar_sidecar._protos.dapr.proto.runtime.v1.dapr_pb2"),
    )
    assert loaded == []


def test_each_implemented_rpc_parses_its_request_as_dapr_proto_declares_it() -> None:
    from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2
    from statecar_sidecar.grpcapi.service import IMPLEMENTED

    methods = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"].methods_by_name
    for name, request in IMPLEMENTED.items():
        method = methods[name]
        assert (method.client_streaming, method.server_streaming) == (False, False), name
        if name == "Shutdown":
            # Parsed as Empty: the same wire form while ShutdownRequest has no fields.
            assert method.input_type.full_name == "dapr.proto.runtime.v1.ShutdownRequest"
            assert not method.input_type.fields
        else:
            assert request.DESCRIPTOR.full_name == method.input_type.full_name, name
