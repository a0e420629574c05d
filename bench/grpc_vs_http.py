#!/usr/bin/env python3
"""
The gRPC API beside the HTTP API, in one run: GET and save, on one sidecar, one Redis.

Not a test. It starts a `redis-server` and one `statecar sidecar` (HTTP and gRPC ports both
open, a `state.redis` store `s` seeded with k0..k999 holding 1 KB JSON values), then drives
both transports with the same closed-loop Go client (`bench/grpc_load`: net/http and grpc-go,
built once into ${STATECAR_CACHE:-~/.cache/statecar}), interleaved HTTP, gRPC, HTTP, gRPC, ...
`--runs` times:

* unloaded p50: one request at a time (`-c 1`);
* saturated throughput: `--connections` concurrent requests;
* CPU per request: the sidecar's CPU time (every thread, /proc schedstat) over the saturated run
  divided by the requests it completed.

Beside them, `grpc-floor`: `bench/grpc_floor_app.py`, grpcio's asyncio server answering GetState
with a constant, measured the same way: what grpcio alone costs per call, the reason the
sidecar serves gRPC on its own HTTP/2 (docs/grpc.md, "Transport").

The sidecar is pinned to `--server-cpu`, Redis and the load generator to `--load-cpu`. The
report (stdout, and bench/results/grpc-vs-http.{json,md}) gives medians and gRPC/HTTP ratios;
the issue's target is gRPC CPU per GET <= 1.3x HTTP's.

    python bench/grpc_vs_http.py [--runs 3] [--seconds 4] [--connections 32]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as base  # noqa: E402  (bench/run.py's process helpers)

LOAD_SRC = BENCH / "grpc_load"
OPERATIONS = ("get", "save")
TRANSPORTS = ("http", "grpc")


def build_load_generator() -> Path:
    cache = Path(os.environ.get("STATECAR_CACHE", Path.home() / ".cache" / "statecar"))
    digest = hashlib.sha256(
        b"".join((LOAD_SRC / n).read_bytes() for n in ("go.mod", "go.sum", "main.go"))
    ).hexdigest()[:12]
    binary = cache / "bench" / f"grpc-load-{digest}"
    if not binary.exists():
        base.log(f"building the load generator into {binary}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GOMODCACHE": str(cache / "go"),
            "GOCACHE": str(cache / "go-build"),
            "GOFLAGS": "-mod=mod",
        }
        subprocess.run(
            ["go", "build", "-trimpath", "-o", f"{binary}.tmp", "."],
            cwd=LOAD_SRC,
            env=env,
            check=True,
        )
        os.replace(f"{binary}.tmp", binary)
    return binary


def load(
    binary: Path, mode: str, addr: str, connections: int, seconds: float, cpus: set[int]
) -> dict[str, float]:
    done = subprocess.run(
        [str(binary), "-mode", mode, "-addr", addr, "-c", str(connections), "-d", str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=base.affinity(cpus),
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"{mode}: {result['errors']} errors")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    server_cpu, load_cpu = {args.server_cpu}, {args.load_cpu}
    os.sched_setaffinity(0, load_cpu)
    binary = build_load_generator()
    work = Path(tempfile.mkdtemp(prefix="statecar-grpc-bench-"))
    procs: list[base.Proc] = []
    try:
        redis_port = base.free_port()
        redis_bin = shutil.which("redis-server") or sys.exit("redis-server not found")
        redis_argv = [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1"]
        redis_argv += ["--save", "", "--appendonly", "no", "--dir", str(work)]
        procs.append(base.spawn("redis", redis_argv, load_cpu, work))
        components = work / "components"
        components.mkdir()
        (components / "s.yaml").write_text(
            base.component_yaml("s", "state.redis", {"redisHost": f"127.0.0.1:{redis_port}"})
        )
        http_port, grpc_port = base.free_port(), base.free_port()
        argv = [*base.sidecar_command(), "sidecar", "--app-id", base.APP_ID]
        argv += ["--components-path", str(components), "--http-port", str(http_port)]
        argv += ["--grpc-port", str(grpc_port), "--metrics-port", "0", "--log-level", "warning"]
        sidecar = base.spawn("sidecar", argv, server_cpu, work, base.clean_env())
        procs.append(sidecar)
        base.wait_http(sidecar, http_port, "/v1.0/healthz", {204}, timeout=60)
        for start in range(0, base.NKEYS, 100):
            body = b",".join(
                b'{"key":"k%d","value":%s}' % (i, base.VALUE) for i in range(start, start + 100)
            )
            status, _, data = base.http_call(http_port, "POST", "/v1.0/state/s", b"[" + body + b"]")
            assert status == 204, (status, data)
        floor_port = base.free_port()
        floor = base.spawn(
            "grpc-floor",
            [sys.executable, str(BENCH / "grpc_floor_app.py"), str(floor_port)],
            server_cpu,
            work,
            base.clean_env(),
        )
        procs.append(floor)
        time.sleep(2)
        addresses = {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}
        for transport in TRANSPORTS:  # warm both paths up
            for op in OPERATIONS:
                load(binary, f"{transport}-{op}", addresses[transport], 8, 1.0, load_cpu)
        load(binary, "grpc-get", f"127.0.0.1:{floor_port}", 8, 1.0, load_cpu)
        targets = [
            (f"{transport}-{op}", f"{transport}-{op}", addresses[transport], sidecar)
            for op in OPERATIONS
            for transport in TRANSPORTS
        ]
        targets.insert(2, ("grpc-floor-get", "grpc-get", f"127.0.0.1:{floor_port}", floor))

        samples: dict[str, list[dict[str, float]]] = {}
        for run in range(args.runs):
            for name, mode, address, server in targets:
                unloaded = load(binary, mode, address, 1, 2.0, load_cpu)
                cpu_before = base.schedstat_ns(server.pid)
                loaded = load(binary, mode, address, args.connections, args.seconds, load_cpu)
                cpu_ns = base.schedstat_ns(server.pid) - cpu_before
                sample = {
                    "p50_unloaded_us": unloaded["p50_us"],
                    "rps": loaded["requests"] / loaded["seconds"],
                    "p50_loaded_us": loaded["p50_us"],
                    "p99_loaded_us": loaded["p99_us"],
                    "cpu_us_per_request": cpu_ns / 1000 / loaded["requests"],
                    "server_cores": cpu_ns / 1e9 / loaded["seconds"],
                }
                samples.setdefault(name, []).append(sample)
                base.log(
                    f"run {run + 1} {name}: " + ", ".join(f"{k}={v:.1f}" for k, v in sample.items())
                )
        medians = {
            mode: {k: statistics.median(s[k] for s in runs) for k in runs[0]}
            for mode, runs in samples.items()
        }
        report: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "loadavg": base.loadavg(),
            "runs": args.runs,
            "seconds": args.seconds,
            "connections": args.connections,
            "medians": medians,
            "ratios_grpc_over_http": {
                op: {
                    k: medians[f"grpc-{op}"][k] / medians[f"http-{op}"][k]
                    for k in ("cpu_us_per_request", "rps", "p50_unloaded_us")
                }
                for op in OPERATIONS
            },
            "samples": samples,
        }
        report["ratio_grpc_floor_over_http_get_cpu"] = (
            medians["grpc-floor-get"]["cpu_us_per_request"]
            / medians["http-get"]["cpu_us_per_request"]
        )
        ratio = report["ratios_grpc_over_http"]["get"]["cpu_us_per_request"]
        report["target_grpc_cpu_per_get_le_1_3x_http"] = ratio <= 1.3
        lines = [
            "| operation | transport | CPU µs/request | saturated req/s | unloaded p50 µs |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for name in [t[0] for t in targets]:
            m = medians[name]
            op = name.rsplit("-", 1)[1]
            transport = name.rsplit("-", 1)[0]
            if transport == "grpc-floor":
                transport = "gRPC floor (grpcio, constant reply)"
            lines.append(
                f"| {op} | {transport} | {m['cpu_us_per_request']:.0f} | {m['rps']:.0f} | "
                f"{m['p50_unloaded_us']:.0f} |"
            )
        lines.append("")
        lines.append(
            f"gRPC/HTTP CPU per GET: {ratio:.2f}x (target <= 1.3x: "
            f"{'met' if ratio <= 1.3 else 'NOT met'}); per save: "
            f"{report['ratios_grpc_over_http']['save']['cpu_us_per_request']:.2f}x; grpcio's own "
            f"floor is {report['ratio_grpc_floor_over_http_get_cpu']:.2f}x HTTP's whole GET. "
            f"Medians of {args.runs} interleaved runs, {args.connections} connections, "
            f"load average {report['loadavg']}."
        )
        text = "\n".join(lines)
        print(text)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grpc-vs-http.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / "grpc-vs-http.md").write_text(text + "\n")
        return 0
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
