"""
Issue 14, item 4: large requests do not leave the sidecar's memory behind.

A real sidecar process takes 200 saves of 3 MiB values, bulk gets and transactions of the same
size; once the keys are deleted its resident set (its own `process_resident_memory_bytes`) is
back within 50 MB of where it started.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.memory_workload import BOUND, MEMORY, MIB, rss_around_workload
from tests.support.sidecar import SidecarProcess


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    (tmp_path / "store.yaml").write_text(MEMORY)
    process = SidecarProcess(app_id="memory", components_path=tmp_path)
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def test_rss_returns_within_50_mb_after_3_mib_saves_bulk_gets_and_transactions(
    sidecar: SidecarProcess,
) -> None:
    """200 saves (8 clients at once, as an app's connection pool would), as many bulk gets and
    transactions; before the fix RSS stayed 85 to 164 MiB up (statecar_sidecar/memory.py)."""
    start, end = rss_around_workload(
        f"{sidecar.url}/v1.0/state/store", f"{sidecar.ops_url}/metrics"
    )
    print(f"RSS start {start / MIB:.1f} MiB, end {end / MIB:.1f} MiB")
    assert end - start <= BOUND, (
        f"RSS grew by {(end - start) / MIB:.1f} MiB (start {start / MIB:.1f} MiB, "
        f"end {end / MIB:.1f} MiB)"
    )
