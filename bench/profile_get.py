#!/usr/bin/env python3
"""
Where the sidecar's time goes on the GET path under load: a profile of the real process.

Starts redis-server and `statecar sidecar` (state.redis component `s`, app id `bench`, seeded
through the API), then profiles ONLY the load window: the sidecar runs inside a tiny launcher
(`--child`) that starts the profiler on SIGUSR1 and stops and writes it on SIGUSR2, so start-up
and seeding stay out of the profile. Load: `wrk -t1 -c50` GETs of existing 1 KB keys (or `save`
POSTs with `--mode save`).

    python bench/profile_get.py [--profiler cprofile|pyinstrument] [--seconds 10] [--mode get]
        [--target sidecar|floor] [--out DIR]

cProfile is deterministic (every call, exact counts; its own overhead inflates many small
calls); pyinstrument samples (low overhead, shares of wall time per stack). Use both: counts from
the first, proportions from the second. Pinning: the profiled server on CPU 0, wrk and redis on
CPU 1, as in run.py's default layout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def child(argv: list[str], profiler: str, out: Path, target: str) -> None:
    """Run the sidecar (or floor app) in this process; profile between SIGUSR1 and SIGUSR2."""
    state: dict[str, Any] = {}  # "prof": a cProfile or a pyinstrument profiler; "t0": a float

    def start(*_: object) -> None:
        if profiler == "cprofile":
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        else:
            from pyinstrument import Profiler

            prof = Profiler(interval=0.0002, async_mode="disabled")
            prof.start()
        state["prof"] = prof
        state["t0"] = time.perf_counter()

    def stop(*_: object) -> None:
        prof = state.pop("prof", None)
        if prof is None:
            return
        elapsed = time.perf_counter() - state["t0"]
        if profiler == "cprofile":
            import pstats

            prof.disable()
            prof.dump_stats(out / f"{target}.prof")
            with (out / f"{target}-cprofile.txt").open("w") as f:
                f.write(f"profiled window: {elapsed:.2f} s\n")
                stats = pstats.Stats(str(out / f"{target}.prof"), stream=f)
                stats.sort_stats("tottime").print_stats(45)
                stats.sort_stats("cumulative").print_stats(60)
        else:
            session = prof.stop()
            from pyinstrument.renderers import ConsoleRenderer

            tree = ConsoleRenderer(
                unicode=False, color=False, show_all=True, short_mode=False
            ).render(session)
            flat = ConsoleRenderer(unicode=False, color=False, flat=True, show_all=True).render(
                session
            )
            (out / f"{target}-pyinstrument.txt").write_text(
                f"profiled window: {elapsed:.2f} s\n" + tree
            )
            (out / f"{target}-pyinstrument-flat.txt").write_text(
                f"profiled window: {elapsed:.2f} s\n" + flat
            )
            session.save(str(out / f"{target}.pyisession"))
            (out / f"{target}-pyinstrument.html").write_text(prof.output_html())
        (out / "done").write_text("ok")

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = argv
    if target == "sidecar":
        from statecar_cli.main import main

        sys.exit(main())
    else:
        import runpy

        runpy.run_path(str(BENCH / "floor_app.py"), run_name="__main__")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        profiler, out, target = sys.argv[2], Path(sys.argv[3]), sys.argv[4]
        child(sys.argv[5:], profiler, out, target)
        return 0
    import run as harness  # bench/run.py

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiler", choices=("cprofile", "pyinstrument"), default="pyinstrument")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--mode", choices=("get", "save", "bulk", "txn"), default="get")
    parser.add_argument("--target", choices=("sidecar", "floor"), default="sidecar")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "profile")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "done").unlink(missing_ok=True)
    os.sched_setaffinity(0, {1})
    ns = argparse.Namespace(quick=True, runs=3, server_cpu=0, load_cpu=1, keep=False)
    bench = harness.Bench(ns)
    procs: list[harness.Proc] = []
    try:
        import shutil

        bench.redis_port = harness.free_port()
        bench.redis = harness.spawn(
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
            {1},
            bench.work,
        )
        procs.append(bench.redis)
        time.sleep(0.3)
        bench.r = harness.Redis(bench.redis_port)
        components = bench.work / "components"
        components.mkdir()
        (components / "s.yaml").write_text(
            harness.component_yaml(
                "s", "state.redis", {"redisHost": f"127.0.0.1:{bench.redis_port}"}
            )
        )
        port = harness.free_port()
        sidecar_argv = [
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
        # The sidecar seeds the keys (statecar's own hash layout), profiled or not.
        if args.target == "sidecar":
            prof_argv = sidecar_argv
            seed_port = port
        else:
            seed_port = harness.free_port()
            seeder = harness.spawn(
                "seeder",
                [
                    *harness.sidecar_command(),
                    "sidecar",
                    "--app-id",
                    "bench",
                    "--components-path",
                    str(components),
                    "--http-port",
                    str(seed_port),
                    "--grpc-port",
                    str(harness.free_port()),
                    "--metrics-port",
                    "0",
                ],
                {0},
                bench.work,
                harness.clean_env(),
            )
            procs.append(seeder)
            harness.wait_http(seeder, seed_port, "/v1.0/healthz", {204})
            from statecar_sidecar.stores.redis.scripts import SAVE

            bench.r(*SAVE.load_command())
            prof_argv = [
                "floor_app.py",
                "--app",
                "floor",
                "--port",
                str(port),
                "--redis-port",
                str(bench.redis_port),
                "--save-sha",
                SAVE.sha1.decode(),
            ]
        proc = harness.spawn(
            args.target,
            [
                sys.executable,
                __file__,
                "--child",
                args.profiler,
                str(args.out),
                args.target,
                *prof_argv,
            ],
            {0},
            bench.work,
            harness.clean_env(),
        )
        procs.append(proc)
        ready = "/v1.0/healthz" if args.target == "sidecar" else "/v1.0/state/s/none"
        harness.wait_http(proc, port, ready, {204}, timeout=60)
        bench.seed(seed_port, "s", ["k", "w"])
        harness.run_wrk(
            port, args.mode, "/v1.0/state/s", args.connections, 2, {1}, bench.value_file
        )  # warm-up
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.2)
        t0 = time.monotonic()
        before = harness.schedstat_ns(proc.pid)
        result = harness.run_wrk(
            port, args.mode, "/v1.0/state/s", args.connections, args.seconds, {1}, bench.value_file
        )
        cpu = (harness.schedstat_ns(proc.pid) - before) / 1e3 / max(1, result["requests"])
        os.kill(proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 120
        while not (args.out / "done").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        print(
            f"{args.target} {args.mode} under {args.profiler}: {result['rps']:.0f} req/s, "
            f"p50 {result['p50']:.2f} ms, {cpu:.0f} µs CPU/request (profiler overhead "
            f"included), {time.monotonic() - t0:.0f} s; output in {args.out}"
        )
    finally:
        for p in reversed(procs):
            p.stop()
        import shutil

        shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
