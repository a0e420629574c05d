#!/usr/bin/env python3
"""
statecar's benchmark: the sidecar against the physical floor, side by side, in one run.

Not a test. It starts everything it measures and stops it by pid at the end:

* a `redis-server` (loopback, free port, `--save '' --appendonly no`);
* the sidecar, `statecar sidecar --components-path <tmp> --app-id bench`, with one `state.redis`
  component named `s` (so its URLs are exactly the floor app's);
* `bench/floor_app.py --app floor` (raw ASGI + one pipelined hiredis connection: the
  denominator) and `--app hello` (raw ASGI constant body: S2's HTTP baseline);
* daprd v1.18.1 (`bench/daprd.py`: loopback listeners, kubernetes name resolution) over the same
  component file, so it reads the same hashes: every scenario measures it in the same rounds and
  each row prints statecar ÷ daprd (issue 12), plus the G rows (the Dapr gRPC API, both ports).

Keys k0..k999 (and the write keys) hold a 1 KB JSON value, seeded through the sidecar's own API,
so the floor app reads statecar-formatted hashes. Targets are measured interleaved (A, B, A, B),
`--runs` (>= 3) times each; the report gives medians and ratios of medians.

CPU pinning (sched_setaffinity, i.e. what `taskset` does; the allowed CPUs are read back from
/proc and printed): the sidecar and the apps on `--server-cpu` (0), the load generator and
redis-server on `--load-cpu` (1); S3 puts everything on the server CPU. The machine may be
shared: every figure comes with the load average and the CPU time used by processes that are not
ours during the measurement ("foreign", in cores), so a noisy figure can be recognised.

    python bench/run.py [--quick] [--scenarios S1,S2,S3,S4,S5,M,G,B] [--runs 3] [--out DIR]

Scenarios and targets: see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import hiredis

from statecar_contract import wiring
from statecar_contract.components import ResolvedComponent
from statecar_sidecar import memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
import daprd as daprd_launcher  # bench/daprd.py, found through the line above

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LUA = BENCH / "wrk.lua"
APP_ID = "bench"
STORE = "s"
NKEYS = 1000
BATCH = 10
VALUE = b'{"data":"' + (b"abcdefghijklmnopqrstuvwxyz" * 40)[:1013] + b'"}'
assert len(VALUE) == 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The environment the image gives every process (Dockerfile ENV; tests/unit/test_dockerfile.py
#: holds the two equal) that changes a sidecar's start: glibc's mmap threshold, set at exec.
IMAGE_ENV = {"MALLOC_MMAP_THRESHOLD_": str(memory.MMAP_THRESHOLD_BYTES)}
ALL_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "M", "B", "G")


def _at_least(x: float) -> tuple[str, Callable[[float], bool]]:
    return f"≥ {x:.2f}× daprd", lambda r: r >= x


def _at_most(x: float) -> tuple[str, Callable[[float], bool]]:
    return f"≤ {x:.2f}× daprd", lambda r: r <= x


#: The B rows' targets (statecar ÷ daprd, paired): regression guards, not goals. First measured
#: 2026-12-06 06:56 UTC (one round, load 9); set from the first two 3-round `--quick` runs
#: (07:04 and 07:29 UTC, bench/README.md "SQL backends"), the worse of the two with a margin
#: for this machine's noise. (backend, row) -> (text, test of the ratio).
B_TARGETS: dict[tuple[str, str], tuple[str, Callable[[float], bool]]] = {
    # Regression guards, statecar ÷ daprd. The first comment is the first two runs (07:04,
    # 07:29 UTC); SQLite's were tightened after reads moved onto the loop and the own HTTP
    # server landed (three quiet runs, 10:05-10:38 UTC, bench/README.md "Issue 12").
    ("sqlite", "GET/s, 50 conns"): _at_least(1.3),  # 1.67, 1.08; then 2.49, 2.70, 1.92
    ("sqlite", "save/s, 50 conns"): _at_least(3.0),  # 7.75, 5.98; then 10.1, 8.09, 9.13
    ("sqlite", "GET p50, 1 conn"): _at_most(1.0),  # 0.80, 1.11; then 0.69, 0.70, 0.71
    ("sqlite", "save p50, 1 conn"): _at_most(0.7),  # 0.50, 0.50
    ("sqlite", f"txn({BATCH}) p50, 1 conn"): _at_most(0.7),  # 0.40, 0.44
    ("postgres", "GET/s, 50 conns"): _at_least(0.45),  # 0.76, 0.54; then 0.88, 0.90
    ("postgres", "save/s, 50 conns"): _at_least(0.5),  # 0.64, 0.80
    ("postgres", "GET p50, 1 conn"): _at_most(1.5),  # 1.25, 1.22
    ("postgres", "save p50, 1 conn"): _at_most(1.8),  # 1.50, 1.47
    ("postgres", f"txn({BATCH}) p50, 1 conn"): _at_most(0.6),  # 0.43, 0.48
}


# ------------------------------------------------------------------------------- utilities


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def median(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def descendants(pid: int) -> list[int]:
    """pid and every process below it (via /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError):
                    text = Path(f"/proc/{current}/task/{task}/children").read_text()
                    todo.extend(int(c) for c in text.split())
    return out


def pin_tree(pid: int, cpus: set[int]) -> None:
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{proc}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)


def allowed_cpus(pid: int) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return "?"


def rss_mb(pid: int) -> float:
    """VmRSS of pid and all its descendants, in MB (10^6 bytes... no: MiB, as the anchors)."""
    total_kb = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def proc_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (all threads)


def schedstat_ns(pid: int) -> int:
    """CPU time (ns) run by every thread of every process from pid down (/proc/.../schedstat)."""
    total = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{proc}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total += int(Path(f"/proc/{proc}/task/{task}/schedstat").read_text().split()[0])
    return total


def cpu_busy_ticks() -> tuple[int, int]:
    """(busy, steal) ticks over all CPUs."""
    busy = steal = 0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            v = [int(x) for x in line.split()[1:]]
            busy += v[0] + v[1] + v[2] + v[5] + v[6]
            steal += v[7] if len(v) > 7 else 0
    return busy, steal


@dataclass
class CpuSnapshot:
    at: float
    busy: int
    steal: int
    ours: dict[int, int]
    children: float
    me: float


def cpu_snapshot() -> CpuSnapshot:
    busy, steal = cpu_busy_ticks()
    ours = {p: proc_ticks(p) for p in descendants(os.getpid()) if p != os.getpid()}
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        time.monotonic(), busy, steal, ours, ch.ru_utime + ch.ru_stime, me.ru_utime + me.ru_stime
    )


def foreign_cores(a: CpuSnapshot, b: CpuSnapshot) -> tuple[float, float]:
    """(CPU used by processes that are not ours, steal), in cores, between two snapshots."""
    elapsed = b.at - a.at
    if elapsed <= 0:
        return float("nan"), float("nan")
    ours = sum(t - a.ours.get(p, 0) for p, t in b.ours.items() if p in a.ours)
    ours_s = ours / CLK_TCK + (b.children - a.children) + (b.me - a.me)
    busy_s = (b.busy - a.busy) / CLK_TCK
    return max(0.0, (busy_s - ours_s) / elapsed), (b.steal - a.steal) / CLK_TCK / elapsed


def affinity(cpus: set[int]) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, cpus)


# ------------------------------------------------------------------------- redis (sync, tiny)


class Redis:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = hiredis.Reader()

    def __call__(self, *args: Any) -> Any:
        self.sock.sendall(hiredis.pack_command(args))
        while True:
            reply = self.reader.gets()
            if reply is not False:
                return reply
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("redis closed the connection")
            self.reader.feed(data)

    def info(self, section: str = "all") -> dict[str, str]:
        text = self(b"INFO", section.encode()).decode()
        out = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def close(self) -> None:
        self.sock.close()


class Monitor:
    """A MONITOR connection collecting (source, COMMAND) until a marker ECHO is seen.

    Its close is a read Redis counts in `total_reads_processed`, and Redis may handle it after
    the harness's next INFO: `gone()` waits until Redis has dropped the client, so the close
    is never counted as a round trip of the pass that follows (S4 once showed 1.05).
    """

    LINE = re.compile(rb'^\+?[\d.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?')

    def __init__(self, port: int, marker: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"CLIENT ID\r\nMONITOR\r\n")
        self.marker = marker
        self.seen: list[tuple[str, str]] = []
        buf = b""
        while buf.count(b"\r\n") < 2:  # ":<id>" then "+OK"
            buf += self.sock.recv(4096)
        first, rest = buf.split(b"\r\n", 1)
        self.client_id = int(first[1:])
        self.rest = rest.split(b"\r\n", 1)[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buf = self.rest
        while True:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                m = self.LINE.match(line)
                if not m:
                    continue
                source, command, first = m.group(1), m.group(2), m.group(3)
                if command.upper() == b"ECHO" and first == self.marker:
                    self.done.set()
                    self.sock.close()
                    return
                name = command.decode().upper()
                if name in ("SCRIPT", "CONFIG", "CLIENT") and first:
                    name += "|" + first.decode().upper()
                self.seen.append(("lua" if source == b"lua" else source.decode(), name))
            data = self.sock.recv(1 << 16)
            if not data:
                self.done.set()
                return
            buf += data

    def gone(self, redis: Redis, timeout: float = 10.0) -> None:
        """Wait until Redis no longer lists this MONITOR client (its close has been read)."""
        deadline = time.monotonic() + timeout
        while redis(b"CLIENT", b"LIST", b"ID", self.client_id):
            if time.monotonic() > deadline:
                raise RuntimeError("redis still lists the closed MONITOR connection")
            time.sleep(0.001)


# ------------------------------------------------------------------------------- HTTP (sync)


def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=hdrs)
    response = conn.getresponse()
    data = response.read()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
    if own:
        conn.close()
    return result


