"""
Issue 8, item 5: slow and idle clients are bounded.

Before: connections that sent partial headers or partial bodies were held forever (100 of 100
still open after 40 s), and under a 256-descriptor limit 300 idle connections to the metrics
port made the state API reset connections. Now each listener has a header timeout, a body
timeout and a connection cap (`statecar_sidecar.listener`), the caps fitted to the descriptor
limit at start-up.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.support.sidecar import SidecarProcess

from statecar_sidecar.server import listener_limits
from statecar_sidecar.settings import SidecarSettings

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MEMORY = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: store}\n"
    "spec: {type: state.in-memory, version: v1}\n"
)


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("components")
    (folder / "store.yaml").write_text(MEMORY)
    return folder


@contextlib.contextmanager
def sidecar_process(
    components: Path, env: dict[str, str], *, descriptor_limit: int | None = None
) -> Iterator[SidecarProcess]:
    sidecar = SidecarProcess(components_path=components, env=env)
    if descriptor_limit is not None:
        # The same command, after setrlimit in the sidecar's own process.
        limit = (
            "import resource, runpy, sys;"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, ({descriptor_limit}, {descriptor_limit}));"
            "sys.argv = ['statecar', *sys.argv[1:]];"
            "runpy.run_module('statecar_cli.main', run_name='__main__')"
        )
        assert sidecar.command[1:3] == ["-m", "statecar_cli.main"]
        sidecar.command[1:3] = ["-c", limit]
    try:
        sidecar.start()
        yield sidecar
    finally:
        assert sidecar.stop() == 0, sidecar.log


@pytest.fixture(scope="module")
def sidecar(components: Path) -> Iterator[SidecarProcess]:
    env = {
        "STATECAR_READ_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "STATECAR_READ_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "STATECAR_METRICS_MAX_CONNECTIONS": "4",
    }
    with sidecar_process(components, env) as process:
        yield process


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _until_closed(sock: socket.socket, timeout: float = 15) -> tuple[float, bytes]:
    """When the server closed `sock` (monotonic), and what it sent before closing."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return time.monotonic(), received


def _slow_connections(port: int, payload: bytes, count: int) -> list[tuple[float, bytes]]:
    """Seconds each connection lived (from its connect to the server's close), and the answer."""
    opened: list[tuple[float, socket.socket]] = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        opened.append((time.monotonic(), sock))
        sock.sendall(payload)
    with ThreadPoolExecutor(count) as pool:
        closed = list(pool.map(_until_closed, [sock for _, sock in opened]))
    for _, sock in opened:
        sock.close()
    return [(at - start, answer) for (start, _), (at, answer) in zip(opened, closed, strict=True)]


@pytest.mark.parametrize(
    "payload",
    [b"", b"GET /v1.0/healthz HTTP/1.1\r\nHost: sidecar\r\nX-Slow: "],
    ids=["nothing sent", "partial headers"],
)
def test_slow_headers_are_closed_within_the_header_timeout(
    sidecar: SidecarProcess, payload: bytes
) -> None:
    results = _slow_connections(_port(sidecar.url), payload, 50)
    closed_after = sorted(seconds for seconds, _ in results)
    # Measured: 100 connections each closed 0.99-1.02 s after it was opened.
    assert closed_after[0] >= HEADER_TIMEOUT - 0.05, closed_after
    assert closed_after[-1] <= HEADER_TIMEOUT + 1.0, closed_after
    for _, answer in results:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["errorCode"] == "ERR_REQUEST_TIMEOUT"
    # The listener still serves.
    assert httpx.get(f"{sidecar.url}/v1.0/state/store/k").status_code == 204


