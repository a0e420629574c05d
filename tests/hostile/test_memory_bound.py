"""
Issue 14, item 4: large requests do not leave the sidecar's memory behind.

A real sidecar process takes 200 saves of 3 MiB values, bulk gets and transactions of the same
size; once the keys are deleted its resident set (its own `process_resident_memory_bytes`) is
back within 50 MB of where it started.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from tests.support.sidecar import SidecarProcess

MIB = 1024 * 1024
BOUND = 50 * 1000 * 1000
MEMORY = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: store}\n"
    "spec: {type: state.in-memory, version: v1}\n"
)


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    (tmp_path / "store.yaml").write_text(MEMORY)
    process = SidecarProcess(app_id="memory", components_path=tmp_path)
    process.start()
    try:
        yield process
    finally:
        assert process.stop() == 0


def _rss(sidecar: SidecarProcess) -> float:
    text = httpx.get(f"{sidecar.ops_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("process_resident_memory_bytes is not exposed")


def _value(i: int) -> bytes:
    # A JSON string of 3 MiB, different each time (nothing can be shared between requests).
    return b'"' + (b"%08d" % i) * (3 * MIB // 8) + b'"'


def _client_work(base: str, worker: int) -> None:
    """25 saves, 25 bulk gets and 25 transactions of 3 MiB on one key, then its delete."""
    key = f"k{worker}".encode()
    json = {"content-type": "application/json"}
    with httpx.Client(timeout=120) as client:
        for j in range(25):
            value = _value(worker * 100 + j)
            body = b'[{"key":"' + key + b'","value":' + value + b"}]"
            answer = client.post(base, content=body, headers=json)
            assert answer.status_code == 204, answer.text[:200]
            answer = client.post(f"{base}/bulk", json={"keys": [key.decode()]})
            assert answer.status_code == 200
            assert len(answer.content) > 3 * MIB
            body = (
                b'{"operations":[{"operation":"upsert","request":{"key":"'
                + key
                + b'","value":'
                + _value(worker * 100 + 50 + j)
                + b"}}]}"
            )
            answer = client.post(f"{base}/transaction", content=body, headers=json)
            assert answer.status_code == 204, answer.text[:200]
        assert client.delete(f"{base}/{key.decode()}").status_code == 204


def test_rss_returns_within_50_mb_after_3_mib_saves_bulk_gets_and_transactions(
    sidecar: SidecarProcess,
) -> None:
    """200 saves (8 clients at once, as an app's connection pool would), as many bulk gets and
    transactions; before the fix RSS stayed 85 to 164 MiB up (statecar_sidecar/memory.py)."""
    base = f"{sidecar.url}/v1.0/state/store"
    with httpx.Client(timeout=60) as client:
        for i in range(5):  # warm the code paths with small requests
            assert client.post(base, json=[{"key": f"w{i}", "value": i}]).status_code == 204
            client.post(f"{base}/bulk", json={"keys": [f"w{i}"]})
            client.delete(f"{base}/w{i}")
    start = _rss(sidecar)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda worker: _client_work(base, worker), range(8)))
    end = _rss(sidecar)
    deadline = time.monotonic() + 5
    while end - start > BOUND and time.monotonic() < deadline:
        time.sleep(0.5)
        end = _rss(sidecar)
    print(f"RSS start {start / MIB:.1f} MiB, end {end / MIB:.1f} MiB")
    assert end - start <= BOUND, (
        f"RSS grew by {(end - start) / MIB:.1f} MiB (start {start / MIB:.1f} MiB, "
        f"end {end / MIB:.1f} MiB)"
    )
