"""
`--dapr-graceful-shutdown-seconds` bounds the shutdown, on both transports.

daprd (dapr pkg/runtime/config.go, runtime.go; kit concurrency/closer.go): on SIGINT/SIGTERM it
stops its servers and gives what is in flight the grace period (default 5 s; a negative value
means the default, 0 no bound), then gives up. statecar does the same, with one difference: when
the bound passes, the requests still running are cancelled and it exits 0 where daprd's
`log.Fatal` exits 1 (docs/daprd.md, "Shutdown").

The long requests are real ones: a store call waiting on a Redis stopped with SIGSTOP (over HTTP
and over gRPC), and an upload whose client sends the headers and part of the body, then nothing.
`statecar daprd` runs with `dapr run`'s argv (tests/support/dapr_run.py) plus the bound.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest
from tests.support import processes
from tests.support.dapr_run import Daprd, dapr_home, dapr_run_argv, free_ports
from tests.support.redis_server import RedisProcess, running_redis

from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

COMPONENTS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: redis}}
spec:
  type: state.redis
  version: v1
  metadata:
  - {{name: redisHost, value: '{address}'}}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: memory}}
spec: {{type: state.in-memory, version: v1}}
"""


class Running:
    """A `statecar daprd` over the Redis and in-memory stores, and clients of both transports."""

    def __init__(self, home: Path, redis: RedisProcess, extra: list[str]) -> None:
        dapr_home(home)
        resources = home / "components"
        resources.mkdir()
        (resources / "stores.yaml").write_text(
            COMPONENTS.format(address=redis.address), encoding="utf-8"
        )
        self.ports = free_ports()
        self.url = f"http://127.0.0.1:{self.ports['http']}"
        self.daprd = Daprd(home, [*dapr_run_argv(home, resources, "bye", self.ports), *extra])
        self.daprd.wait_ready(self.url)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.ports['grpc']}")
        self.stub = dapr_pb2_grpc.DaprStub(self.channel)
        self.redis = redis
        for store in ("redis", "memory"):
            saved = httpx.post(f"{self.url}/v1.0/state/{store}", json=[{"key": "k", "value": 1}])
            assert saved.status_code == 204, saved.text

    def terminate(self) -> float:
        """SIGTERM; the seconds until the process has exited."""
        start = time.monotonic()
        self.daprd.process.send_signal(signal.SIGTERM)
        self.daprd.process.wait(timeout=30)
        return time.monotonic() - start

    def close(self) -> None:
        self.channel.close()
        processes.stop(self.daprd.process)


@pytest.fixture
def redis() -> Iterator[RedisProcess]:
    with running_redis() as server:
        yield server


@pytest.fixture
def start(tmp_path: Path, redis: RedisProcess) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def starter(*extra: str) -> Running:
        running = Running(tmp_path, redis, list(extra))
        started.append(running)
        return running

    yield starter
    redis.resume()
    for running in started:
        running.close()


def _upload_started(port: int, body: bytes) -> socket.socket:
    """A save whose headers and first body bytes are sent; the rest is the caller's to send."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1.0/state/memory HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body) + body[:10]
    )
    return sock


def _http_get(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v1.0/state/redis/k", timeout=30)


def _grpc_get(running: Running) -> bytes:
    answer = running.stub.GetState(
        state_pb2.GetStateRequest(store_name="redis", key="k"), timeout=30
    )
    return bytes(answer.data)


def _failed(future: Future[object]) -> bool:
    """The stuck call was cut off: a transport error or an error status, never a success."""
    try:
        answer = future.result(timeout=30)
    except (httpx.HTTPError, grpc.RpcError):
        return True
    return isinstance(answer, httpx.Response) and not answer.is_success


@pytest.mark.parametrize("stuck", ["http store call", "grpc store call", "http upload"])
def test_a_request_stuck_longer_than_the_bound_does_not_hold_the_exit(
    start: Callable[..., Running], stuck: str
) -> None:
    running = start("--dapr-graceful-shutdown-seconds", "1")
    with ThreadPoolExecutor(1) as pool:
        future: Future[object] | None = None
        upload: socket.socket | None = None
        if stuck == "http upload":
            upload = _upload_started(running.ports["http"], b'[{"key":"u","value":1}]')
        else:
            running.redis.pause()  # the store call waits for Redis, stopped until after the exit
            if stuck == "http store call":
                future = pool.submit(_http_get, running.url)
            else:
                future = pool.submit(_grpc_get, running)
        time.sleep(0.5)  # the request has reached the sidecar
        try:
            elapsed = running.terminate()
        finally:
            if upload is not None:
                upload.close()
            running.redis.resume()
        assert running.daprd.process.returncode == 0, running.daprd.log
        assert "Traceback" not in running.daprd.log
        # It waited for the request (the bound), and not for the request to end.
        assert 0.9 < elapsed < 3, f"exit took {elapsed:.2f} s with a 1 s bound"
        if future is not None:
            assert _failed(future), "the stuck request was answered as a success"
    print(f"{stuck}: exit {elapsed:.2f} s after SIGTERM, 1 s bound, the request stuck for longer")


def test_requests_in_flight_at_sigterm_complete_and_no_new_ones_are_accepted(
    start: Callable[..., Running],
) -> None:
    running = start()  # the default bound: 5 s, as daprd's
    body = b'[{"key":"u","value":{"uploaded":true}}]'
    upload = _upload_started(running.ports["http"], body)
    running.redis.pause()
    with upload, ThreadPoolExecutor(2) as pool:
        over_http = pool.submit(_http_get, running.url)
        over_grpc = pool.submit(_grpc_get, running)
        time.sleep(0.5)
        running.daprd.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # No new connection is accepted on either port once SIGTERM has arrived...
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{running.url}/v1.0/healthz", timeout=2)
        with (
            grpc.insecure_channel(f"127.0.0.1:{running.ports['grpc']}") as fresh,
            pytest.raises(grpc.FutureTimeoutError),
        ):
            grpc.channel_ready_future(fresh).result(timeout=1)
        # ...and the ones in flight finish: the upload's body, the stuck store calls.
        upload.sendall(body[10:])
        running.redis.resume()
        reply = upload.recv(4096)
        assert reply.startswith(b"HTTP/1.1 204"), reply
        answer = over_http.result(timeout=10)
        assert (answer.status_code, answer.content) == (200, b"1")
        assert over_grpc.result(timeout=10) == b"1"
        finished = time.monotonic()
        assert running.daprd.process.wait(timeout=10) == 0, running.daprd.log
    # Once nothing is in flight it exits, without waiting out the rest of the 5 s.
    after = time.monotonic() - finished
    assert after < 1.5, f"exit took {after:.2f} s after the last request finished"
