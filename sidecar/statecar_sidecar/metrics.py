"""
Prometheus metrics under daprd's names, so existing Dapr dashboards and alerts keep working.

`dapr_http_server_request_count` / `dapr_http_server_latency` (ms) per method, route template and
status, and `dapr_component_state_count` / `dapr_component_state_latencies` (ms) per component,
operation and success (names from dapr/dapr `pkg/diagnostics`). Children are cached per label
tuple because `labels()` costs more than the observation itself on the hot path.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)


class Metrics:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.registry = CollectorRegistry(auto_describe=True)
        self._http_count = Counter(
            "dapr_http_server_request_count",
            "HTTP requests served by the state API.",
            ["app_id", "method", "path", "status"],
            registry=self.registry,
        )
        self._http_latency = Histogram(
            "dapr_http_server_latency",
            "HTTP request latency in milliseconds.",
            ["app_id", "method", "path", "status"],
            buckets=_MS_BUCKETS,
            registry=self.registry,
        )
        self._state_count = Counter(
            "dapr_component_state_count",
            "State store operations.",
            ["app_id", "component", "operation", "success"],
            registry=self.registry,
        )
        self._state_latency = Histogram(
            "dapr_component_state_latencies",
            "State store operation latency in milliseconds.",
            ["app_id", "component", "operation", "success"],
            buckets=_MS_BUCKETS,
            registry=self.registry,
        )
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
        self._children: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def http(self, method: str, path: str, status: int, elapsed_ms: float) -> None:
        key = ("h", method, path, status)
        pair = self._children.get(key)
        if pair is None:
            labels = (self.app_id, method, path, str(status))
            pair = (self._http_count.labels(*labels), self._http_latency.labels(*labels))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(elapsed_ms)

    def state(self, component: str, operation: str, success: bool, elapsed_ms: float) -> None:
        key = ("s", component, operation, success)
        pair = self._children.get(key)
        if pair is None:
            labels = (self.app_id, component, operation, "true" if success else "false")
            pair = (self._state_count.labels(*labels), self._state_latency.labels(*labels))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(elapsed_ms)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
