"""
Start-up runs with the cyclic GC paused (issue 12, cold start): the ~46,000 objects the imports
and the stores allocate all live as long as the process, and the ~50 collections they would
trigger found nothing to free. Serving turns the collector back on, with its tuned thresholds.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from tests.support.sidecar import running_sidecar

from statecar_cli.main import main


def _collections(ops: httpx.Client) -> float:
    """The sidecar's generation-0 collections so far (`python_gc_collections_total`)."""
    scrape = ops.get("/metrics").text
    match = re.search(r'^python_gc_collections_total\{generation="0"\} (\S+)$', scrape, re.M)
    assert match is not None, scrape
    return float(match.group(1))


def _collections_before_the_command_runs() -> int:
    """Collections the interpreter's own start-up and the CLI's import make (site-packages'
    .pth files, argparse): before the command pauses the collector, and not statecar's."""
    probe = "import gc, statecar_cli.main; print(gc.get_stats()[0]['collections'])"
    return int(subprocess.check_output([sys.executable, "-c", probe], env=os.environ.copy()))


def test_start_up_collects_nothing_and_serving_collects_again(tmp_path: Path) -> None:
    (tmp_path / "memory.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\n"
        "spec:\n  type: state.in-memory\n  version: v1\n  metadata: []\n"
    )
    with (
        running_sidecar(components_path=tmp_path, app_id="gc") as sidecar,
        httpx.Client(base_url=sidecar.ops_url) as ops,
        httpx.Client(base_url=sidecar.url) as client,
    ):
        # Measured before the pause: 87 generation-0 collections by the time it served, 62
        # more than the interpreter and the CLI's import make (25 here).
        assert _collections(ops) <= _collections_before_the_command_runs() + 3
        value = "x" * 100
        for i in range(3000):  # ~20 container allocations a call: past the 50,000 threshold
            assert client.post("/v1.0/state/statestore", json=[{"key": f"k{i}", "value": value}])
        assert _collections(ops) >= 1


def test_a_sidecar_command_that_returns_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    """In-process callers (tests, `statecar run`'s host) get the collector back on."""
    assert gc.isenabled()
    missing = tmp_path / "missing"
    assert main(["sidecar", "--app-id", "a", "--components-path", str(missing)]) == 2
    assert gc.isenabled()
