#!/usr/bin/env python3
"""
The sidecar's app-layer CPU per GET and per save, in-process: no HTTP server, no network noise.

`create_app` builds the state port's app exactly as `server.serve_until` does, over one
`state.redis` component on a real redis-server (started here, on `--redis-cpu`), and 50 tasks
call it with ASGI scopes for `GET /v1.0/state/s/k<i>` or a one-item 1 KB save. The figure is the
process's CPU time per call (time.process_time), which neighbours hardly move; uvicorn's HTTP
parsing and writing come on top, the same for GET and save. Under it, Redis's side of the same
calls: its CPU per call (schedstat) and INFO commandstats' usec_per_call (EVALSHA for a save).
`--profile` prints cProfile's top functions for the last round.

    python bench/app_cpu.py [--mode get|save|both] [--calls 20000] [--rounds 3] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from typing import Any

import uvloop

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # bench/run.py's helpers
from statecar_contract.components import ResolvedComponent
from statecar_sidecar.app import create_app
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

TASKS = 50


async def measure(port: int, mode: str, calls: int, rounds: int, profile: bool) -> list[float]:
    runtime = ComponentRuntime(app_id=base.APP_ID, namespace=None)
    component = ResolvedComponent("s", "state.redis", metadata={"redisHost": f"127.0.0.1:{port}"})
    await runtime.apply([component])
    app = create_app(runtime, Metrics(base.APP_ID), api_token=None, max_body_bytes=1 << 20)
    bodies = [b'[{"key":"w%d","value":%s}]' % (i, base.VALUE) for i in range(base.NKEYS)]

    async def one(i: int) -> None:
        if mode == "get":
            path = f"/v1.0/state/s/k{i % base.NKEYS}"
            body, method, headers = b"", "GET", [(b"host", b"x")]
        else:
            path, body, method = "/v1.0/state/s", bodies[i % base.NKEYS], "POST"
            length = str(len(body)).encode()
            headers = [(b"host", b"x"), (b"content-type", b"application/json")]
            headers.append((b"content-length", length))
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 300:
                raise RuntimeError(f"{method} {path}: {message['status']}")

        await app(scope, receive, send)

    async def worker(w: int, n: int) -> None:
        for i in range(n):
            await one(w * n + i)

    per_task = max(1, calls // TASKS)
    await asyncio.gather(*(worker(w, 20) for w in range(TASKS)))  # warm-up
    results = []
    for r in range(rounds):
        profiler = cProfile.Profile() if profile and r == rounds - 1 else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(worker(w, per_task) for w in range(TASKS)))
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        else:
            results.append((time.process_time() - started) / (TASKS * per_task) * 1e6)
    await runtime.close()
    return results


def _cpu_ns(pid: int) -> int:
    """CPU time a process has run, in ns (its first schedstat field)."""
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("get", "save", "both"), default="both")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--redis-cpu", type=int, default=1)
    args = parser.parse_args()
    binary = shutil.which("redis-server") or sys.exit("redis-server not found")
    redis_cpu = {min(args.redis_cpu, (os.cpu_count() or 1) - 1)}
    work = tempfile.mkdtemp(prefix="statecar-app-cpu-")
    port = base.free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", work]
    redis = subprocess.Popen(
        [*argv, "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        preexec_fn=base.affinity(redis_cpu),
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = base.Redis(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        for i in range(base.NKEYS):
            client(b"HSET", f"{base.APP_ID}||k{i}".encode(), b"data", base.VALUE, b"version", b"1")
        client.close()
        os.sched_setaffinity(0, {args.server_cpu})
        modes = ("get", "save") if args.mode == "both" else (args.mode,)
        stats = base.Redis(port)
        for mode in modes:
            stats(b"CONFIG", b"RESETSTAT")
            redis_ns_before = _cpu_ns(redis.pid)
            figures = uvloop.run(measure(port, mode, args.calls, args.rounds, args.profile))
            redis_ns = _cpu_ns(redis.pid) - redis_ns_before
            shown = ", ".join(f"{x:.1f}" for x in figures)
            print(
                f"{mode}: {min(figures or [float('nan')]):.1f} µs of CPU per call (rounds: {shown})"
            )
            # Redis's side of the same calls (warm-up included): its CPU per call, and what
            # INFO commandstats reports per top-level command (a script's calls count in its
            # EVALSHA's time, and again under their own names).
            commands = stats.info("commandstats")
            calls = 20 * TASKS + args.rounds * TASKS * max(1, args.calls // TASKS)
            per_call = ", ".join(
                f"{name[8:]} {value.split('usec_per_call=')[1].split(',')[0]}"
                for name, value in sorted(commands.items())
                if name in ("cmdstat_evalsha", "cmdstat_hmget", "cmdstat_pttl")
            )
            print(
                f"  redis: {redis_ns / calls / 1000:.1f} µs of CPU per call; "
                f"usec_per_call: {per_call}"
            )
        stats.close()
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
