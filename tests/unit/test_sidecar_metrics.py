"""
The metrics exposition as daprd's: names (no `_total` on daprd's counts), labels, buckets, the
error-code counter, the process metrics, and every series Dapr's Grafana sidecar dashboard queries.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import httpx
from hypothesis import given
from hypothesis import strategies as st

from statecar_contract.components import ResolvedComponent
from statecar_sidecar import metrics as metrics_module
from statecar_sidecar.app import Health, create_app, create_ops_app
from statecar_sidecar.metrics import LATENCY_BUCKETS_MS, Metrics
from statecar_sidecar.runtime import ComponentRuntime

DASHBOARD = Path(__file__).parent / "fixtures" / "dapr-sidecar-dashboard-metrics.json"


async def _scrape_after_traffic(metrics: Metrics, *, grpc: bool = True) -> str:
    runtime = ComponentRuntime(app_id="myapp", namespace="shop")
    await runtime.apply([ResolvedComponent("statestore", "state.in-memory")])
    health = Health(runtime, metrics)
    app = create_app(runtime, metrics, api_token=None, max_body_bytes=1024, health=health)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as api:
        await api.post("/v1.0/state/statestore", json=[{"key": "k", "value": 1}])
        await api.get("/v1.0/state/statestore/k")
        await api.get("/v1.0/state/nostore/k")
        await api.post("/v1.0/state/statestore", content=b"{not json")
    if grpc:
        metrics.grpc("/dapr.proto.runtime.v1.Dapr/GetState", "OK", 0.4)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_ops_app(health, metrics)), base_url="http://o"
    ) as scrape:
        text = (await scrape.get("/metrics")).text
    await runtime.close()
    return text


def _sample_names(text: str) -> set[str]:
    return {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and line[0] != "#"
    }


def _declared(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


async def test_daprds_counts_have_no_total_suffix_and_are_counters() -> None:
    text = await _scrape_after_traffic(Metrics("myapp", "shop"))
    names = _sample_names(text)
    types = _declared(text)
    for count in (
        "dapr_http_server_request_count",
        "dapr_http_server_response_count",
        "dapr_component_state_count",
        "dapr_grpc_io_server_completed_rpcs",
    ):
        assert count in names
        assert count + "_total" not in names
        assert types[count] == "counter"
    # daprd's view names that end in _total keep it.
    assert types["dapr_runtime_component_init_total"] == "counter"
    assert 'dapr_runtime_component_init_total{app_id="myapp",component="state.in-memory"} 1' in text
    assert 'dapr_runtime_component_loaded{app_id="myapp"} 1' in text
    assert not any(n.endswith("_created") and n.startswith("dapr_") for n in names)


async def test_label_sets_are_daprds() -> None:
    text = await _scrape_after_traffic(Metrics("myapp", "shop"))
    assert (
        'dapr_component_state_count{app_id="myapp",component="statestore",namespace="shop",'
        'operation="set",success="true"} 1'
    ) in text
    assert (
        'dapr_http_server_request_count{app_id="myapp",method="GET",'
        'path="/v1.0/state/{storeName}/{key}",status="400"} 1'
    ) in text
    assert (
        'dapr_grpc_io_server_completed_rpcs{app_id="myapp",'
        'grpc_server_method="/dapr.proto.runtime.v1.Dapr/GetState",grpc_server_status="OK"} 1'
    ) in text


async def test_latency_histograms_use_daprds_default_buckets() -> None:
    text = await _scrape_after_traffic(Metrics("myapp", "shop"))
    bounds = re.findall(
        r'^dapr_http_server_latency_bucket\{app_id="myapp",le="([^"]+)",method="GET",'
        r'path="/v1.0/state/\{storeName\}/\{key\}",status="200"\}',
        text,
        re.MULTILINE,
    )
    assert bounds == [str(b) for b in LATENCY_BUCKETS_MS] + ["+Inf"]
    assert bounds[-2] == "100000"


async def test_error_codes_are_counted_only_when_record_error_codes_is_on() -> None:
    off = await _scrape_after_traffic(Metrics("myapp", "shop"))
    assert "dapr_error_code_total" not in off
    on = await _scrape_after_traffic(Metrics("myapp", "shop", record_error_codes=True))
    assert "# TYPE dapr_error_code_total counter" in on
    assert (
        'dapr_error_code_total{app_id="myapp",category="state",'
        'error_code="ERR_STATE_STORE_NOT_FOUND"} 1'
    ) in on
    assert (
        'dapr_error_code_total{app_id="myapp",category="common",'
        'error_code="ERR_MALFORMED_REQUEST"} 1'
    ) in on


async def test_the_standard_process_metrics_are_exposed() -> None:
    names = _sample_names(await _scrape_after_traffic(Metrics("myapp")))
    for name in (
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ):
        assert name in names


async def test_every_series_daprs_sidecar_dashboard_queries_is_exposed() -> None:
    fixture = json.loads(DASHBOARD.read_text())
    text = await _scrape_after_traffic(Metrics("myapp", "shop"))
    names = _sample_names(text)
    declared = _declared(text)
    missing = [s for s in fixture["served"] if s not in names]
    assert not missing, f"queried by the dashboard, no samples: {missing}"
    for series in fixture["declared_without_samples"]["series"]:
        family = series.removesuffix("_bucket")
        assert family in declared, f"queried by the dashboard, not declared: {series}"


def _skeleton(text: str, families: tuple[str, ...]) -> list[str]:
    """The lines of `families` with each sample's value blanked: what must not change."""
    return [
        re.sub(r" \S+$", " <value>", line) if line[0] != "#" else line
        for line in text.splitlines()
        if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(families)
    ]


