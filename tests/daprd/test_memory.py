"""
Issue 14, item 4, as the drop-in runs: `statecar daprd` started with `dapr run`'s argv takes 200
saves of 3 MiB values, as many bulk gets and transactions (8 clients at once), and its resident
set, read from its own `process_resident_memory_bytes`, comes back within 50 MB of where it
started. The workload is the hostile tier's (tests/hostile/test_memory_bound.py), one definition.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.hostile.test_memory_bound import BOUND, MEMORY, MIB, _client_work
from tests.support import processes
from tests.support.dapr_run import Daprd, dapr_home, dapr_run_argv, free_ports


@dataclass
class Running:
    url: str
    metrics: str


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    home = dapr_home(tmp_path)
    resources = home / "components"
    resources.mkdir()
    (resources / "store.yaml").write_text(MEMORY)
    ports = free_ports()
    daprd = Daprd(home, dapr_run_argv(home, resources, "memory", ports))
    url = f"http://127.0.0.1:{ports['http']}"
    try:
        daprd.wait_ready(url)
        yield Running(url, f"http://127.0.0.1:{ports['metrics']}/metrics")
    finally:
        assert processes.stop(daprd.process, sig=signal.SIGINT) == 0, daprd.log


def _rss(running: Running) -> float:
    for line in httpx.get(running.metrics, timeout=10).text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("process_resident_memory_bytes is not exposed")


def test_rss_returns_within_50_mb_after_3_mib_saves_bulk_gets_and_transactions(
    running: Running,
) -> None:
    base = f"{running.url}/v1.0/state/store"
    with httpx.Client(timeout=60) as client:
        for i in range(5):  # warm the code paths with small requests
            assert client.post(base, json=[{"key": f"w{i}", "value": i}]).status_code == 204
            client.post(f"{base}/bulk", json={"keys": [f"w{i}"]})
            client.delete(f"{base}/w{i}")
    start = _rss(running)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda worker: _client_work(base, worker), range(8)))
    end = _rss(running)
    deadline = time.monotonic() + 5
    while end - start > BOUND and time.monotonic() < deadline:
        time.sleep(0.5)
        end = _rss(running)
    print(f"statecar daprd RSS start {start / MIB:.1f} MiB, end {end / MIB:.1f} MiB")
    assert end - start <= BOUND, f"RSS grew by {(end - start) / MIB:.1f} MiB"
