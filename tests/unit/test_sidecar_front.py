"""
The probes' and SDKs' plain GETs (health, liveness, metadata, `/metrics`) are answered without
FastAPI, with the exact status, headers and body FastAPI gives; everything else still reaches
FastAPI, which a real sidecar builds only when such a request first arrives.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.support import processes
from tests.support.sidecar import SidecarProcess, running_sidecar

from statecar_contract.components import ComponentError, ResolvedComponent
from statecar_sidecar.api.front import Front
from statecar_sidecar.api.routing import StateAPI
from statecar_sidecar.app import Health, create_app, create_ops_app
from statecar_sidecar.loader import FailedComponent
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime


@pytest.fixture
async def runtime() -> AsyncIterator[ComponentRuntime]:
    runtime = ComponentRuntime(app_id="myapp", namespace=None)
    await runtime.apply([ResolvedComponent("statestore", "state.in-memory")])
    yield runtime
    await runtime.close()


def _fronts(runtime: ComponentRuntime) -> tuple[Front, Front]:
    metrics = Metrics("myapp")
    health = Health(runtime, metrics)
    state = create_app(runtime, metrics, api_token=None, max_body_bytes=1024, health=health)
    assert isinstance(state, StateAPI)
    assert isinstance(state.app, Front)
    return state.app, create_ops_app(health, metrics)


async def _exchange(app: object, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]  # an ASGI callable
        base_url="http://s",
    ) as client:
        answer = await client.get(path)
        return answer.status_code, list(answer.headers.multi_items()), answer.content


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1.0/healthz", 204),
        ("/v1.0/healthz/outbound", 204),
        ("/v1.0/metadata", 200),
        ("/v1.0/healthz/statestore", 204),
        ("/v1.0/healthz/nostore", 404),
        ("/v1.0/healthz/%73tatestore", 204),
    ],
)
async def test_raw_answers_are_fastapis_bytes(
    runtime: ComponentRuntime, path: str, status: int
) -> None:
    state, ops = _fronts(runtime)
    for front in (state, ops) if path != "/v1.0/metadata" else (state,):
        raw = await _exchange(front, path)
        assert front._app is None, "a plain GET of a probe path must not build FastAPI"
        assert raw == await _exchange(front.app, path)
        assert raw[0] == status


async def test_raw_not_ready_answers_are_fastapis_bytes(runtime: ComponentRuntime) -> None:
    await runtime.apply(
        [ResolvedComponent("statestore", "state.in-memory")],
        failed=[
            FailedComponent(
                "broken", "broken.yaml", ComponentError("redisPort", "abc is not a port; fix it")
            )
        ],
    )
    state, ops = _fronts(runtime)
    for front in (state, ops):
        paths = ("/v1.0/healthz", "/v1.0/healthz/outbound", "/v1.0/healthz/broken")
        raw = [await _exchange(front, path) for path in paths]
        assert front._app is None
        for path, answer in zip(paths, raw, strict=True):
            assert answer[0] == 500
            assert b"broken" in answer[2]
            assert answer == await _exchange(front.app, path)


async def test_readiness_waits_for_the_grpc_listener(runtime: ComponentRuntime) -> None:
    """Until the gRPC port listens, healthz and outbound say so (the SDKs call gRPC right after
    outbound answers 204); liveness and a store's own health do not depend on it."""
    metrics = Metrics("myapp")
    health = Health(runtime, metrics)
    state = create_app(runtime, metrics, api_token=None, max_body_bytes=1024, health=health)
    assert isinstance(state, StateAPI)
    health.starting = "the gRPC API (port 50001) is not listening yet"
    for path in ("/v1.0/healthz", "/v1.0/healthz/outbound"):
        status, _, body = await _exchange(state, path)
        assert status == 500
        assert b"gRPC API (port 50001) is not listening yet" in body
    assert (await _exchange(state, "/v1.0/healthz/statestore"))[0] == 204
    health.starting = None
    assert (await _exchange(state, "/v1.0/healthz/outbound"))[0] == 204


