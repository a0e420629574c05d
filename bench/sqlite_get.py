#!/usr/bin/env python3
"""
One GET at a time from the SQLite store, in-process: its CPU and its latency per call.

Seeds 1,000 keys (1 KB JSON values) into a fresh file through the store, then times
`store.get` back to back, one call in flight (the B row "GET p50, 1 conn" without HTTP), for
statecar's layout, daprd's layout (`layout: dapr`), the in-memory store, and two floors on the
same file: the raw stdlib driver inline on the event loop (bench/floor_app.py `sqlite-floor`)
and the same SELECT handed to a one-thread executor (what a thread hand-off alone costs).
Variants are interleaved per round; the figures are medians over rounds of the process's CPU
time (time.process_time, which neighbours hardly move) and of the wall time per call.

    python bench/sqlite_get.py [--calls 20000] [--rounds 5] [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvloop

from statecar_sidecar.stores.base import SetOp, StateStore
from statecar_sidecar.stores.memory.store import MemoryStore
from statecar_sidecar.stores.sqlite import SQLiteStore

NKEYS = 1000
VALUE = b'{"v":"' + b"x" * 1016 + b'"}'
SELECT = 'SELECT value, etag, expire_at FROM "state" WHERE key = ? AND (expire_at IS NULL OR expire_at > ?)'


async def seed(store: StateStore) -> None:
    for i in range(NKEYS):
        await store.set(SetOp(f"k{i}", VALUE))


async def main(calls: int, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="statecar-sqlite-get-"))
    own = await SQLiteStore.open({"connectionString": str(folder / "own.db"), "layout": "statecar"})
    dapr = await SQLiteStore.open({"connectionString": str(folder / "dapr.db"), "layout": "dapr"})
    memory = await MemoryStore.open({})
    for store in (own, dapr, memory):
        await seed(store)
    raw = sqlite3.connect(folder / "own.db", isolation_level=None, check_same_thread=False)
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()

    def raw_read(key: str) -> list[tuple[object, ...]]:
        return raw.execute(SELECT, (key, time.time())).fetchall()

    async def raw_inline(key: str) -> object:
        return raw_read(key)

    async def raw_handoff(key: str) -> object:
        return await loop.run_in_executor(executor, raw_read, key)

    variants: dict[str, Callable[[str], Awaitable[object]]] = {
        "sqlite (statecar layout)": own.get,
        "sqlite (dapr layout)": dapr.get,
        "memory": memory.get,
        "raw driver inline (floor)": raw_inline,
        "raw driver via 1 thread": raw_handoff,
    }
    keys = [f"k{i % NKEYS}" for i in range(calls)]
    for fn in variants.values():  # warm the caches
        for key in keys[:NKEYS]:
            assert await fn(key)
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for key in keys:
                await fn(key)
            cpu[name].append((time.process_time() - c0) / calls * 1e6)
            wall[name].append((time.perf_counter() - w0) / calls * 1e6)
    print(f"{calls} GETs x {rounds} rounds, one in flight; median (min-max) µs per call")
    print(f"{'variant':28} {'CPU':>20} {'wall':>20}")
    for name in variants:
        c, w = cpu[name], wall[name]
        print(
            f"{name:28} {statistics.median(c):7.1f} ({min(c):5.1f}-{max(c):5.1f})"
            f" {statistics.median(w):7.1f} ({min(w):5.1f}-{max(w):5.1f})"
        )
    raw.close()
    executor.shutdown()
    for store in (own, dapr, memory):
        await store.close()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, help="pin to this CPU (the B rows pin the sidecar)")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(main(args.calls, args.rounds))
