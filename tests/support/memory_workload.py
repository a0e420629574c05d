"""
Test helper (not a test module): issue 14's memory workload, one definition for every process
it runs against (the sidecar in tests/hostile, `statecar daprd` in tests/daprd).

200 saves of 3 MiB values from 8 clients at once (as an app's connection pool would send them),
as many bulk gets and transactions of the same size, then the keys' deletes; the resident set is
read from the process's own `process_resident_memory_bytes`.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

MIB = 1024 * 1024
BOUND = 50 * 1000 * 1000
MEMORY = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: store}\n"
    "spec: {type: state.in-memory, version: v1}\n"
)


def resident_bytes(metrics_url: str) -> float:
    """`process_resident_memory_bytes` from the Prometheus exposition at `metrics_url`."""
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return float(line.split()[1])
    raise AssertionError("process_resident_memory_bytes is not exposed")


def rss_around_workload(base: str, metrics_url: str) -> tuple[float, float]:
    """RSS before and after the workload against the state store at `base`; after it, up to 5 s
    are given for RSS to come back within BOUND of the start."""
    with httpx.Client(timeout=60) as client:
        for i in range(5):  # warm the code paths with small requests
            assert client.post(base, json=[{"key": f"w{i}", "value": i}]).status_code == 204
            client.post(f"{base}/bulk", json={"keys": [f"w{i}"]})
            client.delete(f"{base}/w{i}")
    start = resident_bytes(metrics_url)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda worker: client_work(base, worker), range(8)))
    end = resident_bytes(metrics_url)
    deadline = time.monotonic() + 5
    while end - start > BOUND and time.monotonic() < deadline:
        time.sleep(0.5)
        end = resident_bytes(metrics_url)
    return start, end


def _value(i: int) -> bytes:
    # A JSON string of 3 MiB, different each time (nothing can be shared between requests).
    return b'"' + (b"%08d" % i) * (3 * MIB // 8) + b'"'


def client_work(base: str, worker: int) -> None:
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