async def test_process_python_and_statecar_families_read_as_prometheus_clients() -> None:
    """The sidecar renders these itself (no prometheus_client import: ~20 ms of a cold start);
    a scrape must read exactly as the exporter's own, apart from the values."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
    from prometheus_client.gc_collector import GCCollector
    from prometheus_client.platform_collector import PlatformCollector
    from prometheus_client.process_collector import ProcessCollector

    metrics = Metrics("myapp", "shop")
    metrics.component_up("statestore", True)
    metrics.component_up("other", False)
    metrics.busy_poll = SimpleNamespace(hits=7, misses=2, shared=1)
    ours = metrics.exposition().decode()

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Counter("statecar_component_reloads", "Component sets applied.", registry=registry)
    Counter(
        "statecar_component_reload_failures",
        "Component sets that failed to apply (the previous set kept serving).",
        registry=registry,
    )
    up = Gauge(
        "statecar_component_up",
        "1 when the component's backend answered the last health check.",
        ["app_id", "component"],
        registry=registry,
    )
    up.labels("myapp", "statestore").set(1)
    up.labels("myapp", "other").set(0)
    polls = Counter(
        "statecar_busy_polls",
        "Busy-poll spins and checks: hit (the awaited call or reply came within the window), "
        "miss (the window passed), shared (a call found its CPU shared, so polling backed off).",
        ["outcome"],
        registry=registry,
    )
    for outcome, n in (("hit", 7), ("miss", 2), ("shared", 1)):
        polls.labels(outcome).inc(n)
    theirs = generate_latest(registry).decode()

    families = ("process_", "python_", "statecar_")
    assert _skeleton(ours, families) == _skeleton(theirs, families)
    assert len(_skeleton(ours, ("process_",))) == 18  # all six families, from /proc
    # Values as the exporter formats them: Go's float syntax, gauges always with a fraction.
    assert 'statecar_component_up{app_id="myapp",component="other"} 0.0' in ours
    assert 'statecar_busy_polls_total{outcome="miss"} 2.0' in ours
    assert re.search(r"^process_resident_memory_bytes \d\.\d+e\+\d\d$", ours, re.MULTILINE)


@given(st.floats() | st.integers(min_value=0, max_value=2**64))
def test_sample_values_use_prometheus_clients_number_syntax(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    theirs = floatToGoString(value)  # type: ignore[no-untyped-call]  # prometheus_client/utils.py is unannotated
    assert metrics_module._go_float(value) == theirs


async def test_component_reloads_count_the_component_sets_the_runtime_applied() -> None:
    runtime = ComponentRuntime(app_id="myapp", namespace="shop")
    metrics = Metrics("myapp", "shop")
    metrics.components = runtime
    await runtime.apply([ResolvedComponent("statestore", "state.in-memory")])
    await runtime.apply(
        [
            ResolvedComponent("statestore", "state.in-memory"),
            ResolvedComponent("broken", "state.no-such-store"),
        ]
    )
    health = Health(runtime, metrics)
    await health.problems()
    text = metrics.exposition().decode()
    await runtime.close()
    assert "\nstatecar_component_reloads_total 2.0\n" in text
    assert "\nstatecar_component_reload_failures_total 1.0\n" in text
    assert 'statecar_component_up{app_id="myapp",component="statestore"} 1.0' in text
    assert 'statecar_component_up{app_id="myapp",component="broken"} 0.0' in text
