"""
Prometheus metrics under daprd's names, so existing Dapr dashboards and alerts keep working.

`dapr_http_server_request_count` / `dapr_http_server_latency` (ms) per method, route template and
status, `dapr_grpc_io_server_completed_rpcs` / `dapr_grpc_io_server_server_latency` (ms) per gRPC
method and status code, and `dapr_component_state_count` / `dapr_component_state_latencies` (ms) per component,
operation and success (names from dapr/dapr `pkg/diagnostics`). Children are cached per label
tuple because `labels()` costs more than the observation itself on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class _Series:
    """One label set's count, sum and bucket counts: plain ints, touched only by the event loop."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * (len(_MS_BUCKETS) + 1)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.buckets[bisect_left(_MS_BUCKETS, value)] += 1


class _RequestMetrics(Collector):
    """A counter + histogram pair under daprd's names, rendered only when scraped.

    prometheus_client's own Counter/Histogram take a lock per observation (~1 µs each, 4 per
    request: a fifth of what statecar adds to a GET, bench/README.md); the sidecar observes from
    one event loop, so plain ints suffice and the Prometheus samples are built at scrape time.
    """

    def __init__(
        self, count_name: str, latency_name: str, what: str, labels: tuple[str, ...]
    ) -> None:
        self.count_name = count_name
        self.latency_name = latency_name
        self.what = what
        self.labels = labels
        self.series: dict[tuple[str, ...], _Series] = {}

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        counts = CounterMetricFamily(self.count_name, f"{self.what}.", labels=self.labels)
        latency = HistogramMetricFamily(
            self.latency_name, f"{self.what} latency in milliseconds.", labels=self.labels
        )
        for labels, series in list(self.series.items()):
            counts.add_metric(labels, series.count)
            cumulative = 0
            buckets = []
            for bound, hits in zip((*map(str, _MS_BUCKETS), "+Inf"), series.buckets, strict=True):
                cumulative += hits
                buckets.append((bound, cumulative))
            latency.add_metric(labels, buckets, series.total)
        yield counts
        yield latency


class Metrics:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.registry = CollectorRegistry(auto_describe=True)
        self._http = _RequestMetrics(
            "dapr_http_server_request_count",
            "dapr_http_server_latency",
            "HTTP requests served by the state API",
            ("app_id", "method", "path", "status"),
        )
        self._state = _RequestMetrics(
            "dapr_component_state_count",
            "dapr_component_state_latencies",
            "State store operations",
            ("app_id", "component", "operation", "success"),
        )
        self._grpc = _RequestMetrics(
            "dapr_grpc_io_server_completed_rpcs",
            "dapr_grpc_io_server_server_latency",
            "gRPC calls served by the Dapr API",
            ("app_id", "grpc_server_method", "grpc_server_status"),
        )
        self.registry.register(self._http)
        self.registry.register(self._grpc)
        self.registry.register(self._state)
        self.reloads = Counter(
            "statecar_component_reloads", "Component sets applied.", registry=self.registry
        )
        self.reload_failures = Counter(
            "statecar_component_reload_failures",
            "Component sets that failed to apply (the previous set kept serving).",
            registry=self.registry,
        )
        self.store_up = Gauge(
            "statecar_component_up",
            "1 when the component's backend answered the last health check.",
            ["app_id", "component"],
            registry=self.registry,
        )
        self._http_keys: dict[tuple[str, str, int], _Series] = {}
        self._state_keys: dict[tuple[str, str, bool], _Series] = {}
        self._grpc_keys: dict[tuple[str, str], _Series] = {}

    def http(self, method: str, path: str, status: int, elapsed_ms: float) -> None:
        key = (method, path, status)
        series = self._http_keys.get(key)
        if series is None:
            series = self._http_keys[key] = self._http.series.setdefault(
                (self.app_id, method, path, str(status)), _Series()
            )
        series.observe(elapsed_ms)

    def grpc(self, method: str, status: str, elapsed_ms: float) -> None:
        """One finished RPC: `method` is `/package.Service/Method`, `status` a code name (OK)."""
        key = (method, status)
        series = self._grpc_keys.get(key)
        if series is None:
            series = self._grpc_keys[key] = self._grpc.series.setdefault(
                (self.app_id, method, status), _Series()
            )
        series.observe(elapsed_ms)

    def state(self, component: str, operation: str, success: bool, elapsed_ms: float) -> None:
        key = (component, operation, success)
        series = self._state_keys.get(key)
        if series is None:
            series = self._state_keys[key] = self._state.series.setdefault(
                (self.app_id, component, operation, "true" if success else "false"), _Series()
            )
        series.observe(elapsed_ms)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
