"""
Issue 14, item 4, as the drop-in runs: `statecar daprd` started with `dapr run`'s argv takes 200
saves of 3 MiB values, as many bulk gets and transactions (8 clients at once), and its resident
set, read from its own `process_resident_memory_bytes`, comes back within 50 MB of where it
started. The workload is tests/support/memory_workload.py's, shared with the hostile tier.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support import processes
from tests.support.dapr_run import Daprd, dapr_home, dapr_run_argv, free_ports
from tests.support.memory_workload import BOUND, MEMORY, MIB, rss_around_workload


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


def test_rss_returns_within_50_mb_after_3_mib_saves_bulk_gets_and_transactions(
    running: Running,
) -> None:
    start, end = rss_around_workload(f"{running.url}/v1.0/state/store", running.metrics)
    print(f"statecar daprd RSS start {start / MIB:.1f} MiB, end {end / MIB:.1f} MiB")
    assert end - start <= BOUND, f"RSS grew by {(end - start) / MIB:.1f} MiB"
