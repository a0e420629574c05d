"""
Prometheus metrics exposed exactly as daprd exposes them, so Dapr's dashboards and alerts work.

daprd records with OpenCensus and exports through its Prometheus exporter, which writes a view's
name as it is: `dapr_http_server_request_count` is a counter with no `_total` suffix, while
`dapr_runtime_component_init_total` and `dapr_error_code_total` carry one because their view
names do. prometheus_client would add `_total` to every counter, so the `dapr_*` families are
rendered here, at scrape time, from plain ints (names, labels and buckets from dapr/dapr
`pkg/diagnostics`: http_monitoring.go, grpc_monitoring.go, component_monitoring.go,
service_monitoring.go, errorcode_monitoring.go, and `pkg/config` for the latency buckets).

The rest comes from prometheus_client: the standard process metrics (`process_*`), Python's GC
and version, statecar's own `statecar_*`, and two Go-runtime names Dapr's sidecar dashboard
charts (`go_goroutines`, `go_memstats_alloc_bytes`), given their Python meaning (docs/state-api.md
"Metrics"). Series are cached per label tuple: `labels()` costs more than the observation.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from statecar_sidecar import memory

#: daprd's default `spec.metrics.latencyDistributionBuckets` (ms; pkg/config/configuration.go).
LATENCY_BUCKETS_MS: Final = (
    1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 65, 80, 100, 130, 160, 200, 250, 300,
    400, 500, 650, 800, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
)  # fmt: skip
_BOUNDS: Final = (*(str(b) for b in LATENCY_BUCKETS_MS), "+Inf")

#: Families daprd declares for subsystems a state-only sidecar does not have (the app channel,
#: actors, mTLS). They are declared with no samples, as daprd shows them before first use, so a
#: scrape lists every family Dapr's sidecar dashboard queries: (name, type, help).
ABSENT_FAMILIES: Final = (
    ("dapr_http_client_completed_count", "counter", "Count of completed requests"),
    ("dapr_http_client_roundtrip_latency", "histogram", "Time between first byte of request headers sent to last byte of response received, or terminal error"),
    ("dapr_grpc_io_client_completed_rpcs", "counter", "Count of RPCs by method and status."),
    ("dapr_grpc_io_client_roundtrip_latency", "histogram", "Time between first byte of request sent to last byte of response received, or terminal error."),
    ("dapr_runtime_mtls_init_total", "counter", "The number of successful mTLS authenticator initialization."),
    ("dapr_runtime_mtls_init_fail_total", "counter", "The number of mTLS authenticator init failures."),
    ("dapr_runtime_mtls_workload_cert_rotated_total", "counter", "The number of the successful workload certificate rotations."),
    ("dapr_runtime_mtls_workload_cert_rotated_fail_total", "counter", "The number of the failed workload certificate rotations."),
    ("dapr_runtime_actor_status_report_total", "counter", "The number of the successful status reports to placement service."),
    ("dapr_runtime_actor_status_report_fail_total", "counter", "The number of the failed status reports to placement service."),
    ("dapr_runtime_actor_table_operation_recv_total", "counter", "The number of the received actor placement table operations."),
    ("dapr_runtime_actor_rebalanced_total", "counter", "The number of the actor rebalance requests."),
    ("dapr_runtime_actor_deactivated_total", "counter", "The number of the successful actor deactivation."),
    ("dapr_runtime_actor_deactivated_failed_total", "counter", "The number of the failed actor deactivation."),
)  # fmt: skip


class _Series:
    """One label set's count, sum and bucket counts: plain ints, touched only by the event loop."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * len(_BOUNDS)

    def observe(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, value)] += 1


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: Iterable[str]) -> str:
    """`{a="x",b="y"}` with the names sorted, as Go's Prometheus client writes them."""
    pairs = sorted(zip(names, values, strict=True))
    return ",".join(f'{n}="{_escape(v)}"' for n, v in pairs)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


class _RequestMetrics:
    """A daprd count (a counter named without `_total`) and latency histogram pair."""

    def __init__(
        self,
        count_names: tuple[str, ...],
        latency_name: str,
        what: str,
        labels: tuple[str, ...],
    ) -> None:
        self.count_names = count_names
        self.latency_name = latency_name
        self.what = what
        self.labels = labels
        self.series: dict[tuple[str, ...], _Series] = {}

    def render(self, out: list[str]) -> None:
        rows = list(self.series.items())
        for count_name in self.count_names:
            _header(out, count_name, "counter", f"Count of {self.what}.")
            out.extend(
                f"{count_name}{{{_labels(self.labels, values)}}} {series.count}\n"
                for values, series in rows
            )
        _header(out, self.latency_name, "histogram", f"{self.what} latency in milliseconds.")
        with_le = (*self.labels, "le")
        for values, series in rows:
            cumulative = 0
            for bound, hits in zip(_BOUNDS, series.buckets, strict=True):
                cumulative += hits
                labels = _labels(with_le, (*values, bound))
                out.append(f"{self.latency_name}_bucket{{{labels}}} {cumulative}\n")
            labels = _labels(self.labels, values)
            out.append(f"{self.latency_name}_sum{{{labels}}} {_number(series.total)}\n")
            out.append(f"{self.latency_name}_count{{{labels}}} {series.count}\n")


