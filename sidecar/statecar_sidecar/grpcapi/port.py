"""
The gRPC port as the sidecar opens it: listening from start-up, the API loaded by its first client.

The gRPC API (`grpcapi.server`: protobuf's upb, the generated Dapr messages, health and
reflection) costs ~12 MiB of RSS, a quarter of an idle sidecar's, and many apps never call it
(they use the HTTP API, or no state at all): bench/README.md, "Where the memory went". So the
port listens at once, as daprd's does (health's `starting` gate waits for it), but what answers
its calls is imported only when a connection has sent the HTTP/2 client preface — a real client,
not a TCP probe or a port scan. The import runs on a worker thread, as the start-up import did,
so the event loop keeps serving HTTP; the HTTP/2 handshake (SETTINGS, PING, WINDOW_UPDATE)
proceeds meanwhile, since `http2` needs no protobuf. A call arriving before the load is done
keeps its stream open and buffers its body; once loaded, the API takes the stream as if it had
just arrived. If the load fails, every call is answered INTERNAL naming the cause, never left
hanging, and the failure is logged once with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from statecar_sidecar.busypoll import BusyPoll
from statecar_sidecar.grpcapi import http2
from statecar_sidecar.grpcapi.status import RpcError, StatusCode
from statecar_sidecar.grpcapi.transport import GrpcApplication, trailers_only
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

log = logging.getLogger("statecar.grpc")

#: A connection that has not sent the HTTP/2 preface within this is closed (slowloris).
HANDSHAKE_TIMEOUT_S: Final = 10.0
MAX_CONNECTIONS: Final = 1024


class LazyApplication:
    """An `http2.Application` that loads the real one (`load`, on a worker thread) on the first
    client and holds the streams that come before it is ready.

    `max_message_bytes` bounds a held stream's body as the loaded application would.
    """

    def __init__(self, load: Callable[[], GrpcApplication], max_message_bytes: int) -> None:
        self._load = load
        self._limit = max_message_bytes + 5  # the gRPC message prefix
        self._loading: asyncio.Future[GrpcApplication] | None = None
        self._started = 0.0
        self._waiting: list[http2.Stream] = []
        self._server: http2.Server | None = None
        #: The loaded application, once it is.
        self.loaded: GrpcApplication | None = None
        #: The answer to every call once loading has failed.
        self.failure: RpcError | None = None

    def bind(self, server: http2.Server) -> None:
        """Load when `server` meets its first client; then its new connections skip this."""
        self._server = server
        server.on_client = self.start_loading

    def start_loading(self) -> None:
        if self._loading is not None:
            return
        self._started = time.perf_counter()
        # Not a bare task: the loop keeps only weak references to those (asyncio docs).
        self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))
        self._loading.add_done_callback(self._done)

    def request(self, stream: http2.Stream) -> None:
        if self.loaded is not None:
            self.loaded.request(stream)
        elif self.failure is not None:
            stream.send_headers(trailers_only(self.failure), end_stream=True)
        else:
            self.start_loading()  # bind()'s hook has run already; this is for a bare use
            stream.limit = self._limit
            self._waiting.append(stream)

    def _done(self, loading: asyncio.Future[GrpcApplication]) -> None:
        try:
            self.loaded = loading.result()
        except asyncio.CancelledError:  # the sidecar stops
            self.failure = RpcError(StatusCode.UNAVAILABLE, "statecar is stopping")
        except BaseException as exc:  # whatever stopped it (logged), no call may hang
            log.error("cannot serve the gRPC API: loading it failed", exc_info=exc)
            self.failure = RpcError(
                StatusCode.INTERNAL,
                f"statecar cannot serve the gRPC API: loading it failed with "
                f"{type(exc).__name__}: {exc} (see the sidecar's log; the HTTP API still "
                "serves). Reinstall statecar with its dependencies (protobuf, "
                "grpcio-health-checking, grpcio-reflection)",
            )
        else:
            log.info(
                "gRPC API loaded for its first client in %.0f ms",
                (time.perf_counter() - self._started) * 1000,
            )
            if self._server is not None:
                self._server.app = self.loaded
        waiting, self._waiting = self._waiting, []
        for stream in waiting:
            if stream.closed:  # reset by the client, or its connection is gone
                continue
            self.request(stream)
            # The connection calls `complete` when the body ends (or overflows): for a held
            # stream that may have happened already, before the application could set it.
            complete = stream.complete
            if complete is not None and (stream.ended or stream.overflowed):
                stream.complete = None
                complete(stream)


@dataclass(frozen=True)
class GrpcServer:
    """The running gRPC listener: its server, the port it bound and the app it serves."""

    server: http2.Server
    port: int
    application: LazyApplication


async def start(
    runtime: ComponentRuntime,
    metrics: Metrics,
    *,
    shutdown: Callable[[], None] | None,
    host: str,
    port: int,
    api_token: str | None,
    max_message_bytes: int,
    problems: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
    extra_hosts: Sequence[str] = (),
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    busy_poll: BusyPoll | None = None,
) -> GrpcServer:
    """The gRPC API over `runtime` on `host:port` and each of `extra_hosts` on the same port
    (port 0 picks a free one: see `.port`); an IPv6 address is given bare (`::1`). `shutdown`
    stops the sidecar (the Shutdown RPC), `problems` is /v1.0/healthz's store check (gRPC
    health), and `busy_poll` is the process's (`statecar_sidecar.busypoll`). A port that cannot be
    bound raises RuntimeError naming it."""

    def load() -> GrpcApplication:
        from statecar_sidecar.grpcapi import server as api

        return api.application(
            runtime,
            metrics,
            shutdown=shutdown,
            api_token=api_token,
            max_message_bytes=max_message_bytes,
            problems=problems,
            busy_poll=busy_poll,
        )

    application = LazyApplication(load, max_message_bytes)
    server = http2.Server(
        application, handshake_timeout=handshake_timeout, max_connections=max_connections
    )
    application.bind(server)
    try:
        bound = await server.listen(host, port)
        for extra in extra_hosts:
            await server.listen(extra, bound)
    except OSError as exc:
        await server.stop()
        raise RuntimeError(f"cannot listen on {host}:{port} for gRPC: {exc}") from exc
    return GrpcServer(server, bound, application)
