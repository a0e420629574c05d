"""
Running the sidecar: open the stores, serve the state API and the ops port, reload, stop cleanly.

One process, one event loop (uvloop when installed), two HTTP/1.1 listeners (`http1`): the state
API on loopback and the ops port (health, metrics) where the kubelet can reach it; and, on the
same loop and loopback address, statecar's HTTP/2 server for the Dapr gRPC API (`grpcapi`). After start-up the
garbage collector is frozen and its first threshold raised: with default settings CPython's
cyclic GC puts a 40-55 ms p99 tail on this workload (bench/README.md has the measurements).

Each server bounds its slow and idle clients (`listener`): header and body read timeouts and
a connection cap. The two caps are lowered at start-up, if need be, so that both listeners
full together still leave descriptors for the stores: 300 idle connections to the metrics
port cannot make the state API refuse or reset the app's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import math
import resource
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from statecar_contract.components import ComponentError
from statecar_sidecar import loader, memory
from statecar_sidecar.api.health import Health
from statecar_sidecar.app import create_app, create_ops_app
from statecar_sidecar.busypoll import BusyPoll
from statecar_sidecar.http1.server import HttpServer
from statecar_sidecar.listener import ListenerLimits
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime, Reloader
from statecar_sidecar.settings import SidecarSettings

if TYPE_CHECKING:  # imported when the gRPC port is on, after HTTP serves (cold start)
    from statecar_sidecar.grpcapi.server import GrpcServer

log = logging.getLogger("statecar.sidecar")


class JSONFormatter(logging.Formatter):
    """One JSON object per line (structured logs on request: `--log-json`)."""

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return orjson.dumps(document).decode()


def configure_logging(level: str, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JSONFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def component_source(settings: SidecarSettings) -> Callable[[], loader.LoadedComponents]:
    """The loader for this sidecar's components: the wiring file wins over a folder."""
    if settings.wiring_file is not None:
        wiring_file = settings.wiring_file
        return lambda: loader.load_wiring_file(wiring_file)
    if settings.components_paths:
        folders = settings.components_paths
        return lambda: loader.load_folders(
            folders, secrets_file=settings.secrets_file, environ=settings.secrets
        )
    return lambda: loader.LoadedComponents((), "none")


#: Descriptors kept for everything but the listeners' connections: the stores' connection pools,
#: SQLite files, the loop's own, logs, and the connections being refused.
RESERVED_DESCRIPTORS = 64


