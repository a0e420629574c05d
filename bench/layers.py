#!/usr/bin/env python3
"""
Where a GET's CPU goes, layer by layer, measured in-process (no HTTP server, no network noise).

The sidecar's own ASGI app is built exactly as `server.serve_until` builds it (same runtime,
loader, store, metrics, FastAPI app with StateAPI), then called directly with an ASGI scope for
`GET /v1.0/state/s/k<i>` by 50 concurrent tasks on uvloop, against a real redis-server on the other
CPU. What is measured is the process's CPU time (time.process_time) per request, which a busy
neighbour on the machine hardly changes (unlike req/s). Waiting for Redis costs no CPU here.

Layers (each row adds to the one below it):

* ``null``          a no-op ASGI app: the driver's own cost (scope dict, receive/send closures).
* ``floor``         bench/floor_app.py's app: HMGET over one pipelined hiredis connection.
* ``StateAPI``      the sidecar's StateAPI called directly (FastAPI behind it, never reached).
* ``StateAPI -metrics``  the same with Prometheus observations made no-ops.
* ``FastAPI(app)``  the app object `create_app` returns (FastAPI → Starlette ServerErrorMiddleware →
                    ExceptionTelemetryMiddleware → AppBodyLimitMiddleware → StateAPI).
* ``+proxy_headers`` wrapped in uvicorn's ProxyHeadersMiddleware, as uvicorn does by default: this is
                    what the server runs for every state request.

uvicorn's HTTP parsing and response writing (httptools, transport) come on top of every row and
are the same for all (S1 of run.py measures the whole thing).

    python bench/layers.py [--requests 60000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

VALUE = b'{"data":"' + (b"abcdefghijklmnopqrstuvwxyz" * 40)[:1013] + b'"}'
NKEYS = 1000


async def drive(app: Any, total: int, concurrency: int = 50) -> float:
    """CPU µs per request for `total` GETs from `concurrency` tasks."""
    paths = [f"/v1.0/state/s/k{i}" for i in range(NKEYS)]
    raws = [p.encode() for p in paths]
    headers = [(b"host", b"127.0.0.1:3500"), (b"user-agent", b"wrk")]
    request = {"type": "http.request", "body": b"", "more_body": False}
    per_task = total // concurrency
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def worker(offset: int) -> None:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        for n in range(per_task):
            i = (offset + n) % NKEYS
            scope = {
                "type": "http",
                "asgi": {"version": "3.0", "spec_version": "2.4"},
                "http_version": "1.1",
                "server": ("127.0.0.1", 3500),
                "client": ("127.0.0.1", 50000 + offset),
                "scheme": "http",
                "method": "GET",
                "root_path": "",
                "path": paths[i],
                "raw_path": raws[i],
                "query_string": b"",
                "headers": headers,
                "state": {},
            }
            await app(scope, receive, send)
        statuses.append(status)

    t0 = time.process_time()
    await asyncio.gather(*(worker(k * 17) for k in range(concurrency)))
    cpu = time.process_time() - t0
    if any(s not in (200, 404) for s in statuses):
        raise RuntimeError(f"unexpected statuses {set(statuses)}")
    return cpu / (per_task * concurrency) * 1e6


async def main_async(args: argparse.Namespace, redis_port: int, work: Path) -> None:
    import gc

    import uvicorn.middleware.proxy_headers as proxy

    from floor_app import make_floor
    from statecar_sidecar.api.routing import StateAPI
    from statecar_sidecar.app import create_app
    from statecar_sidecar.metrics import Metrics
    from statecar_sidecar.runtime import ComponentRuntime, Reloader
    from statecar_sidecar.server import component_source
    from statecar_sidecar.settings import SidecarSettings

    components = work / "components"
    components.mkdir()
    (components / "s.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n"
        f"  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n"
        f"    value: 127.0.0.1:{redis_port}\n"
    )
    settings = SidecarSettings(app_id="bench", components_path=components)
    runtime = ComponentRuntime(app_id="bench", namespace=None)
    metrics = Metrics("bench")
    await Reloader(runtime, component_source(settings), 1.0).load_initial()
    app = create_app(runtime, metrics, api_token=None, max_body_bytes=4 << 20)
    # Seed through the app itself.
    for start in range(0, NKEYS, 100):
        body = (
            b"["
            + b",".join(b'{"key":"k%d","value":%s}' % (i, VALUE) for i in range(start, start + 100))
            + b"]"
        )
        sent: list[MutableMapping[str, Any]] = []

        async def recv(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def snd(
            m: MutableMapping[str, Any], sent: list[MutableMapping[str, Any]] = sent
        ) -> None:
            sent.append(m)

        await app(
            {
                "type": "http",
                "method": "POST",
                "path": "/v1.0/state/s",
                "raw_path": b"/v1.0/state/s",
                "query_string": b"",
                "headers": [],
                "scheme": "http",
                "root_path": "",
                "server": ("127.0.0.1", 3500),
                "client": ("127.0.0.1", 1),
                "http_version": "1.1",
                "state": {},
            },
            recv,
            snd,
        )
        assert sent[0]["status"] == 204, sent
    floor = make_floor("127.0.0.1", redis_port, "bench||", None)
    # Drive the floor app's lifespan to open its connection.
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    done: list[str] = []

    async def lsend(m: dict[str, Any]) -> None:
        done.append(m["type"])

    lifespan = asyncio.create_task(floor({"type": "lifespan"}, startup.get, lsend))
    while not done:
        await asyncio.sleep(0.01)

    async def null(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    state_only = StateAPI(
        app, runtime=runtime, metrics=metrics, api_token=None, max_body_bytes=4 << 20
    )
    quiet_metrics = Metrics("bench")
    quiet_metrics.http = lambda *a: None  # type: ignore[method-assign]  # observations made no-ops
    quiet_metrics.state = lambda *a: None  # type: ignore[method-assign]  # likewise
    state_quiet = StateAPI(
        app, runtime=runtime, metrics=quiet_metrics, api_token=None, max_body_bytes=4 << 20
    )
    # StateAPI is an ASGI 3 app; uvicorn types one with its own (narrower) message TypedDicts.
    proxied = proxy.ProxyHeadersMiddleware(cast("ASGI3Application", app), trusted_hosts="127.0.0.1")
    layers = [
        ("null", null),
        ("floor", floor),
        ("StateAPI -metrics", state_quiet),
        ("StateAPI", state_only),
        ("FastAPI(app)", app),
        ("+proxy_headers", proxied),
    ]
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    for _, layer in layers:  # warm-up
        await drive(layer, 5000)
    results: dict[str, list[float]] = {name: [] for name, _ in layers}
    for _ in range(args.rounds):
        for name, layer in layers:
            results[name].append(await drive(layer, args.requests))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(
        f"\nCPU µs per GET in-process (median of {args.rounds} rounds × {args.requests} "
        f"requests, 50 tasks, uvloop; load {' '.join(f'{x:.2f}' for x in os.getloadavg())})"
    )
    print("| layer | CPU µs/GET | minus driver (null) | Δ vs row above | range |")
    print("|---|---|---|---|---|")
    names = [name for name, _ in layers]
    for k, name in enumerate(names):
        v = results[name]
        delta = f"+{med[name] - med[names[k - 1]]:.1f}" if k >= 2 else ""
        print(
            f"| {name} | {med[name]:.1f} | {med[name] - med['null']:.1f} | {delta} | "
            f"{min(v):.1f}–{max(v):.1f} |"
        )
    await runtime.close()
    lifespan.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=60000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cpu", type=int, default=0, help="CPU for this process; redis gets the other"
    )
    args = parser.parse_args()
    import subprocess

    import uvloop

    import run as harness

    work = Path(tempfile.mkdtemp(prefix="statecar-layers-"))
    port = harness.free_port()
    other = {1 - args.cpu} if (os.cpu_count() or 1) > 1 else {args.cpu}
    redis = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        preexec_fn=harness.affinity(other),
    )
    os.sched_setaffinity(0, {args.cpu})
    try:
        time.sleep(0.3)
        uvloop.install()
        asyncio.run(main_async(args, port, work))
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
