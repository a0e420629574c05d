"""
The gRPC port: `dapr.proto.runtime.v1.Dapr`, `grpc.health.v1.Health` and server reflection.

grpcio's C-core server with its asyncio API, on the sidecar's event loop. Every RPC of the
`Dapr` service (all 74 of the pinned release) is registered from the service descriptor: the ones
`service.DaprService` implements run through `_unary`, which checks `dapr-api-token` (constant
time), converts errors to daprd's statuses and records `dapr_grpc_io_server_*`; the others
answer UNIMPLEMENTED naming statecar and the RPC, after the same token check (daprd's auth
interceptor runs before any handler). Health and reflection need no token, so `grpcurl` and
Kubernetes gRPC probes work.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.grpcapi.service import IMPLEMENTED, DaprService
from statecar_sidecar.grpcapi.status import DOMAIN, RpcError, from_dapr_error
from statecar_sidecar.metrics import Metrics

log = logging.getLogger("statecar.grpc")

SERVICE: Final = dapr_pb2.DESCRIPTOR.services_by_name["Dapr"]
#: The RPCs registered with grpcio (see `start`): the state data path.
HOT: Final = ("GetState", "SaveState", "GetBulkState", "DeleteState", "ExecuteStateTransaction")
TOKEN_HEADER: Final = "dapr-api-token"  # noqa: S105 -- the metadata key, not a token


def _unauthenticated(detail: str) -> RpcError:
    """daprd's `ErrorFromHTTPResponseCode(401, detail)` (pkg/api/grpc/auth.go)."""
    from google.rpc import error_details_pb2

    return RpcError(
        grpc.StatusCode.UNAUTHENTICATED,
        "Unauthorized",
        [
            error_details_pb2.ErrorInfo(
                reason="Unauthorized",
                domain=DOMAIN,
                metadata={"http.code": "401", "http.error_message": detail},
            )
        ],
    )


class _Guard:
    """The API token check: every `Dapr` RPC carries `dapr-api-token` when a token is set."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def check(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if self._token is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == TOKEN_HEADER:
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._token):
                    return
                raise _unauthenticated("authentication error: api token mismatch")
        raise _unauthenticated("missing api token in request metadata")


def _unary(
    method: MethodDescriptor,
    call: Callable[[Any], Awaitable[Any]],
    guard: _Guard,
    metrics: Metrics,
) -> grpc.RpcMethodHandler[Any, Any]:
    path = f"/{SERVICE.full_name}/{method.name}"
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            guard.check(context)
            response = await call(request)
        except RpcError as exc:
            error = exc
        except DaprError as exc:
            error = from_dapr_error(exc)
        except Exception as exc:  # an unexpected failure is INTERNAL, and logged
            log.exception("%s failed", path)
            error = RpcError(grpc.StatusCode.INTERNAL, f"statecar: {path} failed: {exc}")
        else:
            metrics.grpc(path, "OK", (time.perf_counter() - started) * 1000)
            return response
        metrics.grpc(path, error.code.name, (time.perf_counter() - started) * 1000)
        metrics.error_code(error.error_code, error.category)
        await context.abort(error.code, error.message, error.trailer())

    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )


def _unimplemented(
    method: MethodDescriptor, guard: _Guard, metrics: Metrics
) -> grpc.RpcMethodHandler[Any, Any]:
    path = f"/{SERVICE.full_name}/{method.name}"
    message = (
        f"statecar does not implement {path}: it serves Dapr's state API over gRPC "
        f"({', '.join(IMPLEMENTED)}); run daprd for the other building blocks"
    )

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        started = time.perf_counter()
        try:
            guard.check(context)
            error = RpcError(grpc.StatusCode.UNIMPLEMENTED, message)
        except RpcError as exc:
            error = exc
        metrics.grpc(path, error.code.name, (time.perf_counter() - started) * 1000)
        await context.abort(error.code, error.message, error.trailer())

    # Requests are never decoded: the bytes arrive as they are and are dropped.
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(handler)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(handler)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(handler)
    return grpc.unary_unary_rpc_method_handler(handler)


def method_handlers(
    service: DaprService, metrics: Metrics, api_token: str | None
) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """One handler per RPC of the pinned `Dapr` service, by method name."""
    guard = _Guard(api_token)
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in SERVICE.methods:
        if method.name in IMPLEMENTED:
            handlers[method.name] = _unary(method, getattr(service, method.name), guard, metrics)
        else:
            handlers[method.name] = _unimplemented(method, guard, metrics)
    return handlers


class _Health(health.aio.HealthServicer):
    """grpc.health.v1 that answers NOT_SERVING while a store does not answer (as /v1.0/healthz).

    `problems` is the HTTP health's measured, briefly cached store check, so a Kubernetes gRPC
    readiness probe and the HTTP one agree.
    """

    def __init__(self, problems: Callable[[], Awaitable[Mapping[str, str]]] | None) -> None:
        super().__init__()
        self._problems = problems

    async def Check(  # the RPC's name, as grpc_health spells it
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        serving = health_pb2.HealthCheckResponse.SERVING
        if response.status == serving and self._problems is not None and await self._problems():
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        return response


@dataclass(frozen=True)
class GrpcServer:
    server: grpc.aio.Server
    port: int


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def start(
    service: DaprService,
    metrics: Metrics,
    *,
    host: str,
    port: int,
    api_token: str | None,
    max_message_bytes: int,
    problems: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
    extra_hosts: Sequence[str] = (),
) -> GrpcServer:
    """A started server on `host:port` and each of `extra_hosts` on the same port (port 0 picks
    a free one: see `.port`); an IPv6 address is given bare (`::1`)."""
    server = grpc.aio.server(
        options=[
            # daprd's --max-body-size bounds gRPC messages too.
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Linux SO_REUSEPORT would let a second sidecar bind the same port silently.
            ("grpc.so_reuseport", 0),
        ]
    )
    handlers = method_handlers(service, metrics, api_token)
    # Only the hot RPCs are *registered* methods. grpcio's asyncio server keeps one pending
    # request per registered method and waits on all of them for every call: with the service's
    # 74 methods registered, that wait cost as much as the rest of a GetState
    # (bench/grpc_vs_http.py, docs/grpc.md). Every other RPC goes through a generic handler.
    server.add_registered_method_handlers(SERVICE.full_name, {name: handlers[name] for name in HOT})
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE.full_name, {name: h for name, h in handlers.items() if name not in HOT}
            ),
        )
    )
    health_servicer = _Health(problems)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{_bracketed(host)}:{port}")
    for extra in extra_hosts:
        server.add_insecure_port(f"{_bracketed(extra)}:{bound}")
    await server.start()
    for name in ("", SERVICE.full_name):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcServer(server, bound)
