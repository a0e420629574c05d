"""
Running the sidecar: open the stores, serve the state API and the ops port, reload, stop cleanly.

One process, one event loop (uvloop when installed), two uvicorn servers: the state API on
loopback and the ops port (health, metrics) where the kubelet can reach it; and, on the same
loop and loopback address, statecar's HTTP/2 server for the Dapr gRPC API (`grpcapi`). After start-up the
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn

from statecar_contract.components import ComponentError
from statecar_sidecar import loader, memory
from statecar_sidecar.api.health import Health
from statecar_sidecar.app import create_app, create_ops_app
from statecar_sidecar.listener import ListenerLimits, bounded_protocol
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
    # uvicorn logs "started" once per server; our own start line says what matters.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, root.level))


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


def _uvicorn(app: Any, host: str, port: int, limits: ListenerLimits) -> uvicorn.Server:
    """One of the sidecar's two servers, both on the running loop with httptools."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",
            # httptools, with read timeouts and a connection cap (`listener`).
            http=bounded_protocol(limits),
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            # Nothing proxies these ports: X-Forwarded-* parsing would only cost time on every
            # request (~2 µs a GET, bench/README.md "Where the time goes").
            proxy_headers=False,
        )
    )


def _api_logged(app: Any) -> Any:
    """daprd's `--enable-api-logging`: one info line per HTTP API call (method, path, status)."""
    api_log = logging.getLogger("statecar.api")

    async def logged(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 0

        async def capture(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await app(scope, receive, capture)
        api_log.info("HTTP API Called: %s %s %d", scope["method"], scope["path"], status)

    return logged


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
    if settings.api_logging:
        app = _api_logged(app)
    state_limits, ops_limits = listener_limits(settings)
    servers = [
        _uvicorn(app, address, settings.http_port, state_limits)
        for address in (settings.listen_address, *settings.extra_listen_addresses)
    ]
    if settings.metrics_port:
        ops = create_ops_app(health, metrics)
        servers.append(_uvicorn(ops, settings.metrics_address, settings.metrics_port, ops_limits))
    for server in servers:
        # We own the signals: both servers stop together when `stop` is set.
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]  # uvicorn would take SIGINT/SIGTERM per server
    if settings.grpc_port:
        health.starting = f"the gRPC API (port {settings.grpc_port}) is not listening yet"
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.005)
    failed = [t for t in tasks if t.done()]
    grpc_server: GrpcServer | None = None
    if not failed and settings.grpc_port:
        try:
            grpc_server = await _start_grpc(settings, runtime, metrics, stop, health)
            health.starting = None
        except RuntimeError as exc:  # the port could not be bound
            log.error("cannot serve the gRPC API on port %d: %s", settings.grpc_port, exc)
            failed = tasks
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
        # Objects alive now live for the whole process: take them out of the GC's sight.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        if ready is not None:
            ready()
    reload_task = asyncio.create_task(reloader.run())
    await stop.wait()
    reload_task.cancel()
    results = await stop_within(settings.shutdown_grace, grpc_server, servers, tasks)
    await runtime.close()
    for result in results:
        if isinstance(result, BaseException) or any(s for s in servers if not s.started):
            return 1
    return 0


def _not_a_cancelled_call(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


#: How long past the grace period the servers get to wind down before they are forced to.
_STOP_MARGIN = 1.0


async def stop_within(
    grace: float,
    grpc_server: GrpcServer | None,
    servers: list[uvicorn.Server],
    tasks: list[asyncio.Task[None]],
) -> list[BaseException | None]:
    """daprd's graceful shutdown (`--dapr-graceful-shutdown-seconds`): every port stops accepting
    at once, the calls in flight on both transports get `grace` seconds together (`math.inf`: as
    long as they take), then what still runs is cancelled; the servers' results, as `gather`'s.

    daprd bounds its whole shutdown by the grace period (dapr pkg/runtime/runtime.go,
    kit concurrency.RunnerCloserManager) and exits 1 from `log.Fatal` when it passes; statecar
    cancels the stragglers instead and exits cleanly: the stores are still closed in order.
    """
    bound = None if math.isinf(grace) else grace
    # A call cancelled at the bound is the bound working, not an error of the app's request:
    # uvicorn would log each one with a traceback (httptools_impl run_asgi).
    logging.getLogger("uvicorn.error").addFilter(_not_a_cancelled_call)
    log.info(
        "stopping: no new connections; the calls in flight get %s",
        "as long as they take" if bound is None else f"{grace:g}s",
    )
    for server in servers:
        # uvicorn closes its listener now and cancels its request tasks once `bound` has passed
        # (Server.shutdown): a handler stuck on a store or on a client's body, say.
        server.config.timeout_graceful_shutdown = bound  # type: ignore[assignment]  # typed int, used as asyncio.timeout(float)
        server.should_exit = True
    stopping: list[asyncio.Future[None]] = list(tasks)
    if grpc_server is not None:
        # The gRPC server stops listening now, GOAWAYs every connection and aborts the ones still
        # running calls once `grace` has passed (grpcapi.http2.Server.stop).
        stopping.append(asyncio.ensure_future(grpc_server.server.stop(grace)))
    _, pending = await asyncio.wait(
        stopping, timeout=None if bound is None else bound + _STOP_MARGIN
    )
    if pending:
        log.warning("shutdown: forcing %d server(s) still stopping after %gs", len(pending), grace)
        for server in servers:
            server.force_exit = True
        for future in pending:
            future.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [None if isinstance(r, asyncio.CancelledError) else r for r in results]


async def _start_grpc(
    settings: SidecarSettings,
    runtime: ComponentRuntime,
    metrics: Metrics,
    stop: asyncio.Event,
    health: Health,
) -> GrpcServer:
    """The Dapr gRPC API; Shutdown stops the sidecar as SIGTERM would, health is /v1.0/healthz's.

    The port listens now; protobuf and the generated Dapr messages (~12 MiB) are imported on its
    first client, on a worker thread (grpcapi.port), so a sidecar whose app never calls gRPC
    never pays for them (bench/README.md, "Where the memory went").
    """
    await asyncio.to_thread(importlib.import_module, "statecar_sidecar.grpcapi.port")
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