def raw_get_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """Status of one GET on a fresh connection; None if the port does not accept (yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return -1
                data += chunk
            return int(data.split(b" ", 2)[1])
    except OSError:
        return None


# ---------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""


def spawn(
    name: str, argv: list[str], cpus: set[int], workdir: Path, env: dict[str, str] | None = None
) -> Proc:
    log_path = workdir / f"{name}.log"
    # The child inherits this thread's CPUs. A `preexec_fn` would do it in the child instead,
    # but makes subprocess fork this whole interpreter rather than vfork-exec: ~3 ms more on
    # every process start, counted in the cold start of statecar and daprd alike.
    inherited = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir
            )
    finally:
        os.sched_setaffinity(0, inherited)
    return Proc(name, popen, log_path)


def wait_http(proc: Proc, port: int, path: str, ok: set[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        if raw_get_status(port, path) in ok:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready within {timeout}s:\n{proc.tail()}")


def sidecar_command() -> list[str]:
    script = Path(sys.executable).parent / "statecar"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "statecar_cli.main"]


def image_like_command(work: Path) -> list[str]:
    """statecar run by an interpreter set up as the image's: a venv whose site-packages reaches
    this checkout and the installed packages through one path-only `.pth`, so no `.pth` file of
    the host's own site-packages runs code at start-up. (This sandbox's
    `_sandboxing_egress_ca.pth` imports certifi, and with it importlib.resources, tempfile and
    zipfile, in every interpreter: ~5 ms of a statecar start. The image's venv has no such file.)
    """
    venv = work / "image-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    reach = [p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() != BENCH]
    (site_packages / "statecar-bench.pth").write_text("\n".join(reach) + "\n", encoding="utf-8")
    return [str(venv / "bin" / "python"), "-m", "statecar_cli.main"]


def find_daprd() -> Path | None:
    """The cached daprd v1.18.1, built first by scripts/daprd.sh (once, cached) if need be."""
    found = daprd_launcher.binary()
    if found is None and (ROOT / "scripts" / "daprd.sh").is_file():
        log("daprd not found: building it with scripts/daprd.sh (several minutes, once)")
        built = subprocess.run(
            ["nice", "bash", str(ROOT / "scripts" / "daprd.sh")],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = built.stdout.strip().splitlines()
        if built.returncode == 0 and lines and Path(lines[-1]).is_file():
            found = Path(lines[-1])
        else:
            log(f"scripts/daprd.sh failed ({built.returncode}): {built.stderr[-2000:]}")
    return found


def precompile() -> None:
    """Byte-compile statecar's sources (into their gitignored __pycache__), as the image is.

    The Dockerfile's pip install byte-compiles every module and the image runs with
    PYTHONDONTWRITEBYTECODE=1. A checkout run with that variable set (as this project's shells
    are) would instead compile every statecar module from source at each start: ~40 ms of cold
    start that no deployed sidecar pays.
    """
    folders = [str(ROOT / d) for d in ("contract", "sidecar", "cli") if (ROOT / d).is_dir()]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *folders], check=False, capture_output=True
    )


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATECAR_", "DAPR_"))}
    env["PYTHONDONTWRITEBYTECODE"] = env.get("PYTHONDONTWRITEBYTECODE", "")
    return env


def component_yaml(name: str, kind: str, metadata: dict[str, str]) -> str:
    items = "".join(f"  - name: {k}\n    value: {json.dumps(v)}\n" for k, v in metadata.items())
    return (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        f"metadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata:\n{items}"
    )


# ---------------------------------------------------------------------------- load generators


@dataclass
class Run:
    target: str
    values: dict[str, float]
    foreign: float
    steal: float
    load: str


def run_wrk(
    port: int,
    mode: str,
    base: str,
    connections: int,
    duration: float,
    cpu: set[int],
    value_file: Path | None = None,
    nkeys: int = NKEYS,
) -> dict[str, float]:
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}",
        "--",
        mode,
        base,
        str(nkeys),
        str(value_file or ""),
        str(BATCH),
    ]
    result = subprocess.run(
        argv, capture_output=True, text=True, preexec_fn=affinity(cpu), timeout=duration + 60
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    d = json.loads(line[10:])
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return {
        "rps": d["requests"] / (d["duration_us"] / 1e6),
        "p50": d["p50_us"] / 1000,
        "p90": d["p90_us"] / 1000,
        "p99": d["p99_us"] / 1000,
        "p999": d["p999_us"] / 1000,
        "max": d["max_us"] / 1000,
        "requests": d["requests"],
        "errors": errors,
    }


def run_ratepace(
    port: int,
    path: str,
    nkeys: int,
    duration: float,
    warmup: float,
    cpu: set[int],
    rate: float = 1000,
    connections: int = 16,
) -> dict[str, float]:
    argv = [
        sys.executable,
        str(BENCH / "ratepace.py"),
        "--url-base",
        f"http://127.0.0.1:{port}",
        "--path",
        path,
        "--keys",
        str(nkeys),
        "--rate",
        str(rate),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        preexec_fn=affinity(cpu),
        timeout=duration + warmup + 60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ratepace failed: {result.stderr}")
    d: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    ok = d["status"].get("2xx", 0)
    d["ok_share"] = ok / max(1, d["expected"])
    d["rate_share"] = d["achieved_rate"] / rate
    return d


def measured(target: str, fn: Callable[[], dict[str, float]], server: int | None = None) -> Run:
    """Run fn; record the machine's load and, given the server's pid, its CPU µs per request
    (a figure much less sensitive to other processes on the machine than req/s)."""
    load = loadavg()
    a = cpu_snapshot()
    ns0 = schedstat_ns(server) if server else 0
    values = fn()
    if server:
        values["cpu_us"] = (schedstat_ns(server) - ns0) / 1e3 / max(1, values.get("requests", 0))
    b = cpu_snapshot()
    foreign, steal = foreign_cores(a, b)
    return Run(target, values, foreign, steal, load)


# --------------------------------------------------------------------------------- the report


@dataclass
class Row:
    scenario: str
    metric: str
    value: str
    floor: str = ""
    ratio: str = ""
    target: str = ""
    result: str = ""  # PASS / MISS / info
    daprd: str = ""  # daprd's figure, measured in the same rounds
    vs_daprd: str = ""  # statecar ÷ daprd (paired per round)


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: str, daprd: str = "", vs: str = "") -> None:
        row = Row(*args)
        row.daprd, row.vs_daprd = daprd, vs
        self.rows.append(row)

    def markdown(self) -> str:
        head = (
            "| | metric | statecar | floor / baseline | statecar vs floor | daprd "
            "| statecar ÷ daprd | target | result |"
        )
        lines = [head, "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(
                f"| {r.scenario} | {r.metric} | {r.value} | {r.floor} | {r.ratio} | {r.daprd}"
                f" | {r.vs_daprd} | {r.target} | {r.result} |"
            )
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


def spread(runs: list[Run], key: str, fmt: str = "{:.0f}") -> str:
    vals = [r.values[key] for r in runs]
    return f"{fmt.format(median(vals))} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"


def paired(a: list[Run], b: list[Run], key: str, op: Callable[[float, float], float]) -> float:
    """Median over rounds of op(a_i, b_i): each round's two runs were adjacent in time, so a
    change of machine state between rounds (this VM has a fast and a slow mode) cancels out."""
    return median([op(x.values[key], y.values[key]) for x, y in zip(a, b, strict=True)])


def figure_text(runs: list[Run], key: str, scale: float, *, cpu: bool = True) -> str:
    """The median of `key` times `scale`, with the server CPU per call when `cpu`; "" if no runs."""
    if not runs:
        return ""
    text = f"{median([r.values[key] * scale for r in runs]):.0f}"
    if cpu:
        text += f" (CPU {median([r.values['cpu_us'] for r in runs]):.0f} µs)"
    return text


def summarize_noise(runs: list[Run]) -> str:
    return (
        f"foreign CPU {median([r.foreign for r in runs]):.2f} cores (max "
        f"{max(r.foreign for r in runs):.2f}), steal {median([r.steal for r in runs]):.2f}, "
        f"load {runs[0].load} → {runs[-1].load}"
    )


# ------------------------------------------------------------------------------------ harness


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.runs = args.runs
        self.server_cpu = {args.server_cpu}
        self.load_cpu = {args.load_cpu}
        self.work = Path(tempfile.mkdtemp(prefix="statecar-bench-"))
        self.procs: list[Proc] = []
        self.report = Report()
        self.value_file = self.work / "value.json"
        self.value_file.write_bytes(VALUE)
        d = self.durations = {
            "S1": 3 if self.quick else 10,
            "S2": 3 if self.quick else 10,
            "S2w": 0.5 if self.quick else 1.0,
            "S3": 3 if self.quick else 4,
            "S4": 2 if self.quick else 5,
            "S5": 10 if self.quick else 60,
            "B": 1 if self.quick else 4,
        }
        self.report.raw["durations_s"] = d

    # -- set-up ---------------------------------------------------------------------------------

    def start(self) -> None:
        os.sched_setaffinity(0, self.load_cpu)  # the harness itself stays off the server CPU
        precompile()
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("redis-server not found (apt-get install redis-server)")
        if shutil.which("wrk") is None:
            sys.exit("wrk not found (apt-get install wrk)")
        self.redis_port = free_port()
        self.redis = spawn(
            "redis",
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work),
            ],
            self.load_cpu,
            self.work,
        )
        self.procs.append(self.redis)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.r = Redis(self.redis_port)
                self.r(b"PING")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        components = self.work / "components"
        components.mkdir()
        (components / "s.yaml").write_text(
            component_yaml(STORE, "state.redis", {"redisHost": f"127.0.0.1:{self.redis_port}"})
        )
        self.components = components
        self.sidecar_port = free_port()
        self.sidecar = self.start_sidecar("sidecar", components, self.sidecar_port)
        self.sidecar_grpc = self.sidecar_grpc_port
        self.report.raw["rss_idle_main_mb"] = rss_mb(self.sidecar.pid)
        save_sha = None
        with contextlib.suppress(Exception):
            from statecar_sidecar.stores.redis.scripts import SAVE

            self.r(*SAVE.load_command())
            save_sha = SAVE.sha1.decode()
        self.floor_port = free_port()
        argv = [
            sys.executable,
            str(BENCH / "floor_app.py"),
            "--app",
            "floor",
            "--port",
            str(self.floor_port),
            "--redis-port",
            str(self.redis_port),
            "--key-prefix",
            f"{APP_ID}||",
        ] + (["--save-sha", save_sha] if save_sha else [])
        self.floor = spawn("floor", argv, self.server_cpu, self.work)
        self.procs.append(self.floor)
        self.hello_port = free_port()
        self.hello = spawn(
            "hello",
            [
                sys.executable,
                str(BENCH / "floor_app.py"),
                "--app",
                "hello",
                "--port",
                str(self.hello_port),
            ],
            self.server_cpu,
            self.work,
        )
        self.procs.append(self.hello)
        wait_http(self.floor, self.floor_port, "/v1.0/state/s/nothing", {204})
        wait_http(self.hello, self.hello_port, "/", {200})
        self.report.raw["rss_idle_floor_mb"] = rss_mb(self.floor.pid)
        self.floor_save = save_sha is not None
        self.seed(self.sidecar_port, STORE, ["k", "w", "t"])
        self.verify()
        self.daprd_bin = find_daprd()
        self.daprd: Proc | None = None
        if self.daprd_bin is None:
            self.report.notes.append("daprd not measured: scripts/daprd.sh could not build it")
        else:
            self.daprd, self.daprd_port, self.daprd_grpc_port = self.start_daprd(
                "daprd", components
            )
            self.verify_daprd()
            self.report.raw["rss_idle_daprd_main_mb"] = rss_mb(self.daprd.pid)
        self.record_environment()

    def start_sidecar(self, name: str, components: Path, port: int, app_id: str = APP_ID) -> Proc:
        self.sidecar_grpc_port = free_port()
        argv = [
            *sidecar_command(),
            "sidecar",
            "--app-id",
            app_id,
            "--components-path",
            str(components),
            "--http-port",
            str(port),
            "--grpc-port",
            str(self.sidecar_grpc_port),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "warning",
        ]
        proc = spawn(name, argv, self.server_cpu, self.work, clean_env())
        self.procs.append(proc)
        wait_http(proc, port, "/v1.0/healthz", {204}, timeout=60)
        return proc

    def start_daprd(
        self, name: str, resources: Path, port: int | None = None, wait: bool = True
    ) -> tuple[Proc, int, int]:
        """daprd over `resources`, pinned like the sidecar; (process, HTTP port, gRPC port)."""
        assert self.daprd_bin is not None
        port = port or free_port()
        grpc_port = free_port()
        workdir = self.work / name
        workdir.mkdir(exist_ok=True)
        argv = daprd_launcher.command(
            self.daprd_bin,
            app_id=APP_ID,
            resources=resources,
            workdir=workdir,
            http_port=port,
            grpc_port=grpc_port,
            metrics_port=free_port(),
            internal_grpc_port=free_port(),
        )
        proc = spawn(name, argv, self.server_cpu, self.work, daprd_launcher.environment(workdir))
        self.procs.append(proc)
        if wait:
            wait_http(proc, port, "/v1.0/healthz", {204}, timeout=60)
        return proc, port, grpc_port

    def verify_daprd(self) -> None:
        """daprd reads the hashes the sidecar seeded (`bench||k7`): same bytes, same ETag."""
        _, s_headers, s_body = http_call(self.sidecar_port, "GET", "/v1.0/state/s/k7")
        d_status, d_headers, d_body = http_call(self.daprd_port, "GET", "/v1.0/state/s/k7")
        if not (
            d_status == 200 and d_body == s_body and d_headers.get("etag") == s_headers.get("etag")
        ):
            raise RuntimeError(
                f"daprd and the sidecar disagree on k7: {d_status} {d_headers} {d_body[:60]!r}"
            )

    def seed(self, port: int, store: str, prefixes: Sequence[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for prefix in prefixes:
            for start in range(0, NKEYS, 100):
                body = (
                    b"["
                    + b",".join(
                        b'{"key":"%s%d","value":%s}' % (prefix.encode(), i, VALUE)
                        for i in range(start, start + 100)
                    )
                    + b"]"
                )
                status, _, data = http_call(port, "POST", f"/v1.0/state/{store}", body, conn=conn)
                if status != 204:
                    raise RuntimeError(f"seeding {store} failed: {status} {data[:300]!r}")
        conn.close()

    def verify(self) -> None:
        s_status, s_headers, s_body = http_call(self.sidecar_port, "GET", "/v1.0/state/s/k7")
        f_status, f_headers, f_body = http_call(self.floor_port, "GET", "/v1.0/state/s/k7")
        if not (
            s_status == f_status == 200
            and s_body == f_body == VALUE
            and s_headers.get("etag") == f_headers.get("etag")
        ):
            raise RuntimeError(
                f"sidecar and floor disagree: {s_status} {s_headers} {s_body[:60]!r} / "
                f"{f_status} {f_headers} {f_body[:60]!r}"
            )
        kind = self.r(b"TYPE", f"{APP_ID}||k7".encode())
        if kind != b"hash":
            raise RuntimeError(f"seeded key is a {kind!r}, not a hash")
        if self.floor_save:
            status, _, _ = http_call(
                self.floor_port, "POST", "/v1.0/state/s", b'[{"key":"w0","value":' + VALUE + b"}]"
            )
            s2, _, body = http_call(self.sidecar_port, "GET", "/v1.0/state/s/w0")
            if status != 204 or s2 != 200 or body != VALUE:
                self.floor_save = False
                self.report.notes.append("floor save disabled: it did not round-trip")

    def record_environment(self) -> None:
        def run(cmd: list[str]) -> str:
            with contextlib.suppress(Exception):
                return subprocess.run(
                    cmd, capture_output=True, text=True, cwd=ROOT, timeout=10
                ).stdout.strip()
            return "?"

        versions = {}
        for pkg in ("uvicorn", "uvloop", "httptools", "hiredis", "fastapi", "starlette", "orjson"):
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                versions[pkg] = version(pkg)
        cpu_model = "?"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"])
        self.report.raw["environment"] = {
            "commit": run(["git", "rev-parse", "--short", "HEAD"]),
            "modified_tracked_files": len([x for x in dirty.splitlines() if x.strip()]),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cpu": f"{os.cpu_count()} x {cpu_model}",
            "kernel": platform.release(),
            "python": platform.python_version(),
            "redis": self.r(b"INFO", b"server").decode().split("redis_version:")[1].split()[0],
            "wrk": (run(["wrk", "--version"]).splitlines() or ["?"])[0],
            "packages": versions,
            "sidecar_command": " ".join(sidecar_command()),
            "daprd": run([str(self.daprd_bin), "--version"]) if self.daprd_bin else "absent",
            "pinning": {
                "sidecar": allowed_cpus(self.sidecar.pid),
                "floor": allowed_cpus(self.floor.pid),
                "hello": allowed_cpus(self.hello.pid),
                "redis": allowed_cpus(self.redis.pid),
                "daprd": allowed_cpus(self.daprd.pid) if self.daprd else "not run",
                "load generator / harness": ",".join(map(str, sorted(self.load_cpu))),
            },
            "uptime_at_start": run(["uptime"]),
        }

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.r.close()
        for proc in reversed(self.procs):
            proc.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    # -- scenarios -----------------------------------------------------------------------------

    @staticmethod
    def versus(
        runs: dict[str, list[Run]], op: str, key: str, scale: float = 1.0, fmt: str = "{:.0f}"
    ) -> tuple[str, str, float]:
        """(daprd's figure, statecar ÷ daprd as text, that ratio): paired per round, over
        `runs["sidecar <op>"]` and `runs["daprd <op>"]`; NaN when daprd was not run."""
        mine, theirs = runs.get(f"sidecar {op}"), runs.get(f"daprd {op}")
        if not mine or not theirs:
            return "", "", float("nan")
        ratio = paired(mine, theirs, key, lambda a, b: a / b)
        vals = [r.values[key] * scale for r in theirs]
        text = f"{fmt.format(median(vals))} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"
        return text, f"{ratio:.2f}×", ratio

    def saturated_rounds(self, want_s1: bool, want_s4: bool) -> None:
        d = self.durations["S1"]
        floor = (self.floor_port, self.floor.pid)
        sidecar = (self.sidecar_port, self.sidecar.pid)
        targets: list[tuple[str, tuple[int, int], str]] = []
        daprd = (self.daprd_port, self.daprd.pid) if self.daprd else None
        # Each ratio's two runs back to back in a round (`paired`): floor and sidecar GET (S1),
        # sidecar GET and save (S4a), sidecar and floor save, daprd's GET and save (its own
        # S4a). A disturbance of a few seconds (bench/README.md, "Fifth pass") then tends to
        # hit both runs of a pair or neither.
        if want_s1:
            targets += [("floor GET", floor, "get")]
        targets += [("sidecar GET", sidecar, "get")]
        if want_s4:
            targets += [("sidecar save", sidecar, "save")]
            if self.floor_save:
                targets += [("floor save", floor, "save")]
        if daprd:
            targets += [("daprd GET", daprd, "get")]
            if want_s4:
                targets += [("daprd save", daprd, "save")]
        runs: dict[str, list[Run]] = {t[0]: [] for t in targets}
        for i in range(self.runs):
            for name, (port, pid), mode in targets:
                log(f"S1/S4a round {i + 1}/{self.runs}: {name}, wrk -t1 -c50 -d{d}s")
                runs[name].append(
                    measured(
                        name,
                        partial(
                            run_wrk,
                            port,
                            mode,
                            "/v1.0/state/s",
                            50,
                            d,
                            self.load_cpu,
                            self.value_file,
                        ),
                        pid,
                    )
                )
        self.report.raw["saturated"] = {k: [r.__dict__ for r in v] for k, v in runs.items()}
        self.saturated = runs
        sc = median([r.values["rps"] for r in runs["sidecar GET"]])
        errors = sum(r.values["errors"] for v in runs.values() for r in v)
        if want_s1:
            fl = median([r.values["rps"] for r in runs["floor GET"]])
            ratio = paired(runs["sidecar GET"], runs["floor GET"], "rps", lambda a, b: a / b)
            d_txt, vs_txt, vs = self.versus(runs, "GET", "rps")
            self.report.add(
                "S1",
                "saturated GET/s, 50 conns, 1 process",
                spread(runs["sidecar GET"], "rps"),
                spread(runs["floor GET"], "rps"),
                f"{ratio:.2f}× (ratio of medians {sc / fl:.2f})",
                "≥ 0.50× floor; ≥ 1.30× daprd",
                verdict(ratio >= 0.5 and errors == 0 and not vs < 1.3),
                daprd=d_txt,
                vs=vs_txt,
            )
            cpu_ratio = paired(runs["floor GET"], runs["sidecar GET"], "cpu_us", lambda a, b: a / b)
            d_txt, vs_txt, _ = self.versus(runs, "GET", "cpu_us")
            self.report.add(
                "S1",
                "server CPU per GET at saturation (µs; less noise-prone)",
                spread(runs["sidecar GET"], "cpu_us"),
                spread(runs["floor GET"], "cpu_us"),
                f"{cpu_ratio:.2f}× (floor/sidecar)",
                "≥ 0.50×",
                "info: " + ("ok" if cpu_ratio >= 0.5 else "under"),
                daprd=d_txt,
                vs=vs_txt,
            )
            self.report.add(
                "S1",
                "p50 / p99 latency at saturation (ms)",
                f"{median([r.values['p50'] for r in runs['sidecar GET']]):.2f} / "
                f"{median([r.values['p99'] for r in runs['sidecar GET']]):.2f}",
                f"{median([r.values['p50'] for r in runs['floor GET']]):.2f} / "
                f"{median([r.values['p99'] for r in runs['floor GET']]):.2f}",
                "",
                "",
                "info",
            )
            self.report.notes.append(
                f"S1 noise: {summarize_noise(runs['sidecar GET'] + runs['floor GET'])}"
            )
        if want_s4:
            ratio = paired(runs["sidecar save"], runs["sidecar GET"], "rps", lambda a, b: a / b)
            floor_txt = (
                spread(runs["floor save"], "rps") + " (floor save)" if self.floor_save else ""
            )
            d_txt, vs_txt, vs = self.versus(runs, "save", "rps")
            self.report.add(
                "S4a",
                "saturated save/s (1 item, 1 KB), 50 conns",
                spread(runs["sidecar save"], "rps"),
                floor_txt,
                "",
                "≥ 1.30× daprd",
                verdict(errors == 0 and not vs < 1.3),
                daprd=d_txt,
                vs=vs_txt,
            )
            daprd_ratio = (
                f"{paired(runs['daprd save'], runs['daprd GET'], 'rps', lambda a, b: a / b):.2f}×"
                " (its own)"
                if "daprd save" in runs
                else ""
            )
            self.report.add(
                "S4a",
                "save/s ÷ GET/s, saturated (paired)",
                f"{ratio:.2f}×",
                "",
                "",
                "≥ 0.90×",
                verdict(ratio >= 0.9 and errors == 0),
                daprd=daprd_ratio,
            )
            cs = median([r.values["cpu_us"] for r in runs["sidecar save"]])
            cg = median([r.values["cpu_us"] for r in runs["sidecar GET"]])
            cf = (spread(runs["floor save"], "cpu_us") + " (floor save)") if self.floor_save else ""
            d_txt, vs_txt, _ = self.versus(runs, "save", "cpu_us")
            self.report.add(
                "S4a",
                "server CPU per save (µs)",
                spread(runs["sidecar save"], "cpu_us"),
                cf,
                f"{cg / cs:.2f}× (GET/save CPU)",
                "",
                "info",
                daprd=d_txt,
                vs=vs_txt,
            )
        if errors:
            self.report.notes.append(f"S1/S4a: {errors} wrk errors (non-2xx, timeouts)")

    def s2(self) -> None:
        d, w = self.durations["S2"], self.durations["S2w"]
        targets = [
            ("hello", self.hello_port, "/hello", 1, self.hello.pid),
            ("floor GET", self.floor_port, "/v1.0/state/s/k{i}", NKEYS, self.floor.pid),
            ("sidecar GET", self.sidecar_port, "/v1.0/state/s/k{i}", NKEYS, self.sidecar.pid),
        ]
        if self.daprd:
            targets.append(
                ("daprd GET", self.daprd_port, "/v1.0/state/s/k{i}", NKEYS, self.daprd.pid)
            )
        runs: dict[str, list[Run]] = {t[0]: [] for t in targets}
        for i in range(self.runs):
            for name, port, path, n, pid in targets:
                log(f"S2 round {i + 1}/{self.runs}: {name}, 16 conns at 1000 QPS for {d}s")
                runs[name].append(
                    measured(name, partial(run_ratepace, port, path, n, d, w, self.load_cpu), pid)
                )
        self.report.raw["S2"] = {k: [r.__dict__ for r in v] for k, v in runs.items()}

        def m(name: str, key: str) -> float:
            return median([r.values[key] for r in runs[name]])

        def diff(a: float, b: float) -> float:
            return a - b

        added = {
            p: paired(runs["sidecar GET"], runs["hello"], p, diff) for p in ("p50", "p90", "p99")
        }
        floor_added = {
            p: paired(runs["floor GET"], runs["hello"], p, diff) for p in ("p50", "p90", "p99")
        }
        limits = {"p50": 0.3, "p90": 0.7, "p99": 1.0}
        rate = min(r.values["rate_share"] for r in runs["sidecar GET"])
        ok_share = min(r.values["ok_share"] for r in runs["sidecar GET"])
        has_daprd = "daprd GET" in runs
        self.report.add(
            "S2",
            "p50 / p90 / p99 at 1000 QPS, 16 conns (ms)",
            " / ".join(f"{m('sidecar GET', p):.2f}" for p in ("p50", "p90", "p99")),
            " / ".join(f"{m('hello', p):.2f}" for p in ("p50", "p90", "p99")) + " (hello)",
            " / ".join(f"+{added[p]:.2f}" for p in ("p50", "p90", "p99")),
            "≤ +0.30 / +0.70 / +1.00",
            verdict(all(added[p] <= limits[p] for p in limits)),
            daprd=" / ".join(f"{m('daprd GET', p):.2f}" for p in ("p50", "p90", "p99"))
            if has_daprd
            else "",
            vs=" / ".join(
                f"{paired(runs['sidecar GET'], runs['daprd GET'], p, lambda a, b: a / b):.2f}×"
                for p in ("p50", "p90", "p99")
            )
            if has_daprd
            else "",
        )
        self.report.add(
            "S2",
            "floor app at the same load (ms), for reference",
            " / ".join(f"{m('floor GET', p):.2f}" for p in ("p50", "p90", "p99")),
            "",
            " / ".join(f"+{floor_added[p]:.2f}" for p in ("p50", "p90", "p99")),
            "",
            "info",
        )
        self.report.add(
            "S2",
            "achieved rate (worst run), 2xx share",
            f"{rate * 100:.1f} %, {ok_share * 100:.2f} % 2xx",
            "",
            "",
            "≥ 99 %, 100 % 2xx",
            verdict(rate >= 0.99 and ok_share >= 0.9999),
        )
        p99_ratio = paired(runs["sidecar GET"], runs["hello"], "p99", lambda a, b: a / b)
        self.report.add(
            "S2",
            "p99 ratio sidecar/hello; max; share > 20 ms",
            f"{p99_ratio:.2f}×; max {m('sidecar GET', 'max'):.1f} ms; "
            f"{m('sidecar GET', 'over_20ms') * 100:.2f} %",
            "",
            "",
            "≤ 1.5× (anchors); none > 20 ms",
            "info: "
            + ("ok" if p99_ratio <= 1.5 and m("sidecar GET", "over_20ms") == 0 else "over"),
        )
        self.report.add(
            "S2",
            "server CPU at 1000 QPS (mCPU = µs per request)",
            f"{m('sidecar GET', 'cpu_us'):.0f}",
            f"{m('hello', 'cpu_us'):.0f} (hello), {m('floor GET', 'cpu_us'):.0f} (floor)",
            "",
            "",
            "info",
            daprd=f"{m('daprd GET', 'cpu_us'):.0f}" if has_daprd else "",
            vs=f"{paired(runs['sidecar GET'], runs['daprd GET'], 'cpu_us', lambda a, b: a / b):.2f}×"
            if has_daprd
            else "",
        )
        self.report.notes.append(
            f"S2 noise: {summarize_noise([r for v in runs.values() for r in v])}; generator send lag p50/p99 "
            f"{m('sidecar GET', 'send_lag_p50') * 1000:.0f}/"
            f"{m('sidecar GET', 'send_lag_p99') * 1000:.0f} µs"
        )

    def s3(self) -> None:
        d = self.durations["S3"]
        everything = self.server_cpu
        pinned = [self.redis.pid, self.sidecar.pid, self.floor.pid]
        names = ["redis", "sidecar", "floor"]
        targets = [
            ("floor GET", self.floor_port, self.floor.pid),
            ("sidecar GET", self.sidecar_port, self.sidecar.pid),
        ]
        if self.daprd:
            pinned.append(self.daprd.pid)
            names.append("daprd")
            targets.append(("daprd GET", self.daprd_port, self.daprd.pid))
        for pid in pinned:
            pin_tree(pid, everything)
        self.report.raw["S3_pinning"] = {
            n: allowed_cpus(p) for n, p in zip(names, pinned, strict=True)
        }
        runs: dict[str, list[Run]] = {name: [] for name, _, _ in targets}
        rounds = max(self.runs, 5)  # short runs; more rounds make the paired median robust
        try:
            for i in range(rounds):
                for name, port, pid in targets:
                    log(
                        f"S3 round {i + 1}/{rounds}: {name}, wrk -t1 -c1 -d{d}s, all on "
                        f"CPU {sorted(everything)}"
                    )
                    runs[name].append(
                        measured(
                            name,
                            partial(run_wrk, port, "get", "/v1.0/state/s", 1, d, everything),
                            pid,
                        )
                    )
        finally:
            pin_tree(self.redis.pid, self.load_cpu)
        self.report.raw["S3"] = {k: [r.__dict__ for r in v] for k, v in runs.items()}
        sc = median([r.values["p50"] for r in runs["sidecar GET"]])
        fl = median([r.values["p50"] for r in runs["floor GET"]])
        s3_ratio = paired(runs["sidecar GET"], runs["floor GET"], "p50", lambda a, b: a / b)
        d_txt, vs_txt, vs = self.versus(runs, "GET", "p50", 1000)
        self.report.add(
            "S3",
            "unloaded GET p50, 1 conn, all on one core (µs)",
            f"{sc * 1000:.0f}",
            f"{fl * 1000:.0f}",
            f"{s3_ratio:.2f}× (ratio of medians {sc / fl:.2f})",
            "≤ 1.50× floor; ≤ 1.00× daprd",
            verdict(s3_ratio <= 1.5 and not vs > 1.0),
            daprd=d_txt,
            vs=vs_txt,
        )
        sp99 = median([r.values["p99"] for r in runs["sidecar GET"]])
        self.report.add(
            "S3",
            "p99 (µs); p99/p50; serial GET/s",
            f"{sp99 * 1000:.0f}; {sp99 / sc:.2f}; "
            f"{median([r.values['rps'] for r in runs['sidecar GET']]):.0f}/s",
            f"{median([r.values['p99'] for r in runs['floor GET']]) * 1000:.0f}; ; "
            f"{median([r.values['rps'] for r in runs['floor GET']]):.0f}/s",
            "",
            "p99/p50 ≤ 2.5 (anchors)",
            "info: " + ("ok" if sp99 / sc <= 2.5 else "over"),
        )
        self.report.notes.append(
            f"S3 noise: {summarize_noise([r for v in runs.values() for r in v])}"
        )

    def s4_counts(self) -> None:
        """Redis commands and reads (≈ round trips) per API call, from INFO deltas."""
        port = self.sidecar_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        calls = 20 if self.quick else 50
        value = VALUE

        def get(i: int) -> None:
            assert http_call(port, "GET", f"/v1.0/state/s/k{i}", conn=conn)[0] == 200

        etags: dict[int, str] = {}

        def prepare_etags(base: int) -> None:
            for i in range(base, base + calls):
                etags[i] = http_call(port, "GET", f"/v1.0/state/s/w{i}", conn=conn)[1]["etag"]

        def save(i: int) -> None:
            body = b'[{"key":"w%d","value":%s}]' % (i, value)
            assert http_call(port, "POST", "/v1.0/state/s", body, conn=conn)[0] == 204

        def save_etag(i: int) -> None:
            body = b'[{"key":"w%d","value":%s,"etag":"%s"}]' % (i, value, etags[i].encode())
            status, _, data = http_call(port, "POST", "/v1.0/state/s", body, conn=conn)
            assert status == 204, (status, data)

        def bulk(i: int) -> None:
            keys = ",".join(f'"k{(i * BATCH + j) % NKEYS}"' for j in range(BATCH))
            status, _, data = http_call(
                port, "POST", "/v1.0/state/s/bulk", f'{{"keys":[{keys}]}}'.encode(), conn=conn
            )
            assert status == 200, (status, data[:200])
            assert data.count(b'"key"') == BATCH, data[:200]

        def txn(i: int) -> None:
            ops = ",".join(
                f'{{"operation":"upsert","request":{{"key":"t{(i * BATCH + j) % NKEYS}",'
                f'"value":{value.decode()}}}}}'
                for j in range(BATCH)
            )
            status, _, data = http_call(
                port,
                "POST",
                "/v1.0/state/s/transaction",
                f'{{"operations":[{ops}]}}'.encode(),
                conn=conn,
            )
            assert status == 204, (status, data)

        def delete(i: int) -> None:
            assert http_call(port, "DELETE", f"/v1.0/state/s/w{i}", conn=conn)[0] == 204

        def nothing(i: int) -> None:
            pass

        get(0)  # warm connection
        ops: list[tuple[str, Callable[[int], None], str, Callable[[int], None] | None]] = [
            ("(idle, calibration)", nothing, "", None),
            # No PTTL: `exp-version` says statecar wrote the key last, so `exp` is its expiry.
            ("GET", get, "HMGET×1, 1 round trip", None),
            ("save (no etag)", save, "EVALSHA×1, 1 round trip", None),
            ("save with etag", save_etag, "EVALSHA×1, 1 round trip", prepare_etags),
            (f"bulk of {BATCH}", bulk, f"HMGET×{BATCH}, 1 round trip", None),
            (f"transaction of {BATCH}", txn, "EVALSHA×1, 1 round trip", None),
            ("delete", delete, "EVALSHA×1 (info)", None),
        ]
        results: dict[str, dict[str, Any]] = {}
        baseline_reads = 0.0
        stats_addr = f"127.0.0.1:{self.r.sock.getsockname()[1]}"

        def counts(info: dict[str, str], field: str) -> dict[str, int]:
            return {
                k[8:].upper(): int(v.split(field + "=")[1].split(",")[0])
                for k, v in info.items()
                if k.startswith("cmdstat_")
            }

        for name, fn, _, prep in ops:
            # Pass 1, under MONITOR: which commands come from the client and which from inside
            # a script (MONITOR shows those as [0 lua]). MONITOR slows Redis, so nothing is
            # timed here.
            if prep:
                prep(0)
            marker = f"bench-{time.monotonic_ns()}".encode()
            mon = Monitor(self.redis_port, marker)
            for i in range(calls):
                fn(i)
            self.r(b"ECHO", marker)
            mon.done.wait(10)
            mon.gone(self.r)
            top: dict[str, int] = {}
            inner: dict[str, int] = {}
            for source, cmd in mon.seen:
                if source != stats_addr:
                    bucket = inner if source == "lua" else top
                    bucket[cmd] = bucket.get(cmd, 0) + 1
            # Pass 2, no MONITOR: INFO commandstats and total_reads_processed deltas.
            if prep:
                prep(calls)
            before = self.r.info()
            for i in range(calls, 2 * calls):
                fn(i)
            after = self.r.info()
            c0, c1 = counts(before, "calls"), counts(after, "calls")
            u0, u1 = counts(before, "usec"), counts(after, "usec")
            cmdstats = {
                k: n - c0.get(k, 0)
                for k, n in c1.items()
                if n - c0.get(k, 0) and k not in ("INFO", "ECHO")
            }
            # commandstats counts the calls scripts make too: top level = total - script-issued.
            derived = {k: n - inner.get(k, 0) for k, n in cmdstats.items() if n - inner.get(k, 0)}
            usec = sum(u1[k] - u0.get(k, 0) for k in derived)  # a script's time is its EVALSHA's
            reads = int(after["total_reads_processed"]) - int(before["total_reads_processed"])
            if fn is nothing:
                baseline_reads = reads
            results[name] = {
                "calls": calls,
                "commandstats_per_call": {k: v / calls for k, v in sorted(cmdstats.items())},
                "monitor_top_level_per_call": {k: v / calls for k, v in sorted(top.items())},
                "inside_scripts_per_call": {k: v / calls for k, v in sorted(inner.items())},
                "redis_reads_per_call": (reads - baseline_reads) / calls,
                "commandstats_top_level_per_call": {
                    k: v / calls for k, v in sorted(derived.items())
                },
                "redis_usec_per_call": usec / calls,
            }
        conn.close()
        self.report.raw["S4_counts"] = results
        for name, _, expect, _ in ops[1:]:
            res = results[name]
            top = res["commandstats_top_level_per_call"]
            if top != res["monitor_top_level_per_call"]:
                self.report.notes.append(
                    f"S4 {name}: commandstats {top} and MONITOR "
                    f"{res['monitor_top_level_per_call']} disagree"
                )
            shown = ", ".join(f"{k}×{v:g}" for k, v in top.items()) or "none"
            rt = res["redis_reads_per_call"]
            inner_txt = ", ".join(f"{k}×{v:g}" for k, v in res["inside_scripts_per_call"].items())
            if name == "GET":
                ok = top == {"HMGET": 1.0}
            elif name.startswith("bulk"):
                ok = top == {"HMGET": float(BATCH)}
            elif name == "delete":
                ok = None
            else:
                ok = top == {"EVALSHA": 1.0}
            ok_rt = abs(rt - 1.0) < 0.05
            self.report.add(
                "S4",
                f"redis commands per {name}",
                f"{shown}; {rt:.2f} round trips; {res['redis_usec_per_call']:.0f} µs in redis",
                "",
                f"in script: {inner_txt}" if inner_txt else "",
                expect,
                "info" if ok is None else verdict(ok and ok_rt),
            )
        idle = results["(idle, calibration)"]["commandstats_top_level_per_call"]
        if idle:
            self.report.notes.append(f"S4: commands seen while idle (per {calls} s/a): {idle}")

    def s4_latency(self) -> None:
        """`-c1` GET, save, bulk and transaction on statecar, daprd and (GET, save) the floor app,
        interleaved per operation, the default layout (servers on one CPU, wrk and redis on the
        other)."""
        d = self.durations["S4"]
        # Save just before transaction, and the sidecar's save last among the saves: its save
        # and transaction runs then sit back to back for S4b's pairing (txn ÷ save; `paired`,
        # bench/README.md, "Fifth pass"). The floor's save, not daprd's, runs just before the
        # sidecar's, so that whatever a Go process leaves running after its load (background GC,
        # the scavenger) cannot land on the sidecar's run on the servers' CPU.
        ops = [
            ("GET", "get"),
            (f"bulk({BATCH})", "bulk"),
            ("save", "save"),
            (f"txn({BATCH})", "txn"),
        ]
        servers = [("sidecar", self.sidecar_port, self.sidecar.pid)]
        if self.daprd:
            servers.append(("daprd", self.daprd_port, self.daprd.pid))
        runs: dict[str, list[Run]] = {}
        for i in range(self.runs):
            for op, mode in ops:
                here = list(servers)
                if mode == "get" or (mode == "save" and self.floor_save):
                    here.append(("floor", self.floor_port, self.floor.pid))
                if mode == "save":
                    here = here[1:] + here[:1]  # daprd, floor, sidecar
                for server, port, pid in here:
                    name = f"{server} {op}"
                    log(f"S4 round {i + 1}/{self.runs}: {name}, wrk -t1 -c1 -d{d}s")
                    runs.setdefault(name, []).append(
                        measured(
                            name,
                            partial(
                                run_wrk,
                                port,
                                mode,
                                "/v1.0/state/s",
                                1,
                                d,
                                self.load_cpu,
                                self.value_file,
                            ),
                            pid,
                        )
                    )
        self.report.raw["S4_latency"] = {k: [r.__dict__ for r in v] for k, v in runs.items()}

        def p50(name: str) -> float:
            return median([r.values["p50"] for r in runs[name]])

        def us(name: str) -> str:
            return f"{p50(name) * 1000:.0f}" if name in runs else ""

        for op, label in (("GET", "GET p50 at 1 conn (µs)"), ("save", "save p50 at 1 conn (µs)")):
            d_txt, vs_txt, vs = self.versus(runs, op, "p50", 1000)
            floor_ratio = (
                f"{paired(runs[f'sidecar {op}'], runs[f'floor {op}'], 'p50', lambda a, b: a / b):.2f}×"
                if f"floor {op}" in runs
                else ""
            )
            self.report.add(
                "S4",
                label,
                us(f"sidecar {op}"),
                us(f"floor {op}"),
                floor_ratio,
                "≤ 1.00× daprd",
                verdict(not vs > 1.0) if self.daprd else "info",
                daprd=d_txt,
                vs=vs_txt,
            )

        def own_ratio(server: str, a: str, b: str) -> float:
            return paired(runs[f"{server} {a}"], runs[f"{server} {b}"], "p50", lambda x, y: x / y)

        txn, bulk = f"txn({BATCH})", f"bulk({BATCH})"
        t_ratio = own_ratio("sidecar", txn, "save")
        b_ratio = own_ratio("sidecar", bulk, "GET")
        self.report.add(
            "S4b",
            f"transaction({BATCH} upserts) p50 ÷ save(1) p50, 1 conn",
            f"{t_ratio:.2f}× ({us(f'sidecar {txn}')} / {us('sidecar save')} µs)",
            "",
            "",
            "≤ 2.0×",
            verdict(t_ratio <= 2.0),
            daprd=f"{own_ratio('daprd', txn, 'save'):.2f}× ({us(f'daprd {txn}')} / "
            f"{us('daprd save')} µs)"
            if self.daprd
            else "",
            vs=self.versus(runs, txn, "p50")[1],
        )
        self.report.add(
            "S4c",
            f"bulk({BATCH} keys) p50 ÷ GET p50, 1 conn",
            f"{b_ratio:.2f}× ({us(f'sidecar {bulk}')} / {us('sidecar GET')} µs)",
            "",
            "",
            "≤ 2.5×",
            verdict(b_ratio <= 2.5),
            daprd=f"{own_ratio('daprd', bulk, 'GET'):.2f}× ({us(f'daprd {bulk}')} / "
            f"{us('daprd GET')} µs)"
            if self.daprd
            else "",
            vs=self.versus(runs, bulk, "p50")[1],
        )
        names = [op for op, _ in ops]
        self.report.add(
            "S4b",
            "server CPU per call, 1 conn (µs): GET / save / bulk / txn",
            " / ".join(
                f"{median([r.values['cpu_us'] for r in runs['sidecar ' + n]]):.0f}" for n in names
            ),
            "",
            "",
            "",
            "info",
            daprd=" / ".join(
                f"{median([r.values['cpu_us'] for r in runs['daprd ' + n]]):.0f}" for n in names
            )
            if self.daprd
            else "",
        )
        errors = sum(r.values["errors"] for v in runs.values() for r in v)
        if errors:
            self.report.notes.append(f"S4 latency runs: {errors} wrk errors")
        self.report.notes.append(
            f"S4 noise: {summarize_noise([r for v in runs.values() for r in v])}"
        )

    def s5(self) -> None:
        """Sustained saturation, sidecar then floor app (the floor's own tail says how much of
        the sidecar's tail is the machine's: wrk and redis share a CPU, neighbours preempt)."""
        d = self.durations["S5"]
        runs = {}
        for name, port, pid in (
            ("sidecar GET", self.sidecar_port, self.sidecar.pid),
            ("floor GET", self.floor_port, self.floor.pid),
        ):
            log(f"S5: {name}, wrk -t1 -c50 -d{d}s")
            runs[name] = measured(
                name, partial(run_wrk, port, "get", "/v1.0/state/s", 50, d, self.load_cpu), pid
            )
        self.report.raw["S5"] = {k: v.__dict__ for k, v in runs.items()}
        v, f = runs["sidecar GET"].values, runs["floor GET"].values
        ratio, floor_ratio = v["p99"] / v["p50"], f["p99"] / f["p50"]
        self.report.add(
            "S5",
            f"{d} s saturated GET: p50 / p99 / max (ms); GET/s",
            f"{v['p50']:.2f} / {v['p99']:.2f} / {v['max']:.1f}; {v['rps']:.0f}/s",
            f"{f['p50']:.2f} / {f['p99']:.2f} / {f['max']:.1f}; {f['rps']:.0f}/s",
            f"p99/p50 {ratio:.2f} (floor {floor_ratio:.2f})",
            "p99 ≤ 1.5× p50",
            verdict(ratio <= 1.5 and v["errors"] == 0),
        )
        self.report.notes.append(
            f"S5 noise: sidecar run {summarize_noise([runs['sidecar GET']])}; floor run "
            f"{summarize_noise([runs['floor GET']])}"
        )

    def cold_start(self) -> None:
        """exec → first 200 on a state GET, and RSS 1 s later: statecar and daprd, alternating.

        statecar starts twice per round: from the components folder (Dapr's YAML, as daprd
        reads it here) and as an injected pod's sidecar starts, from the operator's wiring file
        (JSON: no YAML parser) with the image's environment (MALLOC_MMAP_THRESHOLD_, Dockerfile)
        and an interpreter set up as the image's (`image_like_command`).
        """
        kinds = ["sidecar", "pod"] + (["daprd"] if self.daprd_bin else [])
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        # CPU time the process used until its first 200: unlike the wall time, a neighbour
        # busy on the same core hardly changes it.
        cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
        rss: dict[str, list[float]] = {kind: [] for kind in kinds}
        wiring_file = self.work / "wiring" / wiring.WIRING_FILE
        wiring_file.parent.mkdir(exist_ok=True)
        redis_store = ResolvedComponent(
            STORE, "state.redis", metadata={"redisHost": f"127.0.0.1:{self.redis_port}"}
        )
        document = wiring.with_components("default", [redis_store])
        wiring_file.write_bytes(wiring.encode_bytes(document))
        pod_command = image_like_command(self.work)
        for i in range(3):
            for kind in kinds:
                port = free_port()
                t0 = time.monotonic()
                if kind in ("sidecar", "pod"):
                    source = (
                        ["--components-path", str(self.components)]
                        if kind == "sidecar"
                        else ["--wiring-file", str(wiring_file)]
                    )
                    environment = clean_env()
                    if kind == "pod":
                        environment.update(IMAGE_ENV)
                    argv = [
                        *(pod_command if kind == "pod" else sidecar_command()),
                        "sidecar",
                        "--app-id",
                        APP_ID,
                        *source,
                        "--http-port",
                        str(port),
                        "--grpc-port",
                        str(free_port()),
                        "--metrics-port",
                        str(free_port()),
                        "--log-level",
                        "warning",
                    ]
                    t0 = time.monotonic()
                    proc = spawn(f"cold-{kind}{i}", argv, self.server_cpu, self.work, environment)
                    self.procs.append(proc)
                else:
                    proc, _, _ = self.start_daprd(f"cold-daprd{i}", self.components, port, False)
                try:
                    while True:
                        if proc.popen.poll() is not None:
                            raise RuntimeError(f"cold-start {kind} died:\n{proc.tail()}")
                        if raw_get_status(port, "/v1.0/state/s/k1") == 200:
                            elapsed = time.monotonic() - t0
                            cpu[kind].append(proc_ticks(proc.pid) / CLK_TCK)
                            break
                        if time.monotonic() - t0 > 30:
                            raise RuntimeError(f"cold-start {kind} did not answer in 30 s")
                        time.sleep(0.002)
                    times[kind].append(elapsed)
                    time.sleep(1.0)
                    rss[kind].append(rss_mb(proc.pid))
                finally:
                    proc.stop()
        self.report.raw["cold_start_s"] = times
        self.report.raw["cold_start_cpu_s"] = cpu
        self.report.raw["rss_idle_cold_mb"] = rss
        cs = median(times["sidecar"])
        d_cs = median(times["daprd"])
        vs = median([a / b for a, b in zip(times["sidecar"], times["daprd"], strict=False)])
        self.report.add(
            "M",
            "cold start: exec → first 200 on a state GET (s), median of 3",
            f"{cs:.3f} ({min(times['sidecar']):.3f}–{max(times['sidecar']):.3f})",
            "",
            "",
            "≤ 0.12 s (≤ 2.5× daprd)",
            verdict(cs <= 0.12 or vs <= 2.5),
            daprd=f"{d_cs:.3f} ({min(times['daprd']):.3f}–{max(times['daprd']):.3f})"
            if times["daprd"]
            else "",
            vs=f"{vs:.2f}×" if times["daprd"] else "",
        )
        pod = median(times["pod"])
        pod_vs = median([a / b for a, b in zip(times["pod"], times["daprd"], strict=False)])
        self.report.add(
            "M",
            "cold start of an injected pod's sidecar: the operator's wiring file, the image's"
            " environment (s), median of 3",
            f"{pod:.3f} ({min(times['pod']):.3f}–{max(times['pod']):.3f})",
            "",
            "",
            "≤ 0.12 s (≤ 2.5× daprd)",
            verdict(pod <= 0.12 or pod_vs <= 2.5),
            daprd=f"{d_cs:.3f} (from its folder)" if times["daprd"] else "",
            vs=f"{pod_vs:.2f}×" if times["daprd"] else "",
        )
        cpu_vs = median([a / b for a, b in zip(cpu["sidecar"], cpu["daprd"], strict=False)])
        self.report.add(
            "M",
            "cold start: CPU time used until that first 200 (s; less noise-prone)",
            f"{median(cpu['sidecar']):.2f} ({min(cpu['sidecar']):.2f}–{max(cpu['sidecar']):.2f})",
            "",
            "",
            "",
            "info",
            daprd=f"{median(cpu['daprd']):.2f} ({min(cpu['daprd']):.2f}–{max(cpu['daprd']):.2f})"
            if cpu["daprd"]
            else "",
            vs=f"{cpu_vs:.2f}×" if cpu["daprd"] else "",
        )
        self.idle_rss = median(rss["sidecar"])
        floor_idle = self.report.raw.get("rss_idle_floor_mb", float("nan"))
        d_rss = median(rss["daprd"])
        self.report.add(
            "M",
            "RSS idle (MiB): fresh process 1 s after its first GET",
            f"{self.idle_rss:.1f}",
            f"{floor_idle:.1f} (floor app)",
            f"{self.idle_rss / floor_idle:.2f}×",
            "≤ 40 MiB",
            verdict(self.idle_rss <= 40),
            daprd=f"{d_rss:.1f}" if rss["daprd"] else "",
            vs=f"{self.idle_rss / d_rss:.2f}×" if rss["daprd"] else "",
        )

    def backends(self) -> None:
        """SQLite and PostgreSQL (and the in-memory store): statecar, daprd and the raw driver.

        statecar and daprd each get their own table (their layouts differ: statecar's SQL stores
        refuse a table they did not create) and are seeded through their own API with the same
        keys and values; the floor app reads statecar's table with the raw driver (GET only).
        Rounds interleave statecar, daprd and the floor per operation, as S1 does.
        """
        d = self.durations["B"]
        folder = self.work / "components-other"
        folder.mkdir()
        daprd_folder = self.work / "components-daprd-other"
        daprd_folder.mkdir()
        for where in (folder, daprd_folder):
            (where / "memory.yaml").write_text(component_yaml("memory", "state.in-memory", {}))
        (folder / "sqlite.yaml").write_text(
            component_yaml(
                # statecar's own layout: a Dapr Component would otherwise get daprd's.
                "sqlite",
                "state.sqlite",
                {"connectionString": str(self.work / "bench.db"), "layout": "statecar"},
            )
        )
        (daprd_folder / "sqlite.yaml").write_text(
            component_yaml(
                "sqlite", "state.sqlite", {"connectionString": str(self.work / "daprd.db")}
            )
        )
        names = ["memory", "sqlite"]
        floors: dict[str, tuple[str, str]] = {
            "sqlite": ("sqlite-floor", str(self.work / "bench.db"))
        }
        with contextlib.ExitStack() as stack:
            pg = None
            try:
                if str(ROOT) not in sys.path:
                    sys.path.append(str(ROOT))  # the tests' server helpers are not installed
                from tests.support import pg_server

                pg = stack.enter_context(pg_server.running_postgres())
            except Exception as exc:  # noqa: BLE001 - information only
                self.report.notes.append(f"B: PostgreSQL not measured: {exc}")
            if pg is not None:
                for pid in descendants(os.getpid()):
                    with contextlib.suppress(OSError):
                        if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes():
                            pin_tree(pid, self.load_cpu)
                (folder / "postgres.yaml").write_text(
                    component_yaml(
                        "postgres",
                        "state.postgresql",
                        {"connectionString": pg.dsn, "layout": "statecar"},
                    )
                )
                (daprd_folder / "postgres.yaml").write_text(
                    component_yaml(
                        "postgres",
                        "state.postgresql",
                        {
                            "connectionString": pg.dsn,
                            "tableName": "daprd_state",
                            "metadataTableName": "daprd_metadata",
                        },
                    )
                )
                names.append("postgres")
                floors["postgres"] = ("postgres-floor", pg.dsn)
            port = free_port()
            proc = self.start_sidecar("sidecar-other", folder, port)
            servers: list[tuple[str, int, int]] = [("sidecar", port, proc.pid)]
            if self.daprd_bin:
                dproc, dport, _ = self.start_daprd("daprd-other", daprd_folder)
                servers.append(("daprd", dport, dproc.pid))
            for _, server_port, _ in servers:
                for name in names:
                    self.seed(server_port, name, ["k", "w", "t"])
            floor_ports: dict[str, tuple[int, int]] = {}
            for name, (app, floor_target) in floors.items():
                fport = free_port()
                argv = [sys.executable, str(BENCH / "floor_app.py"), "--app", app]
                argv += ["--port", str(fport), "--target", floor_target]
                argv += ["--key-prefix", f"{APP_ID}||"]
                fproc = spawn(f"floor-{name}", argv, self.server_cpu, self.work)
                self.procs.append(fproc)
                wait_http(fproc, fport, f"/v1.0/state/{name}/nothing", {204})
                floors_answer = http_call(fport, "GET", f"/v1.0/state/{name}/k7")
                sidecars_answer = http_call(port, "GET", f"/v1.0/state/{name}/k7")
                if (floors_answer[0], floors_answer[2], floors_answer[1].get("etag")) != (
                    sidecars_answer[0],
                    sidecars_answer[2],
                    sidecars_answer[1].get("etag"),
                ):
                    raise RuntimeError(f"the {name} floor and the sidecar disagree on k7")
                floor_ports[name] = (fport, fproc.pid)
            runs: dict[str, list[Run]] = {}
            plan = [("GET/s, 50 conns", "get", 50), ("save/s, 50 conns", "save", 50)]
            plan += [("GET p50, 1 conn", "get", 1), ("save p50, 1 conn", "save", 1)]
            plan += [(f"txn({BATCH}) p50, 1 conn", "txn", 1)]
            for i in range(self.runs):
                for name in names:
                    for label, mode, conns in plan:
                        here = list(servers)
                        if mode == "get" and name in floor_ports:
                            here.append(("floor", *floor_ports[name]))
                        for server, server_port, pid in here:
                            key = f"{name} {label} {server}"
                            log(f"B round {i + 1}/{self.runs}: {key}, wrk -t1 -c{conns} -d{d}s")
                            runs.setdefault(key, []).append(
                                measured(
                                    key,
                                    partial(
                                        run_wrk,
                                        server_port,
                                        mode,
                                        f"/v1.0/state/{name}",
                                        conns,
                                        d,
                                        self.load_cpu,
                                        self.value_file,
                                    ),
                                    pid,
                                )
                            )
            self.report.raw["B"] = {k: [r.__dict__ for r in v] for k, v in runs.items()}
            self.report.raw["rss_other_backends_mb"] = rss_mb(proc.pid)
        for name in names:
            for label, _, conns in plan:
                figure, scale = ("rps", 1.0) if conns > 1 else ("p50", 1000.0)
                mine, theirs, floor = (
                    runs.get(f"{name} {label} {server}", [])
                    for server in ("sidecar", "daprd", "floor")
                )
                vs = paired(mine, theirs, figure, lambda a, b: a / b) if theirs else float("nan")
                vs_floor = paired(mine, floor, figure, lambda a, b: a / b) if floor else None
                target, ok = B_TARGETS.get((name, label), ("", None))
                errors = sum(r.values["errors"] for r in mine + theirs + floor)
                self.report.add(
                    "B",
                    f"{name}: {label}" + (" (µs)" if conns == 1 else ""),
                    figure_text(mine, figure, scale),
                    figure_text(floor, figure, scale, cpu=False),
                    f"{vs_floor:.2f}×" if vs_floor is not None else "",
                    target,
                    ("info" if ok is None or vs != vs else verdict(ok(vs)))
                    + (f", {errors} errors" if errors else ""),
                    daprd=figure_text(theirs, figure, scale),
                    vs=f"{vs:.2f}×" if theirs else "",
                )

    def grpc(self) -> None:
        """The Dapr gRPC API: statecar's gRPC port against daprd's, driven by bench/grpc_load
        (grpc-go, the Go SDK's client stack) on the load CPU; GetState and SaveState, 1 and 50
        concurrent calls, interleaved per round."""
        if not self.daprd:
            self.report.notes.append("G: not measured without daprd")
            return
        import grpc_vs_http  # bench/grpc_vs_http.py: builds (once) and runs the Go client

        binary = grpc_vs_http.build_load_generator()
        d = self.durations["S4"]
        servers = [
            ("sidecar", self.sidecar_grpc, self.sidecar.pid),
            ("daprd", self.daprd_grpc_port, self.daprd.pid),
        ]
        plan = [
            ("GetState p50, 1 conn (µs)", "grpc-get", 1),
            ("SaveState p50, 1 conn (µs)", "grpc-save", 1),
            ("GetState/s, 50 concurrent", "grpc-get", 50),
            ("SaveState/s, 50 concurrent", "grpc-save", 50),
        ]

        def call(mode: str, port: int, conns: int) -> dict[str, float]:
            out = grpc_vs_http.load(binary, mode, f"127.0.0.1:{port}", conns, d, self.load_cpu)
            return {
                "requests": out["requests"],
                "rps": out["requests"] / out["seconds"],
                "p50": out["p50_us"] / 1000,
                "p99": out["p99_us"] / 1000,
                "errors": out["errors"],
            }

        runs: dict[str, list[Run]] = {}
        for i in range(self.runs):
            for label, mode, conns in plan:
                for server, port, pid in servers:
                    key = f"{server} {label}"
                    log(f"G round {i + 1}/{self.runs}: {key}, {mode} -c {conns} -d {d}")
                    runs.setdefault(key, []).append(
                        measured(key, partial(call, mode, port, conns), pid)
                    )
        self.report.raw["G"] = {k: [r.__dict__ for r in v] for k, v in runs.items()}
        for label, _, conns in plan:
            figure, scale = ("rps", 1.0) if conns > 1 else ("p50", 1000.0)
            d_txt, vs_txt, vs = self.versus(runs, label, figure, scale)
            faster = conns > 1
            self.report.add(
                "G",
                label,
                figure_text(runs[f"sidecar {label}"], figure, scale),
                "",
                "",
                "≥ 1.30× daprd" if faster else "≤ 1.00× daprd",
                verdict(vs >= 1.3 if faster else vs <= 1.0),
                daprd=d_txt,
                vs=vs_txt,
            )

    # -- driver --------------------------------------------------------------------------------

    def rss_row(self, label: str, key: str) -> None:
        value = rss_mb(self.sidecar.pid)
        self.report.raw[key] = value
        idle = getattr(self, "idle_rss", None) or self.report.raw["rss_idle_main_mb"]
        self.report.add(
            "M",
            f"RSS (MiB) {label}",
            f"{value:.1f}",
            f"{rss_mb(self.floor.pid):.1f} (floor app)",
            f"+{value - idle:.1f} vs idle",
            "≤ idle + 5 MiB, ≤ 48 MiB",
            verdict(value <= idle + 5 and value <= 48),
        )

    def main(self, scenarios: set[str]) -> Report:
        started = time.monotonic()
        self.start()
        log(
            f"started: redis :{self.redis_port}, sidecar :{self.sidecar_port}, floor "
            f":{self.floor_port}, hello :{self.hello_port}; work dir {self.work}"
        )
        if "M" in scenarios:
            self.cold_start()
        if "S4" in scenarios:
            self.s4_counts()
        if "S1" in scenarios or "S4" in scenarios:
            self.saturated_rounds("S1" in scenarios, "S4" in scenarios)
            if "M" in scenarios:
                self.rss_row("after S1 (saturated GET/save)", "rss_after_s1_mb")
        if "S2" in scenarios:
            self.s2()
        if "S3" in scenarios:
            self.s3()
        if "S4" in scenarios:
            self.s4_latency()
        if "S5" in scenarios:
            self.s5()
            if "M" in scenarios:
                self.rss_row(f"after S5 ({self.durations['S5']} s saturated)", "rss_after_s5_mb")
        if "G" in scenarios:
            self.grpc()
        if "B" in scenarios:
            self.backends()
        self.report.raw["environment"]["uptime_at_end"] = subprocess.run(
            ["uptime"], capture_output=True, text=True
        ).stdout.strip()
        self.report.raw["elapsed_s"] = time.monotonic() - started
        return self.report


def render(report: Report) -> str:
    env = report.raw.get("environment", {})
    order = {
        s: i
        for i, s in enumerate(("S1", "S2", "S3", "S4", "S4a", "S4b", "S4c", "S5", "M", "G", "B"))
    }
    report.rows.sort(key=lambda r: order.get(r.scenario, 99))
    lines = [
        f"statecar bench @ {env.get('commit')} ({env.get('modified_tracked_files')} tracked files "
        f"modified in the work tree), {env.get('date')}",
        f"machine: {env.get('cpu')}, kernel {env.get('kernel')}, Python {env.get('python')}, "
        f"redis {env.get('redis')}",
        f"pinning (allowed CPUs): {env.get('pinning')}; S3: everything on the server CPU",
        f"load: {env.get('uptime_at_start')}  →  {env.get('uptime_at_end')}",
        f"durations (s): {report.raw.get('durations_s')}; elapsed {report.raw.get('elapsed_s', 0):.0f} s",
        "",
        report.markdown(),
        "",
        *[f"- {n}" for n in report.notes],
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (~3 min in all)")
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help="comma-separated subset of " + ",".join(ALL_SCENARIOS),
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per target (>= 3)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results", help="where last-run.json / last-run.md go"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    scenarios = {s.strip().upper() for s in args.scenarios.split(",") if s.strip()}
    unknown = scenarios - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    if args.runs < 3:
        log("warning: fewer than 3 runs per target; medians will be weak")
    if (os.cpu_count() or 1) < 2 and args.load_cpu == args.server_cpu == 0:
        pass
    elif args.load_cpu >= (os.cpu_count() or 1):
        args.load_cpu = args.server_cpu
    bench = Bench(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = bench.main(scenarios)
    finally:
        bench.stop()
        signal.signal(signal.SIGTERM, previous)
    text = render(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "last-run.md").write_text(text + "\n")
    (args.out / "last-run.json").write_text(
        json.dumps(
            {"rows": [r.__dict__ for r in report.rows], "notes": report.notes, **report.raw},
            indent=1,
            default=str,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
