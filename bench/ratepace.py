"""
A constant-rate HTTP/1.1 load generator for S2 (wrk2 is not packaged for Debian 12).

C keep-alive connections share one schedule: request i is due at t0 + i/rate and goes to
connection i mod C, so with the default C=16 at 1000 QPS each connection sends every 16 ms and
the sends are spread evenly (1 ms apart), not in bursts of 16. Latency runs from the INTENDED
send time to the last byte of the response: a request that had to wait for its connection (the
previous answer was late) is charged that wait, so there is no coordinated omission.

One thread, one epoll: a periodic `timerfd` (CLOCK_MONOTONIC, armed through ctypes because
`os.timerfd_*` only arrives in Python 3.13) gives nanosecond-resolution send times, unlike
epoll/asyncio timeouts, which round up to whole milliseconds. Responses are parsed by httptools.
The generator's own CPU time is small (~30-50 µs per request), and identical for every target,
so differences between targets are the servers' own.

    python bench/ratepace.py --url-base http://127.0.0.1:3500 --paths /v1.0/state/s/k{i} \
        --keys 1000 --rate 1000 --connections 16 --duration 10 --warmup 1

Prints one JSON line: achieved rate, counts, status classes, p50/p90/p99/p99.9/max (ms),
the share of requests over 20 ms, and how late the generator itself woke (send lag).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import math
import os
import select
import socket
import struct
import sys
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import httptools

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timerfd(start_ns: int, interval_ns: int) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd: int = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create")
    spec = _Itimerspec(
        _Timespec(interval_ns // 1_000_000_000, interval_ns % 1_000_000_000),
        _Timespec(start_ns // 1_000_000_000, start_ns % 1_000_000_000),
    )
    if libc.timerfd_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
        raise OSError(ctypes.get_errno(), "timerfd_settime")
    return fd


class _Conn:
    __slots__ = ("backlog", "busy", "done", "gen", "intended", "parser", "sock", "status")

    def __init__(self, host: str, port: int, gen: Generator) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.backlog: deque[tuple[int, bytes]] = deque()
        self.busy = False
        self.intended = 0
        self.status = 0
        self.done = False
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.done = True

    def send(self, intended: int, request: bytes) -> None:
        self.busy = True
        self.intended = intended
        self.done = False
        self.sock.sendall(request)  # a few hundred bytes: always fits the socket buffer


class Generator:
    def __init__(self, host: str, port: int, requests: list[bytes], connections: int) -> None:
        self.conns = [_Conn(host, port, self) for _ in range(connections)]
        self.requests = requests

    def run(self, rate: float, duration: float, warmup: float) -> dict[str, Any]:
        interval = round(1e9 / rate)
        total = int((duration + warmup) * rate)
        skip = int(warmup * rate)
        start = time.monotonic_ns() + 50_000_000
        tfd = _timerfd(start, interval)
        ep = select.epoll()
        ep.register(tfd, select.EPOLLIN)
        by_fd = {}
        for conn in self.conns:
            ep.register(conn.sock.fileno(), select.EPOLLIN)
            by_fd[conn.sock.fileno()] = conn
        latencies: list[int] = []
        lags: list[int] = []
        statuses: dict[int, int] = {}
        sent = 0
        completed = 0
        measured_done = 0
        last_done = 0
        first_measured = start + skip * interval
        nconn = len(self.conns)
        nreq = len(self.requests)
        requests = self.requests
        conns = self.conns
        deadline = start + total * interval + 5_000_000_000
        errors = 0
        while completed < total:
            now = time.monotonic_ns()
            if now > deadline:
                break
            for fd, _ in ep.poll(1.0):
                if fd == tfd:
                    (expirations,) = struct.unpack("Q", os.read(tfd, 8))
                    woke = time.monotonic_ns()
                    for _ in range(expirations):
                        if sent >= total:
                            break
                        intended = start + sent * interval
                        if sent >= skip:
                            lags.append(woke - intended)
                        conn = conns[sent % nconn]
                        request = requests[sent % nreq]
                        if conn.busy:
                            conn.backlog.append((intended, request))
                        else:
                            conn.send(intended, request)
                        sent += 1
                    continue
                conn = by_fd[fd]
                try:
                    data = conn.sock.recv(262144)
                except BlockingIOError:
                    continue
                if not data:
                    errors += 1
                    ep.unregister(fd)
                    completed += 1 + len(conn.backlog)
                    continue
                conn.parser.feed_data(data)
                if not conn.done:
                    continue
                finished = time.monotonic_ns()
                completed += 1
                if conn.intended >= first_measured:
                    latencies.append(finished - conn.intended)
                    statuses[conn.status // 100] = statuses.get(conn.status // 100, 0) + 1
                    measured_done += 1
                    last_done = finished
                conn.busy = False
                if conn.backlog:
                    conn.send(*conn.backlog.popleft())
        os.close(tfd)
        ep.close()
        for conn in conns:
            conn.sock.close()
        latencies.sort()
        lags.sort()
        expected = total - skip

        def pct(values: list[int], p: float) -> float:
            if not values:
                return float("nan")
            index = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
            return values[index] / 1e6

        span = (last_done - first_measured) / 1e9 if last_done else float("nan")
        return {
            "target_rate": rate,
            "achieved_rate": measured_done / span if span and span > 0 else 0.0,
            "expected": expected,
            "requests": completed,
            "completed": measured_done,
            "errors": errors,
            "status": {f"{k}xx": v for k, v in sorted(statuses.items())},
            "p50": pct(latencies, 50),
            "p90": pct(latencies, 90),
            "p99": pct(latencies, 99),
            "p999": pct(latencies, 99.9),
            "max": latencies[-1] / 1e6 if latencies else float("nan"),
            "over_20ms": sum(1 for v in latencies if v > 20_000_000) / max(1, len(latencies)),
            "send_lag_p50": pct(lags, 50),
            "send_lag_p99": pct(lags, 99),
        }


def build_requests(host: str, port: int, paths: list[str]) -> list[bytes]:
    return [
        f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ratepace\r\n\r\n".encode()
        for p in paths
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url-base", required=True)
    parser.add_argument("--path", required=True, help="path; '{i}' is replaced by 0..keys-1")
    parser.add_argument("--keys", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    args = parser.parse_args()
    url = urlsplit(args.url_base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    paths = [args.path.replace("{i}", str(i)) for i in range(args.keys)]
    gen = Generator(host, port, build_requests(host, port, paths), args.connections)
    result = gen.run(args.rate, args.duration, args.warmup)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
