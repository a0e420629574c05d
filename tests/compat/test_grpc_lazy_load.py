"""
A fresh sidecar's gRPC port: listening from start-up, its API (protobuf, the generated Dapr
messages, health, reflection) loaded by the first client, so an app that never calls gRPC never
pays its ~12 MiB (grpcapi/port.py).

Whether protobuf is loaded is read from outside, in the process's /proc/<pid>/maps: upb's
extension module is mapped once `google.protobuf` is imported. Each test starts its own sidecar
(the shared compat sidecars have served gRPC calls already).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeAlias

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from tests.compat.test_grpc_transports import health_check, server_reflection_info
from tests.support.sidecar import SidecarProcess

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

pytestmark = pytest.mark.compat

UPB = "google/_upb/_message"
COMPONENT = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: mem\n"
    "spec:\n  type: state.in-memory\n  version: v1\n"
)


def protobuf_loaded(sidecar: SidecarProcess) -> bool:
    assert sidecar.process is not None
    return UPB in Path(f"/proc/{sidecar.process.pid}/maps").read_text()


# A string: grpc's classes are generic in types-grpcio only, not at run time.
Raw: TypeAlias = "grpc.UnaryUnaryMultiCallable[bytes, bytes]"


def _failure(call: Raw) -> tuple[grpc.StatusCode, str]:
    """The status of a call (of an empty message) that must fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call(b"", timeout=30)
    error = caught.value
    assert isinstance(error, grpc.Call)
    return error.code(), error.details() or ""


@contextlib.contextmanager
def _sidecar(tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[SidecarProcess]:
    (tmp_path / "mem.yaml").write_text(COMPONENT)
    sidecar = SidecarProcess(components_path=tmp_path, env=env)
    try:
        sidecar.start()
        yield sidecar
    finally:
        sidecar.stop()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[SidecarProcess]:
    with _sidecar(tmp_path) as sidecar:
        yield sidecar


def test_protobuf_is_loaded_by_the_first_grpc_client_not_at_start_up(
    fresh: SidecarProcess,
) -> None:
    # Healthy means the gRPC port listens (health's `starting` gate), with nothing loaded yet.
    socket.create_connection(("127.0.0.1", fresh.grpc_port), timeout=5).close()
    assert httpx.get(f"{fresh.url}/v1.0/state/mem/k").status_code == 204
    # A TCP probe that sends no HTTP/2 preface is not a client.
    with socket.create_connection(("127.0.0.1", fresh.grpc_port), timeout=5) as probe:
        probe.sendall(b"GET / HTTP/1.1\r\n\r\n")
        probe.recv(1024)
    time.sleep(0.3)
    assert not protobuf_loaded(fresh)
    with grpc.insecure_channel(fresh.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        stub.SaveState(
            state_pb2.SaveStateRequest(
                store_name="mem", states=[common_pb2.StateItem(key="k", value=b"v")]
            ),
            timeout=30,
        )
        got = stub.GetState(state_pb2.GetStateRequest(store_name="mem", key="k"), timeout=10)
    assert got.data == b"v"
    assert protobuf_loaded(fresh)
    assert "gRPC API loaded for its first client" in fresh.log


def test_calls_that_arrive_while_it_loads_all_wait_for_it(fresh: SidecarProcess) -> None:
    """The first connection's first calls, at once: Dapr, health and reflection (grpcurl's first
    question); each is answered once the API is loaded, none is lost or refused."""
    with grpc.insecure_channel(fresh.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        check = health_check(channel)
        reflect = server_reflection_info(channel)

        def services() -> list[str]:
            (answer,) = reflect(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30
            )
            return [s.name for s in answer.list_services_response.service]

        with ThreadPoolExecutor(8) as pool:
            gets = [
                pool.submit(
                    stub.GetState,
                    state_pb2.GetStateRequest(store_name="mem", key=f"k{i}"),
                    timeout=30,
                )
                for i in range(5)
            ]
            healthy = pool.submit(check, health_pb2.HealthCheckRequest(service=""), timeout=30)
            listed = pool.submit(services)
            assert [g.result().data for g in gets] == [b""] * 5
            assert healthy.result().status == health_pb2.HealthCheckResponse.SERVING
            assert "dapr.proto.runtime.v1.Dapr" in listed.result()
    assert httpx.get(f"{fresh.url}/v1.0/state/mem/k0").status_code == 204


def test_rpcs_statecar_does_not_serve_are_told_apart_once_dapr_proto_loads(
    fresh: SidecarProcess,
) -> None:
    """dapr.proto loads on the first call that needs it: an RPC of the Dapr API statecar does
    not implement is UNIMPLEMENTED naming it, a path that is no Dapr RPC gets the transport's
    answer for an unknown method; both at once on a fresh sidecar, before and after the load."""
    with grpc.insecure_channel(fresh.grpc_address) as channel:
        publish: Raw = channel.unary_unary("/dapr.proto.runtime.v1.Dapr/PublishEvent")
        bogus: Raw = channel.unary_unary("/dapr.proto.runtime.v1.Dapr/NoSuchRpc")
        for _ in range(2):
            with ThreadPoolExecutor(2) as pool:
                published, unknown = pool.map(_failure, (publish, bogus))
            assert published[0] == grpc.StatusCode.UNIMPLEMENTED
            assert (
                "statecar does not implement /dapr.proto.runtime.v1.Dapr/PublishEvent"
                in (published[1])
            )
            assert unknown == (
                grpc.StatusCode.UNIMPLEMENTED,
                "statecar serves no method '/dapr.proto.runtime.v1.Dapr/NoSuchRpc'",
            )


def test_a_failed_load_answers_internal_naming_the_cause_and_http_still_serves(
    tmp_path: Path,
) -> None:
    # A grpc_reflection that cannot be imported, ahead of the installed one on the path.
    shadow = tmp_path / "shadow" / "grpc_reflection"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ImportError('grpc_reflection broken for the test')\n"
    )
    path = f"{shadow.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    components = tmp_path / "components"
    components.mkdir()
    with _sidecar(components, env={"PYTHONPATH": path}) as sidecar:
        for _ in range(2):  # each new channel gets the answer too, not a hang
            with (
                grpc.insecure_channel(sidecar.grpc_address) as channel,
                pytest.raises(grpc.RpcError) as caught,
            ):
                dapr_pb2_grpc.DaprStub(channel).GetState(
                    state_pb2.GetStateRequest(store_name="mem", key="k"), timeout=30
                )
        error = caught.value
        assert isinstance(error, grpc.Call)
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "loading it failed" in (error.details() or "")
        assert "grpc_reflection broken for the test" in (error.details() or "")
        assert httpx.get(f"{sidecar.url}/v1.0/state/mem/k").status_code == 204
        assert "cannot serve the gRPC API" in sidecar.log