class ComponentCounts(Protocol):
    """What daprd's `dapr_runtime_component_*` count; the runtime keeps them (server.py wires it)."""

    components_loaded: int
    #: component type -> successful inits.
    component_inits: dict[str, int]
    #: (component type, reason, component name) -> failed inits.
    component_init_failures: dict[tuple[str, str, str], int]


class _NoComponents:
    def __init__(self) -> None:
        self.components_loaded = 0
        self.component_inits: dict[str, int] = {}
        self.component_init_failures: dict[tuple[str, str, str], int] = {}


class _GoRuntimeNames(Collector):
    """The two Go-runtime series Dapr's sidecar dashboard charts, with their Python meaning.

    `go_goroutines`: the units of concurrent work, asyncio tasks plus threads. `go_memstats_alloc_bytes`:
    bytes in use on the C heap (glibc's mallinfo2), where request bodies and values live; absent
    where the C library has no mallinfo2.
    """

    def __init__(self) -> None:
        self._mallinfo = _mallinfo2()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped outside the event loop (a test)
            tasks = 0
        yield GaugeMetricFamily(
            "go_goroutines",
            "Number of asyncio tasks plus threads (statecar is Python: its goroutines).",
            value=tasks + threading.active_count(),
        )
        if self._mallinfo is not None:
            yield GaugeMetricFamily(
                "go_memstats_alloc_bytes",
                "Bytes allocated and in use on the C heap (glibc mallinfo2 uordblks + hblkhd).",
                value=self._mallinfo(),
            )


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo2() -> Callable[[], int] | None:
    libc = memory.process_libc()
    function = getattr(libc, "mallinfo2", None) if libc is not None else None
    if function is None:
        return None
    function.restype = _MallInfo2
    function.argtypes = []

    def in_use() -> int:
        info = function()
        return int(info.uordblks + info.hblkhd)

    return in_use


class Metrics:
    def __init__(
        self, app_id: str, namespace: str | None = None, *, record_error_codes: bool = False
    ) -> None:
        self.app_id = app_id
        self.namespace = namespace or ""
        self.record_error_codes = record_error_codes
        self.components: ComponentCounts = _NoComponents()
        self._http = _RequestMetrics(
            # daprd's default (spec.metrics.http.increasedCardinality unset) also registers
            # response_count, which the sidecar dashboard charts.
            ("dapr_http_server_request_count", "dapr_http_server_response_count"),
            "dapr_http_server_latency",
            "HTTP requests processed by the server",
            ("app_id", "method", "path", "status"),
        )
        self._state = _RequestMetrics(
            ("dapr_component_state_count",),
            "dapr_component_state_latencies",
            "state store operations",
            ("app_id", "component", "namespace", "operation", "success"),
        )
        self._grpc = _RequestMetrics(
            ("dapr_grpc_io_server_completed_rpcs",),
            "dapr_grpc_io_server_server_latency",
            "RPCs by method and status",
            ("app_id", "grpc_server_method", "grpc_server_status"),
        )
        #: (error_code, category) -> count; filled only when record_error_codes is on.
        self.error_codes: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.registry.register(_GoRuntimeNames())
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
                (self.app_id, component, self.namespace, operation, "true" if success else "false"),
                _Series(),
            )
        series.observe(elapsed_ms)

    def error_code(self, code: str, category: str) -> None:
        """One error answered (daprd's `RecordErrorCode`): counted when recordErrorCodes is on."""
        if self.record_error_codes and code and category:
            key = (code, category)
            self.error_codes[key] = self.error_codes.get(key, 0) + 1

    def _dapr(self) -> str:
        out: list[str] = []
        self._http.render(out)
        self._grpc.render(out)
        self._state.render(out)
        counts = self.components
        _header(out, "dapr_runtime_component_loaded", "counter", "The number of successfully loaded components.")  # fmt: skip
        out.append(f'dapr_runtime_component_loaded{{app_id="{_escape(self.app_id)}"}} {counts.components_loaded}\n')  # fmt: skip
        _header(out, "dapr_runtime_component_init_total", "counter", "The number of initialized components.")  # fmt: skip
        for kind, n in sorted(counts.component_inits.items()):
            labels = _labels(("app_id", "component"), (self.app_id, kind))
            out.append(f"dapr_runtime_component_init_total{{{labels}}} {n}\n")
        _header(out, "dapr_runtime_component_init_fail_total", "counter", "The number of component initialization failures.")  # fmt: skip
        for (kind, reason, name), n in sorted(counts.component_init_failures.items()):
            labels = _labels(
                ("app_id", "component", "reason", "componentName"),
                (self.app_id, kind, reason, name),
            )
            out.append(f"dapr_runtime_component_init_fail_total{{{labels}}} {n}\n")
        if self.record_error_codes:
            _header(out, "dapr_error_code_total", "counter", "Total number of times an error with a specific error code was encountered.")  # fmt: skip
            for (code, category), n in sorted(self.error_codes.items()):
                labels = _labels(
                    ("app_id", "category", "error_code"), (self.app_id, category, code)
                )
                out.append(f"dapr_error_code_total{{{labels}}} {n}\n")
        for name, kind, help_text in ABSENT_FAMILIES:
            _header(out, name, kind, help_text)
        return "".join(out)

    def exposition(self) -> bytes:
        return self._dapr().encode() + generate_latest(self.registry)
