"""
Prometheus metrics exposed exactly as daprd exposes them, so Dapr's dashboards and alerts work.

daprd records with OpenCensus and exports through its Prometheus exporter, which writes a view's
name as it is: `dapr_http_server_request_count` is a counter with no `_total` suffix, while
`dapr_runtime_component_init_total` and `dapr_error_code_total` carry one because their view
names do. So the `dapr_*` families are rendered here, at scrape time, from plain ints (names,
labels and buckets from dapr/dapr `pkg/diagnostics`: http_monitoring.go, grpc_monitoring.go,
component_monitoring.go, service_monitoring.go, errorcode_monitoring.go, and `pkg/config` for
the latency buckets).

The rest is rendered here too, as prometheus_client 0.26 writes it, so a scrape is the one every
Python exporter gives: the standard process metrics (`process_*`, read from /proc/self as its
`process_collector.py` does), Python's version and GC (`platform_collector.py`,
`gc_collector.py`), statecar's own `statecar_*`, and two Go-runtime names Dapr's sidecar
dashboard charts (`go_goroutines`, `go_memstats_alloc_bytes`), given their Python meaning
(docs/state-api.md "Metrics"). The sidecar does not import prometheus_client: its import costs
~20 ms of a cold start and its registry memory for six families
(tests/unit/test_sidecar_metrics.py, pyproject's import-linter contracts). Series are cached per
label tuple: finding one costs more than the observation.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final, Protocol

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
    #: Component sets applied, and those of them that failed (statecar_component_reload*).
    reloads: int
    reload_failures: int


class BusyPollCounts(Protocol):
    """What busy-polling counts (`busypoll.BusyPoll`; server.py wires it)."""

    hits: int
    misses: int
    shared: int


class _NoComponents:
    def __init__(self) -> None:
        self.components_loaded = 0
        self.component_inits: dict[str, int] = {}
        self.component_init_failures: dict[tuple[str, str, str], int] = {}
        self.reloads = 0
        self.reload_failures = 0


def _go_float(value: float) -> str:
    """A sample value as prometheus_client writes it (utils.floatToGoString): Go's %g switch.

    `6.0`, `0.13`, and `3.1649792e+07` once the integer part has more than six digits.
    """
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6 and "e" not in text and "n" not in text:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}.get(text, text)


def _gauge(out: list[str], name: str, help_text: str, value: float) -> None:
    """A family of one unlabelled gauge sample."""
    _header(out, name, "gauge", help_text)
    out.append(f"{name} {_go_float(value)}\n")


class _Process:
    """prometheus_client's process collector: `process_*` from /proc/self (proc(5)).

    The boot time and clock tick are read once, as the collector does when it is built; without
    /proc (not Linux) the family is left out, as there.
    """

    def __init__(self, proc: str = "/proc") -> None:
        self._self = os.path.join(proc, "self")
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._pagesize = os.sysconf("SC_PAGESIZE")
        self._boot_time = 0.0
        try:
            with open(os.path.join(proc, "stat"), "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        self._boot_time = float(line.split()[1])
                        break
        except OSError:
            pass

    def render(self, out: list[str]) -> None:
        if not self._boot_time:
            return
        try:
            with open(os.path.join(self._self, "stat"), "rb") as stat:
                # After the command name, which may hold spaces and parentheses: field 3 on.
                parts = stat.read().split(b")")[-1].split()
        except OSError:
            pass
        else:
            _gauge(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20]))  # fmt: skip
            _gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.", float(parts[21]) * self._pagesize)  # fmt: skip
            _gauge(out, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", float(parts[19]) / self._ticks + self._boot_time)  # fmt: skip
            cpu = (float(parts[11]) + float(parts[12])) / self._ticks
            _header(out, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")  # fmt: skip
            out.append(f"process_cpu_seconds_total {_go_float(cpu)}\n")
        try:
            max_fds = None
            with open(os.path.join(self._self, "limits"), "rb") as limits:
                for line in limits:
                    if line.startswith(b"Max open file"):
                        max_fds = float(line.split()[3])
                        break
            open_fds = len(os.listdir(os.path.join(self._self, "fd")))
        except (OSError, ValueError):
            return
        _gauge(out, "process_open_fds", "Number of open file descriptors.", open_fds)
        if max_fds is not None:
            _gauge(out, "process_max_fds", "Maximum number of open file descriptors.", max_fds)


def _python_info() -> str:
    """prometheus_client's `python_info` labels, from `sys` rather than the `platform` module.

    `platform.python_version()` is the first word of `sys.version`, its implementation name
    the canonical spelling of `sys.implementation.name`.
    """
    version = sys.version.split(" ", 1)[0]
    major, minor, patchlevel = [*version.split("."), "", ""][:3]
    implementation = {"cpython": "CPython", "pypy": "PyPy"}.get(
        sys.implementation.name, sys.implementation.name
    )
    return _labels(
        ("implementation", "major", "minor", "patchlevel", "version"),
        (implementation, major, minor, patchlevel, version),
    )


#: prometheus_client's GC counters: (gc.get_stats() key, name, help).
_GC_COUNTERS: Final = (
    ("collected", "python_gc_objects_collected_total", "Objects collected during gc"),
    ("uncollectable", "python_gc_objects_uncollectable_total", "Uncollectable objects found during GC"),
    ("collections", "python_gc_collections_total", "Number of times this generation was collected"),
)  # fmt: skip


def _gc(out: list[str]) -> None:
    """prometheus_client's `python_gc_*` counters, one series per generation (gc.get_stats())."""
    stats = gc.get_stats()
    for key, name, help_text in _GC_COUNTERS:
        _header(out, name, "counter", help_text)
        out.extend(
            f'{name}{{generation="{generation}"}} {_go_float(stat[key])}\n'
            for generation, stat in enumerate(stats)
        )