def listener_limits(
    settings: SidecarSettings, descriptor_limit: int | None = None
) -> tuple[ListenerLimits, ListenerLimits]:
    """The state API's and the ops port's bounds, the caps lowered to fit the descriptor limit."""
    if descriptor_limit is None:
        descriptor_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    state_cap, ops_cap = settings.max_connections, settings.metrics_max_connections
    if descriptor_limit != resource.RLIM_INFINITY:
        budget = max(descriptor_limit - RESERVED_DESCRIPTORS, 16)
        # The metrics port gets at most an eighth: a few probes and scrapes need no more.
        ops_cap = max(1, min(ops_cap, budget // 8))
        state_cap = max(1, min(state_cap, budget - ops_cap))
        if (state_cap, ops_cap) != (settings.max_connections, settings.metrics_max_connections):
            log.info(
                "the descriptor limit is %d: at most %d connections to the state API and %d to "
                "the metrics port (raise `ulimit -n` for more)",
                descriptor_limit,
                state_cap,
                ops_cap,
            )
    timeouts = (settings.read_header_timeout, settings.read_body_timeout)
    return (
        ListenerLimits("state API", *timeouts, state_cap, "STATECAR_MAX_CONNECTIONS"),
        ListenerLimits("metrics", *timeouts, ops_cap, "STATECAR_METRICS_MAX_CONNECTIONS"),
    )


async def serve(settings: SidecarSettings) -> int:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await serve_until(settings, stop)


async def serve_until(
    settings: SidecarSettings, stop: asyncio.Event, *, ready: Callable[[], None] | None = None
) -> int:
    """Serve until `stop` is set; `ready` is called once both ports accept connections."""
    memory.release_large_buffers()
    runtime = ComponentRuntime(
        app_id=settings.app_id, namespace=settings.namespace, only=settings.components
    )
    metrics = Metrics(
        settings.app_id, settings.namespace, record_error_codes=settings.record_error_codes
    )
    source = component_source(settings)
    watched: list[Path] = []  # the files the last load read besides the folders

    def load() -> loader.LoadedComponents:
        loaded = source()
        watched[:] = loaded.watched
        return loaded

    reloader = Reloader(
        runtime,
        load,
        settings.reload_interval,
        changed=lambda: loader.stat_fingerprint(
            settings.wiring_file, *settings.components_paths, settings.secrets_file, *watched
        ),
        refuse_failed=settings.refuse_failed_components,
    )
    try:
        await reloader.load_initial()
    except ComponentError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 -- a store that can't open yet: serve and keep retrying
        log.error(
            "components not ready, serving and retrying every %.0fs: %s",
            settings.reload_interval,
            exc,
        )
        runtime.last_reload_error = str(exc)

    health = Health(runtime, metrics)
    app = create_app(
        runtime,
        metrics,
        api_token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        health=health,
    )
    state_limits, ops_limits = listener_limits(settings)
    # One for the process: HTTP and gRPC calls both count as in flight.
    busy_poll = (
        BusyPoll(asyncio.get_running_loop(), settings.busy_poll_us)
        if settings.busy_poll_us
        else None
    )
    metrics.busy_poll = busy_poll
    # daprd's `--enable-api-logging`: one info line per HTTP API call (method, path, status).
    state_server = HttpServer(
        app,
        state_limits,
        state_api=app,
        max_body_bytes=settings.max_body_bytes,
        log_requests=settings.api_logging,
        busy_poll=busy_poll,
    )
    servers = [state_server]
    listening = [
        (state_server, address, settings.http_port)
        for address in (settings.listen_address, *settings.extra_listen_addresses)
    ]
    if settings.metrics_port:
        ops = HttpServer(
            create_ops_app(health, metrics), ops_limits, max_body_bytes=settings.max_body_bytes
        )
        servers.append(ops)
        listening.append((ops, settings.metrics_address, settings.metrics_port))
    if settings.grpc_port:
        health.starting = f"the gRPC API (port {settings.grpc_port}) is not listening yet"
    failed = False
    for server, address, port in listening:
        try:
            await server.listen(address, port)
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", address, port, exc)
            failed = True
            break
    grpc_server: GrpcServer | None = None
    if not failed and settings.grpc_port:
        try:
            grpc_server = await _start_grpc(settings, runtime, metrics, stop, health, busy_poll)
            health.starting = None
        except RuntimeError as exc:  # the port could not be bound
            log.error("cannot serve the gRPC API on port %d: %s", settings.grpc_port, exc)
            failed = True
    if failed:
        stop.set()
    else:
        log.info(
            "statecar sidecar %s serving the state API on http://%s:%d%s (stores: %s%s)",
            settings.app_id or "(no app id)",
            settings.listen_address,
            settings.http_port,
            f" and gRPC {settings.listen_address}:{grpc_server.port}" if grpc_server else "",
            ", ".join(sorted(runtime.stores)) or "none",
            f"; not ready: {', '.join(sorted(runtime.failed))}" if runtime.failed else "",
        )
        # Objects alive now live for the whole process: take them out of the GC's sight. The
        # command line paused the collector before the imports (statecar_cli.main), which
        # saves the ~50 collections they would trigger; only ~500 of ~46,000 objects are
        # garbage by now, so they are frozen too rather than paying a ~10 ms collection.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        if ready is not None:
            ready()
    gc.enable()
    reload_task = asyncio.create_task(reloader.run())
    await stop.wait()
    reload_task.cancel()
    await stop_within(settings.shutdown_grace, grpc_server, servers)
    await runtime.close()
    return 1 if failed else 0


async def stop_within(
    grace: float, grpc_server: GrpcServer | None, servers: list[HttpServer]
) -> bool:
    """daprd's graceful shutdown (`--dapr-graceful-shutdown-seconds`): every port stops accepting
    at once, the calls in flight on both transports get `grace` seconds together (`math.inf`: as
    long as they take), then what still runs is cancelled; whether all finished in time.

    daprd bounds its whole shutdown by the grace period (dapr pkg/runtime/runtime.go,
    kit concurrency.RunnerCloserManager) and exits 1 from `log.Fatal` when it passes; statecar
    cancels the stragglers instead and exits cleanly: the stores are still closed in order.
    """
    bound = None if math.isinf(grace) else grace
    log.info(
        "stopping: no new connections; the calls in flight get %s",
        "as long as they take" if bound is None else f"{grace:g}s",
    )
    # Each listener closes its sockets now and cancels what still runs once `bound` has passed
    # (HttpServer.stop): a handler stuck on a store, say. The gRPC server stops listening now,
    # GOAWAYs every connection and aborts the ones still running calls once `grace` has passed
    # (grpcapi.http2.Server.stop).
    stopping: list[Awaitable[object]] = [server.stop(bound) for server in servers]
    if grpc_server is not None:
        stopping.append(grpc_server.server.stop(grace))
    results = await asyncio.gather(*stopping, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            log.error("shutdown: a server failed to stop cleanly: %r", result)
    in_time = all(result is True for result in results[: len(servers)])
    if not in_time:
        log.warning("shutdown: cancelled the calls still running after %gs", grace)
    return in_time


async def _start_grpc(
    settings: SidecarSettings,
    runtime: ComponentRuntime,
    metrics: Metrics,
    stop: asyncio.Event,
    health: Health,
    busy_poll: BusyPoll | None,
) -> GrpcServer:
    """The Dapr gRPC API; Shutdown stops the sidecar as SIGTERM would, health is /v1.0/healthz's.

    The port listens now; protobuf and the generated Dapr messages (~12 MiB) are imported on its
    first client, on a worker thread (grpcapi.port), so a sidecar whose app never calls gRPC
    never pays for them (bench/README.md, "Where the memory went").
    """
    # The state API listens already: a request that comes in during the ~3 ms import must not
    # wait for the importing thread to give up the GIL, which it does only every switch interval
    # (5 ms by default; bench/README.md, "Seventh pass").
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        await asyncio.to_thread(importlib.import_module, "statecar_sidecar.grpcapi.port")
    finally:
        sys.setswitchinterval(switch_interval)
    from statecar_sidecar.grpcapi import port as grpcapi_port

    return await grpcapi_port.start(
        runtime,
        metrics,
        shutdown=stop.set,
        host=settings.listen_address,
        port=settings.grpc_port,
        api_token=settings.api_token,
        max_message_bytes=settings.max_body_bytes,
        problems=health.problems,
        extra_hosts=settings.extra_listen_addresses,
        handshake_timeout=settings.read_header_timeout,
        max_connections=settings.max_connections,
        busy_poll=busy_poll,
    )


def run(settings: SidecarSettings) -> int:
    configure_logging(settings.log_level, settings.log_json)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    for folder in settings.components_paths:
        if not Path(folder).exists():
            log.error(
                "components path %s does not exist; create it or fix --components-path", folder
            )
            return 2
    return asyncio.run(serve(settings))