def test_a_dripping_client_is_closed_at_the_header_deadline(sidecar: SidecarProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", _port(sidecar.url)))
    started = time.monotonic()
    sock.sendall(b"GET /v1.0/healthz HTTP/1.1\r\n")
    with contextlib.suppress(OSError):
        for _ in range(40):  # one header byte every 0.1 s: never idle, never done
            time.sleep(0.1)
            sock.sendall(b"X")
    _, answer = _until_closed(sock)
    sock.close()
    assert time.monotonic() - started <= HEADER_TIMEOUT + 1.0
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_slow_body_is_closed_within_the_body_timeout(sidecar: SidecarProcess) -> None:
    request = (
        b"POST /v1.0/state/store HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n[{"key":'
    )
    results = _slow_connections(_port(sidecar.url), request, 20)
    for seconds, answer in results:
        assert BODY_TIMEOUT - 0.05 <= seconds <= BODY_TIMEOUT + 1.0
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert httpx.get(f"{sidecar.url}/v1.0/state/store/k").status_code == 204


def test_a_connection_beyond_the_cap_gets_a_clear_503(sidecar: SidecarProcess) -> None:
    held = [socket.create_connection(("127.0.0.1", _port(sidecar.ops_url))) for _ in range(4)]
    try:
        time.sleep(0.2)
        refused = httpx.get(f"{sidecar.ops_url}/healthz")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["errorCode"] == "ERR_TOO_MANY_CONNECTIONS"
        assert "STATECAR_METRICS_MAX_CONNECTIONS" in refused.json()["message"]
        # The state API has its own cap: unaffected.
        assert httpx.get(f"{sidecar.url}/v1.0/state/store/k").status_code == 204
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"{sidecar.ops_url}/healthz").status_code == 204


def test_idle_metrics_connections_under_a_256_descriptor_limit_leave_the_state_api_serving(
    components: Path,
) -> None:
    with sidecar_process(components, {}, descriptor_limit=256) as sidecar:
        assert "the descriptor limit is 256" in sidecar.log
        idle = [socket.create_connection(("127.0.0.1", _port(sidecar.ops_url))) for _ in range(300)]
        try:
            time.sleep(0.5)
            failures: list[str] = []
            with httpx.Client(base_url=sidecar.url, timeout=5) as api:
                for n in range(200):
                    try:
                        # A new connection each time: accept() must keep working.
                        answer = api.post(
                            "/v1.0/state/store",
                            json=[{"key": f"k{n}", "value": n}],
                            headers={"connection": "close"},
                        )
                        if answer.status_code != 204:
                            failures.append(f"{n}: {answer.status_code} {answer.text}")
                    except httpx.TransportError as exc:
                        failures.append(f"{n}: {exc!r}")
            assert failures == []
            # The idle connections beyond the metrics port's cap were refused, not held.
            refused = 0
            for sock in idle:
                sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError, OSError):
                    refused += sock.recv(64).startswith(b"HTTP/1.1 503 ")
            assert refused >= 300 - 64
        finally:
            for sock in idle:
                sock.close()


def test_the_caps_fit_the_descriptor_limit() -> None:
    settings = SidecarSettings()
    state, ops = listener_limits(settings, descriptor_limit=256)
    assert (state.max_connections, ops.max_connections) == (168, 24)
    assert state.max_connections + ops.max_connections + 64 <= 256
    state, ops = listener_limits(settings, descriptor_limit=1 << 20)
    assert (state.max_connections, ops.max_connections) == (1024, 64)


def test_the_metrics_address_is_configurable(components: Path) -> None:
    sidecar = SidecarProcess(components_path=components, args=("--metrics-address", "127.0.0.2"))
    sidecar.ops_url = sidecar.ops_url.replace("127.0.0.1", "127.0.0.2")
    try:
        sidecar.start()
        assert httpx.get(f"{sidecar.ops_url}/healthz").status_code == 204
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{_port(sidecar.ops_url)}/healthz")
    finally:
        assert sidecar.stop() == 0, sidecar.log


if sys.platform != "linux":  # the 127.0.0.0/8 loopback and RLIMIT_NOFILE behaviour assumed above
    pytestmark = pytest.mark.skip(reason="Linux only")
