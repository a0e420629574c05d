#!/usr/bin/env python3
"""
What-if experiments on the sidecar's GET path, without editing the sidecar: each variant is
the real `statecar sidecar` started through a small launcher that monkeypatches ONE layer
before `main()` runs; all variants and the floor app are measured interleaved in one run.

Variants (cumulative):

* ``as-is``     the sidecar as committed/checked out.
* ``outer``     StateAPI is the outermost ASGI app (FastAPI behind it for every other route)
                instead of a FastAPI middleware: state requests skip FastAPI.__call__ (its
                per-request OpenTelemetry `enabled()` check), Starlette's ServerErrorMiddleware
                (and its `_send` wrapper on every message), ExceptionTelemetryMiddleware and
                AppBodyLimitMiddleware. `create_app` now builds exactly this, so nothing is
                patched: the step is the same code as ``as-is``, kept so the ladder stays put.
* ``+noproxy``  also uvicorn `proxy_headers=False` (the sidecar listens on loopback; the
                X-Forwarded-* rewrite middleware runs on every request for nothing).
* ``noreload``  (not cumulative) as-is with the component folder poll switched off: every
                second it re-reads and re-parses the YAML in a worker thread (~1 ms of CPU under
                the GIL), which can stall the event loop.
* ``+nometrics`` also Prometheus observations turned into no-ops: an upper bound of what a
                cheaper metrics path (e.g. plain counters, histogram buckets aggregated lazily)
                could save. Not a proposal to drop metrics.

    python bench/whatif.py [--seconds 10] [--runs 3] [--connections 50]

Prints, per variant, median GET/s, server CPU µs per GET (schedstat; much less sensitive to
other load on the machine than req/s) and p50/p99, and the ratio to the floor app.
Pinning as run.py: servers on CPU 0, wrk and redis on CPU 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

VARIANTS = ("as-is", "outer", "+noproxy", "+nometrics")
# Outside the ladder: as-is with the 1 s component-folder poll (YAML parse in a worker thread,
# holding the GIL ~1 ms) switched off.
EXTRA = ("noreload",)


def child(variant: str, argv: list[str]) -> None:
    base_name = variant.split("#")[0]  # "as-is#2": a second instance, same code
    if base_name == "noreload":
        import asyncio

        from statecar_sidecar.runtime import Reloader

        async def idle(self: Reloader) -> None:
            await asyncio.Event().wait()

        Reloader.run = idle  # type: ignore[method-assign]  # the folder poll switched off
        base_name = "as-is"
    level = VARIANTS.index(base_name)
    import uvicorn

    from statecar_sidecar.metrics import Metrics

    # level 1, "outer": what `statecar_sidecar.app.create_app` builds already; nothing to patch.
    if level >= 2:

        class Config(uvicorn.Config):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs["proxy_headers"] = False
                super().__init__(*args, **kwargs)

        uvicorn.Config = Config  # type: ignore[misc]  # the server builds this subclass instead
    if level >= 3:
        Metrics.http = lambda self, *a: None  # type: ignore[method-assign]  # observations made no-ops
        Metrics.state = lambda self, *a: None  # type: ignore[method-assign]  # likewise
    sys.argv = argv
    from statecar_cli.main import main

    sys.exit(main())


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return 0
    import run as harness  # bench/run.py

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        help="instead of wrk at saturation: S2's fixed rate (e.g. 1000 QPS over "
        "16 connections, bench/ratepace.py)",
    )
    parser.add_argument(
        "--one-core",
        action="store_true",
        help="S3's layout: redis, servers and wrk all on CPU 0 (use -c1)",
    )
    args = parser.parse_args()
    load_cpu = {0} if args.one_core else {1}
    variants = [v for v in args.variants.split(",") if v]
    os.sched_setaffinity(0, {1})
    ns = argparse.Namespace(quick=True, runs=3, server_cpu=0, load_cpu=1, keep=False)
    bench = harness.Bench(ns)
    procs: list[harness.Proc] = []
    try:
        bench.redis_port = harness.free_port()
        redis = harness.spawn(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(bench.redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(bench.work),
            ],
            load_cpu,
            bench.work,
        )
        procs.append(redis)
        time.sleep(0.3)
        bench.r = harness.Redis(bench.redis_port)
        components = bench.work / "components"
        components.mkdir()
        (components / "s.yaml").write_text(
            harness.component_yaml(
                "s", "state.redis", {"redisHost": f"127.0.0.1:{bench.redis_port}"}
            )
        )
        targets: dict[str, tuple[int, harness.Proc]] = {}
        for variant in variants:
            port = harness.free_port()
            argv = [
                "statecar",
                "sidecar",
                "--app-id",
                "bench",
                "--components-path",
                str(components),
                "--http-port",
                str(port),
                "--grpc-port",
                str(harness.free_port()),
                "--metrics-port",
                str(harness.free_port()),
                "--log-level",
                "warning",
            ]
            proc = harness.spawn(
                f"whatif-{variant}",
                [sys.executable, __file__, "--child", variant, *argv],
                {0},
                bench.work,
                harness.clean_env(),
            )
            procs.append(proc)
            harness.wait_http(proc, port, "/v1.0/healthz", {204}, timeout=60)
            targets[variant] = (port, proc)
        bench.seed(targets[variants[0]][0], "s", ["k"])
        floor_port = harness.free_port()
        floor = harness.spawn(
            "floor",
            [
                sys.executable,
                str(BENCH / "floor_app.py"),
                "--app",
                "floor",
                "--port",
                str(floor_port),
                "--redis-port",
                str(bench.redis_port),
            ],
            {0},
            bench.work,
        )
        procs.append(floor)
        harness.wait_http(floor, floor_port, "/v1.0/state/s/none", {204})
        order = [("floor", floor_port, floor.pid)] + [
            (v, port, proc.pid) for v, (port, proc) in targets.items()
        ]
        for name, port, _ in order:  # warm-up, and the same bytes from everyone
            status, _, body = harness.http_call(port, "GET", "/v1.0/state/s/k3")
            assert status == 200, (name, status)
            assert body == harness.VALUE, name
            harness.run_wrk(port, "get", "/v1.0/state/s", args.connections, 1, load_cpu)
        results: dict[str, list[harness.Run]] = {name: [] for name, _, _ in order}
        for i in range(args.runs):
            for name, port, pid in order:
                harness.log(f"what-if round {i + 1}/{args.runs}: {name}")
                if args.rate:
                    results[name].append(
                        harness.measured(
                            name,
                            partial(
                                harness.run_ratepace,
                                port,
                                "/v1.0/state/s/k{i}",
                                harness.NKEYS,
                                args.seconds,
                                1.0,
                                load_cpu,
                                rate=args.rate,
                                connections=args.connections,
                            ),
                            pid,
                        )
                    )
                else:
                    results[name].append(
                        harness.measured(
                            name,
                            partial(
                                harness.run_wrk,
                                port,
                                "get",
                                "/v1.0/state/s",
                                args.connections,
                                args.seconds,
                                load_cpu,
                            ),
                            pid,
                        )
                    )
        med = harness.median
        floor_rps = med(
            [r.values.get("rps", r.values.get("achieved_rate", 0)) for r in results["floor"]]
        )
        floor_cpu = med([r.values["cpu_us"] for r in results["floor"]])
        layout = "all on CPU 0" if args.one_core else "servers CPU 0, wrk+redis CPU 1"
        load = (
            f"{args.rate:.0f} QPS over {args.connections} connections (ratepace)"
            if args.rate
            else f"wrk -t1 -c{args.connections}"
        )
        print(
            f"\nwhat-if, {load} -d{args.seconds}s GET x {args.runs} "
            f"(interleaved; {layout}), load: {harness.loadavg()}"
        )
        print(
            "| variant | GET/s | ratio to floor | CPU µs/GET | floor CPU / CPU | p50 ms | p90 ms "
            "| p99 ms | foreign cores |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for name, runs in results.items():
            rps = med([r.values.get("rps", r.values.get("achieved_rate", 0)) for r in runs])
            cpu = med([r.values["cpu_us"] for r in runs])
            print(
                f"| {name} | {rps:.0f} | {rps / floor_rps:.2f} | {cpu:.1f} | "
                f"{floor_cpu / cpu:.2f} | {med([r.values['p50'] for r in runs]):.3f} | "
                f"{med([r.values['p90'] for r in runs]):.3f} | "
                f"{med([r.values['p99'] for r in runs]):.2f} | "
                f"{med([r.foreign for r in runs]):.2f} |"
            )
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