def test_a_healthy_sidecar_already_listens_on_grpc(tmp_path: Path) -> None:
    """The first 204 of /v1.0/healthz/outbound, polled from exec on, finds the gRPC port open."""
    sidecar = SidecarProcess(components_path=tmp_path)
    process = subprocess.Popen(sidecar.command, env=sidecar.environment)
    try:
        host, port = sidecar.grpc_address.rsplit(":", 1)
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=sidecar.url, timeout=5) as client:
            while True:  # no pause: the first 204 is what an SDK polling at start-up sees
                assert time.monotonic() < deadline, "never ready"
                assert process.poll() is None, "the sidecar exited"
                try:
                    if client.get("/v1.0/healthz/outbound").status_code == 204:
                        break
                except httpx.TransportError:
                    continue
            with socket.create_connection((host, int(port)), timeout=1):
                pass
    finally:
        processes.stop(process)


async def test_ops_liveness_and_metrics_are_fastapis(runtime: ComponentRuntime) -> None:
    _, ops = _fronts(runtime)
    assert await _exchange(ops, "/healthz") == (204, [], b"")
    status, headers, body = await _exchange(ops, "/metrics")
    assert ops._app is None
    f_status, f_headers, f_body = await _exchange(ops.app, "/metrics")
    assert (status, headers[1:]) == (f_status, f_headers[1:])  # [0] is the length
    assert headers[1] == ("content-type", "text/plain; version=0.0.4; charset=utf-8")
    assert b"dapr_http_server_request_count" in body
    assert b"process_cpu_seconds_total" in f_body


async def test_other_requests_reach_fastapi(runtime: ComponentRuntime) -> None:
    state, ops = _fronts(runtime)
    status, _, body = await _exchange(state, "/v1.0/healthz?appid=other")
    assert (status, body) == (
        500,
        b'{"errorCode":"ERR_HEALTH_APPID_NOT_MATCH","message":"dapr app-id does not match"}',
    )
    assert (await _exchange(state, "/v1.0/healthz/statestore/"))[0] == 307  # FastAPI's slash
    status, _, body = await _exchange(state, "/v1.0/nothing")
    assert status == 404
    assert b"ERR_DIRECT_INVOKE" in body
    status, _, body = await _exchange(ops, "/v1.0/healthz/a/b")
    assert status == 404


def _maps_pydantic(pid: int) -> bool:
    return "pydantic_core" in Path(f"/proc/{pid}/maps").read_text()


def test_a_sidecar_serving_state_and_probes_never_loads_fastapi(tmp_path: Path) -> None:
    (tmp_path / "memory.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\n"
        "spec:\n  type: state.in-memory\n  version: v1\n  metadata: []\n"
    )
    with running_sidecar(components_path=tmp_path, app_id="lean") as sidecar:
        assert sidecar.process is not None
        with httpx.Client(base_url=sidecar.url) as client:
            assert client.post("/v1.0/state/statestore", json=[{"key": "k", "value": 1}])
            assert client.get("/v1.0/state/statestore/k").json() == 1
            assert client.get("/v1.0/metadata").json()["id"] == "lean"
            assert client.get("/v1.0/healthz").status_code == 204
        with httpx.Client(base_url=sidecar.ops_url) as ops:
            assert ops.get("/healthz").status_code == 204
            assert ops.get("/v1.0/healthz").status_code == 204
            assert ops.get("/v1.0/healthz/statestore").status_code == 204
            assert b"dapr_http_server_request_count" in ops.get("/metrics").content
        assert not _maps_pydantic(sidecar.process.pid)
        with httpx.Client(base_url=sidecar.url) as client:
            answer = client.get("/v1.0/unknown")
        assert answer.status_code == 404
        assert answer.json()["errorCode"] == "ERR_DIRECT_INVOKE"
        assert _maps_pydantic(sidecar.process.pid)
