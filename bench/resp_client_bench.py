"""
Micro-benchmark: statecar's RESP client against redis-py's asyncio client, in one run.

Not a test. It starts its own `redis-server` (no persistence, loopback, free port; stopped by
pid at the end) unless `--port` points at a running one, stores a 1 KB value under a key that
exists, and measures, interleaved A, B, A, B (so drift on a shared machine hits both alike):

* sequential GET, one call in flight: ops/s and p50/p99 latency;
* N tasks (default 50) issuing GETs concurrently: ops/s. statecar multiplexes them over ONE
  connection (implicit pipelining); redis.asyncio uses its default pool, as a store would.

Clients: `statecar.Connection` (the raw connection), `statecar.Client` (what stores use, one
coroutine layer more), `redis.asyncio` (redis-py, hiredis parser if installed).

    python bench/resp_client_bench.py --duration 3 --runs 3 [--loop asyncio] \
        [--client-cpu 0 --redis-cpu 1]

CPU pinning matters a lot on small VMs (section 2b): say which layout was used when quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sidecar"))

from run import free_port  # the harness's (this folder is on sys.path)
from statecar_sidecar.stores.redis.client import Client
from statecar_sidecar.stores.redis.resp import Connection, RedisEndpoint

KEY = "bench:key"
VALUE = b"v" * 1024

Get = Callable[[], Awaitable[Any]]


def start_redis(port: int, directory: str, cpu: int | None) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", directory, "--logfile", os.path.join(directory, "redis.log")]
    process = subprocess.Popen(args)
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process
        except OSError:
            time.sleep(0.02)
    process.kill()
    sys.exit("redis-server did not start")


async def sequential(get: Get, duration: float) -> dict[str, float]:
    latencies: list[int] = []
    append = latencies.append
    clock = time.perf_counter_ns
    end = clock() + int(duration * 1e9)
    cpu = time.process_time()
    start = clock()
    now = start
    while now < end:
        await get()
        after = clock()
        append(after - now)
        now = after
    elapsed = (now - start) / 1e9
    cpu = time.process_time() - cpu
    latencies.sort()
    return {
        "ops": len(latencies) / elapsed,
        "cpu_us": cpu / len(latencies) * 1e6,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
    }


async def concurrent(get: Get, duration: float, tasks: int) -> dict[str, float]:
    done = False
    counts = [0] * tasks

    async def worker(index: int) -> None:
        n = 0
        while not done:
            await get()
            n += 1
        counts[index] = n

    loop = asyncio.get_running_loop()

    def stop() -> None:
        nonlocal done
        done = True

    cpu = time.process_time()
    start = time.perf_counter()
    loop.call_later(duration, stop)
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    ops = sum(counts)
    return {"ops": ops / elapsed, "cpu_us": cpu / ops * 1e6}


async def make_clients(port: int) -> dict[str, tuple[Get, Callable[[], Awaitable[None]]]]:
    import redis.asyncio as redis_asyncio

    conn = await Connection.open(RedisEndpoint("127.0.0.1", port))
    client = Client(RedisEndpoint("127.0.0.1", port))
    await client.ping()
    pyredis = redis_asyncio.Redis(host="127.0.0.1", port=port)
    await pyredis.set(KEY, VALUE)

    async def conn_get() -> Any:
        return await conn.execute(b"GET", KEY)

    async def client_get() -> Any:
        return await client.execute(b"GET", KEY)

    async def pyredis_get() -> Any:
        return await pyredis.get(KEY)

    async def close_pyredis() -> None:
        await pyredis.aclose()

    assert await conn_get() == VALUE
    assert await client_get() == VALUE
    assert await pyredis_get() == VALUE
    return {
        "statecar.Connection": (conn_get, conn.close),
        "statecar.Client": (client_get, client.close),
        "redis.asyncio": (pyredis_get, close_pyredis),
    }


async def run(args: argparse.Namespace, port: int) -> None:
    clients = await make_clients(port)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(args.runs):
        for name, (get, _) in clients.items():  # interleaved: A, B, C, A, B, C, ...
            for _ in range(200):  # warm-up
                await get()
            seq = await sequential(get, args.duration)
            results.setdefault((name, "sequential"), []).append(seq)
            par = await concurrent(get, args.duration, args.tasks)
            results.setdefault((name, f"{args.tasks} tasks"), []).append(par)
            print(
                f"run {round_ + 1} {name:20s} seq {seq['ops']:7.0f} ops/s"
                f" (p50 {seq['p50_us']:.1f} µs, p99 {seq['p99_us']:.1f} µs,"
                f" cpu {seq['cpu_us']:.1f} µs/op)"
                f" | {args.tasks} tasks {par['ops']:7.0f} ops/s (cpu {par['cpu_us']:.1f} µs/op)",
                flush=True,
            )
    for _, close in clients.values():
        await close()

    print(f"\nmedian of {args.runs} x {args.duration:g} s, loop={args.loop}, {layout(args)}")
    print(
        f"{'client':20s} {'mode':12s} {'ops/s':>10s} {'cpu µs/op':>10s}"
        f" {'p50 µs':>8s} {'p99 µs':>8s}"
    )
    medians: dict[tuple[str, str], float] = {}
    for (name, mode), runs in results.items():
        ops = statistics.median(r["ops"] for r in runs)
        medians[(name, mode)] = ops
        p50 = f"{statistics.median(r['p50_us'] for r in runs):8.1f}" if "p50_us" in runs[0] else ""
        p99 = f"{statistics.median(r['p99_us'] for r in runs):8.1f}" if "p99_us" in runs[0] else ""
        cpu = statistics.median(r["cpu_us"] for r in runs)
        print(f"{name:20s} {mode:12s} {ops:10.0f} {cpu:10.1f} {p50:>8s} {p99:>8s}")
    for mode in ("sequential", f"{args.tasks} tasks"):
        base = medians[("redis.asyncio", mode)]
        for name in ("statecar.Connection", "statecar.Client"):
            print(f"ratio {name} / redis.asyncio, {mode}: {medians[(name, mode)] / base:.2f}x")


def layout(args: argparse.Namespace) -> str:
    if args.client_cpu is None and args.redis_cpu is None:
        return "unpinned"
    return f"client on cpu {args.client_cpu}, redis on cpu {args.redis_cpu}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--port", type=int, help="use a running redis-server on 127.0.0.1")
    parser.add_argument("--client-cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--redis-cpu", type=int, help="pin the started redis-server to one CPU")
    args = parser.parse_args()
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    process = None
    directory = tempfile.mkdtemp(prefix="resp-bench-")
    port = args.port
    try:
        if port is None:
            port = free_port()
            process = start_redis(port, directory, args.redis_cpu)
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(run(args, port))
        else:
            asyncio.run(run(args, port))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
