"""
The gRPC port: `dapr.proto.runtime.v1.Dapr`, `grpc.health.v1.Health` and server reflection.

statecar's own asyncio HTTP/2 server (`http2`, `hpack`, `transport`) on the sidecar's event loop,
not grpcio: grpcio's asyncio server alone, answering a constant, cost 3.9-4.8x the HTTP API's
whole GET in CPU, and importing it ~13 MiB of RSS (docs/grpc.md "Transport", bench/
grpc_vs_http.py). The RPCs `service.DaprService` implements decode their request with the
generated protobuf classes (upb), check `dapr-api-token` (constant time), convert errors to
daprd's statuses and record `dapr_grpc_io_server_*`; every other RPC of the pinned `Dapr`
service answers UNIMPLEMENTED naming statecar and the RPC, after the same token check (daprd's
auth interceptor runs before any handler). Health and reflection need no token, so `grpcurl`
and Kubernetes gRPC probes work.

This module is the gRPC API as loaded: importing it imports protobuf and the state API's
generated messages, which `grpcapi.port` does on the port's first client, not at start-up.
dapr.proto itself (the `Dapr` service and, through its imports, the 13 files of the other
building blocks: ~0.85 MiB of descriptors) loads later still, on a worker thread, when first
needed: by a call to an RPC statecar does not implement (whether it exists is in dapr.proto) or
by reflection. An app calling the state RPCs (the SDKs' gRPC clients) never loads it.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.busypoll import BusyPoll
from statecar_sidecar.grpcapi.port import GrpcServer as GrpcServer  # where the sidecar names it
from statecar_sidecar.grpcapi.service import IMPLEMENTED, DaprService
from statecar_sidecar.grpcapi.status import DOMAIN, RpcError, StatusCode, from_dapr_error
from statecar_sidecar.grpcapi.transport import (
    Call,
    GrpcApplication,
    Metadata,
    Route,
    no_such_method,
)
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

log = logging.getLogger("statecar.grpc")

SERVICE: Final = "dapr.proto.runtime.v1.Dapr"
DAPR_PROTO_MODULE: Final = "statecar_sidecar._protos.dapr.proto.runtime.v1.dapr_pb2"
_PREFIX: Final = f"/{SERVICE}/"
HEALTH_SERVICE: Final = "grpc.health.v1.Health"
REFLECTION_SERVICE: Final = "grpc.reflection.v1alpha.ServerReflection"
TOKEN_HEADER: Final = "dapr-api-token"  # noqa: S105 -- the metadata key, not a token
#: How often a health Watch re-checks the stores to push a change.
WATCH_INTERVAL_S: Final = 5.0


def _unauthenticated(detail: str) -> RpcError:
    """daprd's `ErrorFromHTTPResponseCode(401, detail)` (pkg/api/grpc/auth.go)."""
    from google.rpc import error_details_pb2

    return RpcError(
        StatusCode.UNAUTHENTICATED,
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

    def check(self, metadata: Metadata) -> None:
        if self._token is None:
            return
        given = metadata.get(TOKEN_HEADER)
        if given is None:
            raise _unauthenticated("missing api token in request metadata")
        if not hmac.compare_digest(given.encode("latin-1"), self._token):
            raise _unauthenticated("authentication error: api token mismatch")


class _DaprProto:
    """dapr.proto's `Dapr` service descriptor, imported on a worker thread on first need (see the
    module's docstring); every caller awaits the one import."""

    def __init__(self) -> None:
        self._loading: asyncio.Future[ServiceDescriptor] | None = None

    async def service(self) -> ServiceDescriptor:
        if self._loading is None:
            self._loading = asyncio.ensure_future(asyncio.to_thread(_import_dapr_service))
        # Shielded: a call reset while it waits must not cancel the import the others await.
        return await asyncio.shield(self._loading)


def _import_dapr_service() -> ServiceDescriptor:
    service: ServiceDescriptor = importlib.import_module(
        DAPR_PROTO_MODULE
    ).DESCRIPTOR.services_by_name["Dapr"]
    return service


def _unary(
    name: str,
    call: Callable[[Any], Awaitable[Any]],
    guard: _Guard,
    metrics: Metrics,
) -> Route:
    path = f"{_PREFIX}{name}"
    parse = IMPLEMENTED[name].FromString

    async def handler(message: bytes, metadata: Metadata) -> bytes:
        started = time.perf_counter()
        try:
            guard.check(metadata)
            try:
                request = parse(message)
            except DecodeError as exc:
                raise RpcError(
                    StatusCode.INTERNAL, f"statecar: cannot parse the {path} request: {exc}"
                ) from None
            response = await call(request)
            data: bytes = response.SerializeToString()
        except RpcError as exc:
            error = exc
        except DaprError as exc:
            error = from_dapr_error(exc)
        except Exception as exc:  # an unexpected failure is INTERNAL, and logged
            log.exception("%s failed", path)
            error = RpcError(StatusCode.INTERNAL, f"statecar: {path} failed: {exc}")
        else:
            metrics.grpc(path, "OK", (time.perf_counter() - started) * 1000)
            return data
        metrics.grpc(path, error.code.name, (time.perf_counter() - started) * 1000)
        metrics.error_code(error.error_code, error.category)
        raise error

    return Route(unary=handler)


def _unimplemented(
    proto: _DaprProto, guard: _Guard, metrics: Metrics
) -> Callable[[str], Route | None]:
    """The route of every other `Dapr` path: answered as soon as the headers arrive, whatever
    the method's streaming shape, once dapr.proto says whether the RPC exists (a path that is no
    RPC is answered as the transport answers an unknown path, and not counted: a client must not
    grow the metrics' label sets at will)."""
    implemented = ", ".join(IMPLEMENTED)

    def route(path: str) -> Route | None:
        if not path.startswith(_PREFIX):
            return None

        async def handler(call: Call) -> None:
            service = await proto.service()
            if path[len(_PREFIX) :] not in service.methods_by_name:
                raise no_such_method(path)
            started = time.perf_counter()
            try:
                guard.check(call.metadata)
                error = RpcError(
                    StatusCode.UNIMPLEMENTED,
                    f"statecar does not implement {path}: it serves Dapr's state API over gRPC "
                    f"({implemented}); run daprd for the other building blocks",
                )
            except RpcError as exc:
                error = exc
            metrics.grpc(path, error.code.name, (time.perf_counter() - started) * 1000)
            raise error

        return Route(stream=handler)

    return route


# -- grpc.health.v1 ------------------------------------------------------------------------------


class _Health:
    """grpc.health.v1 that answers NOT_SERVING while a store does not answer (as /v1.0/healthz).

    `problems` is the HTTP health's measured, briefly cached store check, so a Kubernetes gRPC
    readiness probe and the HTTP one agree. The server ("") and the Dapr service are known;
    another name is NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch), as grpcio's servicer answers.
    """

    KNOWN: Final = ("", SERVICE)

    def __init__(self, problems: Callable[[], Awaitable[Mapping[str, str]]] | None) -> None:
        self._problems = problems

    async def _status(self, service: str) -> int:
        if service not in self.KNOWN:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self._problems is not None and await self._problems():
            return health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse.SERVING

    async def check(self, message: bytes, metadata: Metadata) -> bytes:
        request = _parse(health_pb2.HealthCheckRequest, message)
        if request.service not in self.KNOWN:
            raise RpcError(StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        status = await self._status(request.service)
        return health_pb2.HealthCheckResponse(status=status).SerializeToString()

    async def watch(self, call: Call) -> None:
        message = await call.read()
        request = _parse(health_pb2.HealthCheckRequest, message or b"")
        last: int | None = None
        while True:
            status = await self._status(request.service)
            if status != last:
                call.write(health_pb2.HealthCheckResponse(status=status).SerializeToString())
                last = status
            await asyncio.sleep(WATCH_INTERVAL_S)


def _parse(kind: Any, message: bytes) -> Any:
    try:
        return kind.FromString(message)
    except DecodeError as exc:
        raise RpcError(StatusCode.INTERNAL, f"cannot parse the request: {exc}") from None


# -- server reflection (grpc.reflection.v1alpha) ---------------------------------------------------


def _with_dependencies(file: FileDescriptor) -> list[bytes]:
    """`file` and everything it imports, serialized FileDescriptorProtos, `file` first."""
    seen: dict[str, bytes] = {}
    todo = [file]
    while todo:
        current = todo.pop()
        if current.name in seen:
            continue
        seen[current.name] = current.serialized_pb
        todo.extend(current.dependencies)
    return list(seen.values())


class _Reflection:
    """ServerReflectionInfo over the default descriptor pool, where the generated code of every
    served service (the committed `_protos`, health, reflection) registered its files."""

    def __init__(self, services: Sequence[str], proto: _DaprProto) -> None:
        self._services = sorted(services)
        self._pool = descriptor_pool.Default()
        self._proto = proto

    def answer(self, request: Any) -> Any:
        response = reflection_pb2.ServerReflectionResponse(
            valid_host=request.host, original_request=request
        )
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                for name in self._services:
                    response.list_services_response.service.add(name=name)
            elif kind == "file_by_filename":
                files = _with_dependencies(self._pool.FindFileByName(request.file_by_filename))
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            elif kind == "file_containing_symbol":
                file = self._pool.FindFileContainingSymbol(request.file_containing_symbol)
                response.file_descriptor_response.file_descriptor_proto.extend(
                    _with_dependencies(file)
                )
            elif kind == "all_extension_numbers_of_type":
                self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                response.all_extension_numbers_response.base_type_name = (
                    request.all_extension_numbers_of_type
                )
            else:  # file_containing_extension: statecar's protos declare no extensions
                raise KeyError(kind)
        except KeyError:
            response.ClearField("file_descriptor_response")
            response.error_response.error_code = int(StatusCode.NOT_FOUND)
            response.error_response.error_message = "not found"
        return response

    async def info(self, call: Call) -> None:
        await self._proto.service()  # dapr.proto's files in the pool before any lookup
        while (message := await call.read()) is not None:
            request = _parse(reflection_pb2.ServerReflectionRequest, message)
            call.write(self.answer(request).SerializeToString())


# -- the application -------------------------------------------------------------------------------


def application(
    runtime: ComponentRuntime,
    metrics: Metrics,
    *,
    shutdown: Callable[[], None] | None,
    api_token: str | None,
    max_message_bytes: int,
    problems: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
    busy_poll: BusyPoll | None = None,
) -> GrpcApplication:
    """Every route of the port: the `Dapr` service over `runtime` (`shutdown` stops the sidecar),
    health (`problems` is /v1.0/healthz's store check) and reflection; unary calls tell
    `busy_poll` when they start and end."""
    service = DaprService(runtime, metrics, shutdown=shutdown)
    guard = _Guard(api_token)
    proto = _DaprProto()
    routes = {
        f"{_PREFIX}{name}": _unary(name, getattr(service, name), guard, metrics)
        for name in IMPLEMENTED
    }
    health = _Health(problems)
    routes[f"/{HEALTH_SERVICE}/Check"] = Route(unary=health.check)
    routes[f"/{HEALTH_SERVICE}/Watch"] = Route(stream=health.watch)
    reflection = _Reflection((SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE), proto)
    routes[f"/{REFLECTION_SERVICE}/ServerReflectionInfo"] = Route(stream=reflection.info)
    return GrpcApplication(
        routes,
        max_message_bytes,
        fallback=_unimplemented(proto, guard, metrics),
        busy_poll=busy_poll,
    )
