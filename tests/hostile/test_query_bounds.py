"""
Hostile-input tier, issue 8 item 4: a query never stalls the sidecar.

A real `statecar sidecar` process serves a big store (50k keys, on the in-memory backend and on
real Redis) beside a small one. While a filtered, sorted query scans the big store, another
thread keeps reading a key of the small store and the health route: the p99 of those reads must
stay under 50 ms. Before the query engine ran in bounded slices it was 671 ms on memory and 2.5 s
on Redis at 200k keys. Also here: the page-size bound, and integers beyond 64 bits (and numbers
beyond a double) comparing the same way on all four backends.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from tests.support import pg_server, redis_server
from tests.support.sidecar import SidecarProcess

APP_ID = "hostile"
KEYS = 50_000
P99_BUDGET_MS = 50.0
# Every value matches, and the sort is on a string in descending order: the most work per key.
HEAVY_QUERY = {
    "filter": {"GTE": {"n": 0}},
    "sort": [{"key": "s", "order": "DESC"}],
    "page": {"limit": 100},
}


def _component(name: str, type_: str, metadata: dict[str, str]) -> str:
    document = {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": name},
        "spec": {"type": type_, "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
    }
    return yaml.safe_dump(document) + "---\n"


def _value(i: int) -> bytes:
    return orjson.dumps({"n": i, "s": f"text-{i:06d}", "pad": "x" * 40})


@pytest.fixture(scope="module")
def redis() -> Iterator[redis_server.RedisProcess]:
    with redis_server.running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    redis: redis_server.RedisProcess,
    postgres: pg_server.PgServer,
) -> Iterator[SidecarProcess]:
    folder: Path = tmp_path_factory.mktemp("components")
    (folder / "components.yaml").write_text(
        "".join(
            [
                _component("big", "state.in-memory", {}),
                _component("other", "state.in-memory", {}),
                _component("bigredis", "state.redis", {"redisHost": redis.address, "redisDB": "1"}),
                _component(
                    "bigsqlite", "state.sqlite", {"connectionString": str(folder / "big.db")}
                ),
                _component("memory", "state.in-memory", {}),
                _component("sqlite", "state.sqlite", {"connectionString": ":memory:"}),
                _component("redis", "state.redis", {"redisHost": redis.address}),
                _component("postgres", "state.postgresql", {"connectionString": postgres.dsn}),
            ]
        )
    )
    process = SidecarProcess(app_id=APP_ID, components_path=folder)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def api(sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.url, timeout=60) as client:
        yield client


def _seed_over_http(api: httpx.Client, store: str) -> str:
    for start in range(0, KEYS, 2500):
        body = (
            b"["
            + b",".join(
                b'{"key":"k%06d","value":%s}' % (i, _value(i)) for i in range(start, start + 2500)
            )
            + b"]"
        )
        answer = api.post(f"/v1.0/state/{store}", content=body)
        assert answer.status_code == 204, answer.text
    return store


@pytest.fixture(scope="module")
def seeded_memory(api: httpx.Client) -> str:
    return _seed_over_http(api, "big")


@pytest.fixture(scope="module")
def seeded_sqlite(api: httpx.Client) -> str:
    return _seed_over_http(api, "bigsqlite")


@pytest.fixture(scope="module")
def seeded_redis(redis: redis_server.RedisProcess, api: httpx.Client) -> str:
    # daprd's layout, written straight into Redis with one pipelined write: a HASH per key.
    commands = bytearray(b"*2\r\n$6\r\nSELECT\r\n$1\r\n1\r\n")  # the store's redisDB
    for i in range(KEYS):
        parts = [b"HSET", f"{APP_ID}||k{i:06d}".encode(), b"data", _value(i), b"version", b"1"]
        commands += b"*%d\r\n" % len(parts)
        for part in parts:
            commands += b"$%d\r\n%s\r\n" % (len(part), part)
    with socket.create_connection((redis.host, redis.port), timeout=30) as sock:
        sock.sendall(commands)
        replies = 0
        buffer = b""
        while replies < KEYS + 1:
            chunk = sock.recv(65536)
            assert chunk, "redis closed the connection while seeding"
            buffer += chunk
            replies = buffer.count(b"\r\n")
        assert b"-" not in buffer.replace(b"\r\n", b""), buffer[:200]
    return "bigredis"


def _p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def _reads_during_queries(
    sidecar: SidecarProcess, api: httpx.Client, store: str, rounds: int = 3
) -> tuple[list[float], list[float]]:
    """Run the heavy query `rounds` times while another thread reads the small store and the
    health route; the latencies (ms) of the reads made while a query was running, and of the
    queries."""
    assert api.post("/v1.0/state/other", json=[{"key": "probe", "value": 1}]).status_code == 204
    running = threading.Event()
    stop = threading.Event()
    samples: list[float] = []

    def reader() -> None:
        with (
            httpx.Client(base_url=sidecar.url, timeout=30) as state,
            httpx.Client(base_url=sidecar.ops_url, timeout=30) as ops,
        ):
            while not stop.is_set():
                for client, path, status in (
                    (state, "/v1.0/state/other/probe", 200),
                    (ops, "/v1.0/healthz", 204),
                ):
                    started = time.perf_counter()
                    answer = client.get(path)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert answer.status_code == status
                    if running.is_set():
                        samples.append(elapsed)
                time.sleep(0.002)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    durations = []
    try:
        time.sleep(0.2)  # the reader's connections are open
        running.set()
        time.sleep(1.0)
        running.clear()
        baseline = list(samples)
        samples.clear()
        print(f"\nidle reads: {len(baseline)}, p99 {_p99(baseline):.1f} ms", end="")
        for _ in range(rounds):
            running.set()
            started = time.perf_counter()
            answer = api.post(f"/v1.0-alpha1/state/{store}/query", json=HEAVY_QUERY)
            durations.append((time.perf_counter() - started) * 1000)
            running.clear()
            assert answer.status_code == 200, answer.text
            page = answer.json()
            assert [r["key"] for r in page["results"][:2]] == ["k049999", "k049998"]
            assert page["token"] == "100"
    finally:
        stop.set()
        thread.join(timeout=30)
    return samples, durations


@pytest.mark.parametrize("backend", ["memory", "redis", "sqlite"])
def test_reads_of_another_store_stay_fast_during_a_query(
    backend: str, request: pytest.FixtureRequest, sidecar: SidecarProcess, api: httpx.Client
) -> None:
    store = request.getfixturevalue(f"seeded_{backend}")
    # The latencies are wall time on a shared machine, where another process can hold a core for
    # tens of ms: up to three attempts. A stall of the loop (the bug) fails every attempt.
    outcomes = []
    for _ in range(3):
        samples, durations = _reads_during_queries(sidecar, api, store)
        assert len(samples) >= 20, f"too few reads overlapped the queries: {durations}"
        p99 = _p99(samples)
        outcomes.append(
            f"{backend}: {KEYS} keys, query {statistics.median(durations):.0f} ms (median of"
            f" {len(durations)}); reads during queries: {len(samples)}, p50"
            f" {statistics.median(samples):.1f} ms, p99 {p99:.1f} ms, max {max(samples):.1f} ms"
        )
        print("\n" + outcomes[-1], end="")
        if p99 < P99_BUDGET_MS:
            return
    pytest.fail(f"p99 of reads during a query over {P99_BUDGET_MS} ms: " + "; ".join(outcomes))


def test_a_query_without_a_limit_answers_a_bounded_page_and_the_tokens_walk_everything(
    api: httpx.Client, seeded_memory: str
) -> None:
    url = f"/v1.0-alpha1/state/{seeded_memory}/query"
    # No page.limit: daprd would answer all 50k; statecar answers the default page and a token.
    first = api.post(url, json={"filter": {"LT": {"n": 2500}}}).json()
    assert len(first["results"]) == 1000
    assert first["results"][0]["key"] == "k000000"
    assert first["token"] == "1000"
    seen = [r["key"] for r in first["results"]]
    token = first["token"]
    while token:
        answer = api.post(url, json={"filter": {"LT": {"n": 2500}}, "page": {"token": token}})
        page = answer.json()
        seen += [r["key"] for r in page["results"]]
        token = page.get("token")
    assert seen == [f"k{i:06d}" for i in range(2500)]
    # A result set within the default page has no token, as on daprd.
    small = api.post(url, json={"filter": {"LT": {"n": 3}}}).json()
    assert ([r["key"] for r in small["results"]], small.get("token")) == (
        ["k000000", "k000001", "k000002"],
        None,
    )
    # The maximum explicit page.limit is served; one more is refused with daprd's query error.
    assert len(api.post(url, json={"page": {"limit": 10_000}}).json()["results"]) == 10_000
    refused = api.post(url, json={"page": {"limit": 10_001}})
    assert refused.status_code == 500
    assert refused.json()["errorCode"] == "ERR_STATE_QUERY"
    assert "up to 10000, got 10001" in refused.json()["message"]


BIG = 2**64  # 18446744073709551616: orjson reads anything beyond 64 bits as a double
BIG_VALUES = {
    "below": b'{"n": 18446744073709551615}',
    "exact": b'{"n": 18446744073709551616}',
    "above": b'{"n": 18446744073709551617}',
    "float": b'{"n": 1.8446744073709552e19}',  # the double nearest 2**64, as a decimal
    "huge": b'{"n": 1e400}',  # beyond a double
    "long": b'{"n": 18446744073709551616.000000000000000001}',
}


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis", "postgres"])
@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"EQ": {"n": "BIG"}}, ["exact"]),
        ({"NEQ": {"n": "BIG"}}, ["above", "below", "float", "huge", "long"]),
        ({"GT": {"n": "BIG"}}, ["above", "float", "huge", "long"]),
        ({"LT": {"n": "BIG"}}, ["below"]),
        ({"IN": {"n": ["BIG", "ABOVE"]}}, ["above", "exact"]),
        ({"GT": {"n": "LONG"}}, ["above", "float", "huge"]),
    ],
)
def test_numbers_beyond_64_bits_compare_the_same_on_every_backend(
    api: httpx.Client, store: str, filter_: dict[str, object], expected: list[str]
) -> None:
    body = (
        b"["
        + b",".join(b'{"key":"%s","value":%s}' % (k.encode(), v) for k, v in BIG_VALUES.items())
        + b"]"
    )
    assert api.post(f"/v1.0/state/{store}", content=body).status_code == 204
    # The filter goes out as text so its numbers keep every digit (as an app's would).
    query = orjson.dumps({"filter": filter_}).replace(b'"BIG"', str(BIG).encode())
    query = query.replace(b'"LONG"', b"18446744073709551616.0000000000000000011")
    query = query.replace(b'"ABOVE"', b"18446744073709551617")
    answer = api.post(f"/v1.0-alpha1/state/{store}/query", content=query)
    assert answer.status_code in (200, 204), answer.text
    found = [r["key"] for r in answer.json()["results"]] if answer.status_code == 200 else []
    assert found == expected


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis", "postgres"])
def test_a_filter_with_a_lone_surrogate_is_answered_not_crashed(
    api: httpx.Client, store: str
) -> None:
    # JSON allows "\ud800"; the exact decoder keeps it, and PostgreSQL (whose text cannot hold
    # it) evaluates such a query in process instead of failing.
    assert (
        api.post(f"/v1.0/state/{store}", json=[{"key": "plain", "value": {"a": "x"}}]).status_code
        == 204
    )
    answer = api.post(
        f"/v1.0-alpha1/state/{store}/query",
        content=b'{"filter": {"OR": [{"EQ": {"a": "\\ud800"}}, {"EQ": {"a": "x"}}]}}',
    )
    assert answer.status_code == 200, answer.text
    assert [r["key"] for r in answer.json()["results"]] == ["plain"]