def _go_runtime_names(out: list[str], mallinfo: Callable[[], int] | None) -> None:
    """The two Go-runtime series Dapr's sidecar dashboard charts, with their Python meaning.

    `go_goroutines`: the units of concurrent work, asyncio tasks plus threads. `go_memstats_alloc_bytes`:
    bytes in use on the C heap (glibc's mallinfo2), where request bodies and values live; absent
    where the C library has no mallinfo2.
    """
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the event loop (a test)
        tasks = 0
    _gauge(out, "go_goroutines", "Number of asyncio tasks plus threads (statecar is Python: its goroutines).", tasks + threading.active_count())  # fmt: skip
    if mallinfo is not None:
        _gauge(out, "go_memstats_alloc_bytes", "Bytes allocated and in use on the C heap (glibc mallinfo2 uordblks + hblkhd).", mallinfo())  # fmt: skip


def _counter(out: list[str], name: str, help_text: str, value: int, created: float) -> None:
    """A prometheus_client Counter: `<name>_total`, then its creation time as a `_created` gauge."""
    _header(out, f"{name}_total", "counter", help_text)
    out.append(f"{name}_total {_go_float(value)}\n")
    _gauge(out, f"{name}_created", help_text, created)


@functools.cache
def _mallinfo2() -> Callable[[], int] | None:
    """glibc's heap in use, found on the first scrape: ctypes is no part of a cold start."""
    libc = memory.process_libc()
    function = getattr(libc, "mallinfo2", None) if libc is not None else None
    if function is None:
        return None
    import ctypes

    class _MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost",
            )
        ]  # fmt: skip

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
        #: The process's busy-polling, when it is on (statecar_busy_polls_total).
        self.busy_poll: BusyPollCounts | None = None
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
        #: statecar_component_up: (app_id, component) -> 1.0 or 0.0, set by the health check.
        self.components_up: dict[tuple[str, str], float] = {}
        self._created = time.time()
        self._process = _Process()
        self._python_info = _python_info()
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

    def component_up(self, component: str, up: bool) -> None:
        """The last health check's verdict on `component`'s backend (statecar_component_up)."""
        self.components_up[(self.app_id, component)] = 1.0 if up else 0.0

    def _dapr(self, out: list[str]) -> None:
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

    def _statecar(self, out: list[str]) -> None:
        counts = self.components
        _counter(out, "statecar_component_reloads", "Component sets applied.", counts.reloads, self._created)  # fmt: skip
        _counter(out, "statecar_component_reload_failures", "Component sets that failed to apply (the previous set kept serving).", counts.reload_failures, self._created)  # fmt: skip
        _header(out, "statecar_component_up", "gauge", "1 when the component's backend answered the last health check.")  # fmt: skip
        for (app_id, component), up in self.components_up.items():
            labels = _labels(("app_id", "component"), (app_id, component))
            out.append(f"statecar_component_up{{{labels}}} {_go_float(up)}\n")
        # A labelled counter, as prometheus_client writes one: the samples, then their creation.
        polls = "statecar_busy_polls"
        polls_help = "Busy-poll spins and checks: hit (the awaited call or reply came within the window), miss (the window passed), shared (a call found its CPU shared, so polling backed off)."  # fmt: skip
        _header(out, f"{polls}_total", "counter", polls_help)
        busy = self.busy_poll
        outcomes = () if busy is None else (("hit", busy.hits), ("miss", busy.misses), ("shared", busy.shared))  # fmt: skip
        out.extend(f'{polls}_total{{outcome="{o}"}} {_go_float(n)}\n' for o, n in outcomes)
        _header(out, f"{polls}_created", "gauge", polls_help)
        created = _go_float(self._created)
        out.extend(f'{polls}_created{{outcome="{o}"}} {created}\n' for o, _ in outcomes)

    def exposition(self) -> bytes:
        """The scrape, in the order prometheus_client's registry wrote it after daprd's families."""
        out: list[str] = []
        self._dapr(out)
        self._process.render(out)
        _header(out, "python_info", "gauge", "Python platform information")
        out.append(f"python_info{{{self._python_info}}} 1.0\n")
        _gc(out)
        _go_runtime_names(out, _mallinfo2())
        self._statecar(out)
        return "".join(out).encode()
