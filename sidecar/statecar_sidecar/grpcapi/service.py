"""
The `dapr.proto.runtime.v1.Dapr` RPCs statecar serves, over the runtime's stores.

Each state RPC decodes its protobuf request into the shared policy's items (`api.policy`: the
same `SaveItem`/`DeleteItem`/`Options` the HTTP bodies become), lets the policy decide the store
operations, runs them, and answers as daprd's `pkg/api/grpc/grpc.go` does: a missing key is an
empty `GetStateResponse`, an ETag mismatch ABORTED, an invalid ETag INVALID_ARGUMENT, a refused
transaction INTERNAL (research/dapr-state-spec.md §8). Values are the request's bytes, stored
and returned unchanged. gRPC has no `concurrency`/`consistency` headers, so the policy's header
arguments are always None here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson
from google.protobuf import empty_pb2

from statecar_contract import package_version
from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import metadata_pb2, state_pb2
from statecar_sidecar.api import errors, policy
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.api.metadata import capabilities
from statecar_sidecar.grpcapi.status import RpcError, StatusCode, basic, from_dapr_error
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import BoundStore, ComponentRuntime
from statecar_sidecar.stores.base import Feature
from statecar_sidecar.stores.errors import (
    ETagInvalidError,
    ETagMismatchError,
    RequestRefusedError,
    StoreError,
    TransactionError,
)

if TYPE_CHECKING:  # dapr.proto itself (and the 13 files it imports) loads only when needed
    from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2

_CONCURRENCY: Final = {
    common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE: "first-write",
    common_pb2.StateOptions.CONCURRENCY_LAST_WRITE: "last-write",
}
_CONSISTENCY: Final = {
    common_pb2.StateOptions.CONSISTENCY_EVENTUAL: "eventual",
    common_pb2.StateOptions.CONSISTENCY_STRONG: "strong",
}
_EMPTY: Final = empty_pb2.Empty()
_JSON: Final = "application/json"


def _options(item: common_pb2.StateItem | state_pb2.DeleteStateRequest) -> policy.Options:
    if not item.HasField("options"):
        return policy.Options()
    return policy.Options(
        _CONCURRENCY.get(item.options.concurrency), _CONSISTENCY.get(item.options.consistency)
    )


def _etag(item: common_pb2.StateItem | state_pb2.DeleteStateRequest) -> str | None:
    # An empty ETag means none, as `"etag": ""` does over HTTP (contract.md).
    return item.etag.value or None if item.HasField("etag") else None


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_error(error_code: str, message: str, failures: Sequence[Exception]) -> RpcError:
    """daprd's `getStateErrorCode`: ETag mismatch ABORTED, invalid ETag INVALID_ARGUMENT."""
    text = f"{message}: " + "; ".join(str(f) for f in failures)
    if all(isinstance(f, ETagMismatchError | ETagInvalidError) for f in failures):
        if any(isinstance(f, ETagInvalidError) for f in failures):
            return basic(StatusCode.INVALID_ARGUMENT, error_code, text)
        return basic(StatusCode.ABORTED, error_code, text)
    return basic(StatusCode.INTERNAL, error_code, text)


class DaprService:
    """The implemented RPCs; each takes the decoded request and returns the response message.

    Errors are raised as `RpcError` (or the policy's `DaprError`, converted by the caller in
    `server`), never written to the gRPC context here, so the RPCs are plain coroutines.
    """

    def __init__(
        self,
        runtime: ComponentRuntime,
        metrics: Metrics,
        *,
        shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._shutdown = shutdown

    def _bound(self, store_name: str) -> BoundStore:
        return policy.serving_store(store_name, self.runtime)

    def _record(self, bound: BoundStore, operation: str, ok: bool, started: float) -> None:
        loop_time = asyncio.get_running_loop().time()
        self.metrics.state(bound.name, operation, ok, (loop_time - started) * 1000)

    # -- state -------------------------------------------------------------------------------

    async def GetState(self, request: state_pb2.GetStateRequest) -> state_pb2.GetStateResponse:
        bound = self._bound(request.store_name)
        stored = policy.stored_key(bound, request.key)
        strong = policy.read_strong(bound, _CONSISTENCY.get(request.consistency), None)
        started = asyncio.get_running_loop().time()
        try:
            item = await bound.store.get(stored, strong=strong)
        except StoreError as exc:
            self._record(bound, "get", False, started)
            raise basic(
                StatusCode.INTERNAL,
                "ERR_STATE_GET",
                f"fail to get {request.key} from state store {request.store_name}: {exc}",
            ) from exc
        self._record(bound, "get", True, started)
        if item is None:
            return state_pb2.GetStateResponse()
        if item.expire_at is None:
            return state_pb2.GetStateResponse(data=item.value, etag=item.etag)
        return state_pb2.GetStateResponse(
            data=item.value, etag=item.etag, metadata={"ttlExpireTime": _rfc3339(item.expire_at)}
        )

    async def GetBulkState(
        self, request: state_pb2.GetBulkStateRequest
    ) -> state_pb2.GetBulkStateResponse:
        """All keys in one store round trip; `parallelism` is accepted and has nothing to cap.

        daprd fans a bulk get out into at most `parallelism` concurrent single gets; statecar's
        backends read the whole batch at once (MGET, one SELECT), which is never slower.
        """
        bound = self._bound(request.store_name)
        keys = list(request.keys)
        if not keys:
            return state_pb2.GetBulkStateResponse()
        stored = [policy.stored_key(bound, k) for k in keys]
        started = asyncio.get_running_loop().time()
        try:
            items = await bound.store.bulk_get(stored)
        except StoreError as exc:
            self._record(bound, "bulk_get", False, started)
            raise basic(StatusCode.INTERNAL, "ERR_STATE_BULK_GET", str(exc)) from exc
        self._record(bound, "bulk_get", True, started)
        response = state_pb2.GetBulkStateResponse()
        for key, item in zip(keys, items, strict=True):
            if item is None:
                response.items.add(key=key)
            elif item.expire_at is None:
                response.items.add(key=key, data=item.value, etag=item.etag)
            else:
                response.items.add(
                    key=key,
                    data=item.value,
                    etag=item.etag,
                    metadata={"ttlExpireTime": _rfc3339(item.expire_at)},
                )
        return response

    async def SaveState(self, request: state_pb2.SaveStateRequest) -> empty_pb2.Empty:
        bound = self._bound(request.store_name)
        if not request.states:
            return _EMPTY
        items: list[policy.SaveItem] = []
        for state in request.states:
            if not state.key:
                raise basic(
                    StatusCode.INVALID_ARGUMENT, "ERR_STATE_SAVE", "state key cannot be empty"
                )
            metadata: Mapping[str, str] = state.metadata
            if metadata.get("contentType") == _JSON:
                # daprd decodes such a value as JSON; statecar checks it and keeps the bytes.
                try:
                    orjson.loads(state.value)
                except orjson.JSONDecodeError as exc:
                    raise errors.malformed(
                        f"state {state.key!r} has contentType {_JSON} but its value is not "
                        f"JSON: {exc}"
                    ) from None
            items.append(
                policy.SaveItem(state.key, state.value, _etag(state), _options(state), metadata)
            )
        ops = policy.save_operations(bound, items, None, None)
        message = f"failed saving state in state store {request.store_name}"
        started = asyncio.get_running_loop().time()
        if len(ops) == 1:
            try:
                await bound.store.set(ops[0])
            except StoreError as exc:
                self._record(bound, "set", False, started)
                raise _write_error("ERR_STATE_SAVE", message, [exc]) from exc
            self._record(bound, "set", True, started)
            return _EMPTY
        try:
            results = await bound.store.set_many(ops)
        except StoreError as exc:
            self._record(bound, "bulk_set", False, started)
            raise _write_error("ERR_STATE_SAVE", message, [exc]) from exc
        failures = [r for r in results if r is not None]
        self._record(bound, "bulk_set", not failures, started)
        if failures:
            raise _write_error("ERR_STATE_SAVE", message, failures)
        return _EMPTY

    async def DeleteState(self, request: state_pb2.DeleteStateRequest) -> empty_pb2.Empty:
        bound = self._bound(request.store_name)
        stored = policy.stored_key(bound, request.key)
        op = policy.delete_operation(bound, stored, _etag(request), _options(request), None, None)
        started = asyncio.get_running_loop().time()
        try:
            await bound.store.delete(op)
        except StoreError as exc:
            self._record(bound, "delete", False, started)
            raise _write_error(
                "ERR_STATE_DELETE", f"failed deleting state with key {request.key}", [exc]
            ) from exc
        self._record(bound, "delete", True, started)
        return _EMPTY

    async def DeleteBulkState(self, request: state_pb2.DeleteBulkStateRequest) -> empty_pb2.Empty:
        """Each key on its own, as daprd's BulkDelete: not atomic, every failure reported."""
        bound = self._bound(request.store_name)
        ops = [
            policy.delete_operation(
                bound, policy.stored_key(bound, s.key), _etag(s), _options(s), None, None
            )
            for s in request.states
        ]
        failures: list[Exception] = []
        for op in ops:
            started = asyncio.get_running_loop().time()
            try:
                await bound.store.delete(op)
            except StoreError as exc:
                self._record(bound, "delete", False, started)
                failures.append(exc)
            else:
                self._record(bound, "delete", True, started)
        if failures:
            raise _write_error(
                "ERR_STATE_BULK_DELETE",
                f"failed deleting state in state store {request.store_name}",
                failures,
            )
        return _EMPTY

    async def ExecuteStateTransaction(
        self, request: state_pb2.ExecuteStateTransactionRequest
    ) -> empty_pb2.Empty:
        bound = self._bound(request.storeName)
        if Feature.TRANSACTIONAL not in bound.store.features:
            raise errors.transactions_not_supported(request.storeName)
        items: list[policy.SaveItem | policy.DeleteItem] = []
        for operation in request.operations:
            state = operation.request
            policy.stored_key(bound, state.key)  # daprd checks the key before the type
            if operation.operationType == "upsert":
                items.append(
                    policy.SaveItem(
                        state.key, state.value, _etag(state), _options(state), state.metadata
                    )
                )
            elif operation.operationType == "delete":
                items.append(
                    policy.DeleteItem(state.key, _etag(state), _options(state), state.metadata)
                )
            else:
                raise basic(
                    StatusCode.UNIMPLEMENTED,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    f"operation type {operation.operationType} not supported",
                )
        if not items:
            return _EMPTY
        ops = policy.transaction_operations(bound, items, None, None)
        started = asyncio.get_running_loop().time()
        try:
            await bound.store.transact(ops)
        except StoreError as exc:
            self._record(bound, "transaction", False, started)
            reason: StoreError = exc
            if isinstance(exc, TransactionError):
                reason = StoreError(
                    f"operation {exc.index} on key {items[exc.index].key!r} failed, nothing was "
                    f"applied: {exc.cause}"
                )
            raise basic(
                # As HTTP's 400: the client must change the request (keys on several slots).
                StatusCode.INVALID_ARGUMENT
                if isinstance(exc, RequestRefusedError)
                else StatusCode.INTERNAL,
                "ERR_STATE_TRANSACTION",
                f"error while executing state transaction: {reason}",
            ) from exc
        self._record(bound, "transaction", True, started)
        return _EMPTY

    async def QueryStateAlpha1(
        self, request: state_pb2.QueryStateRequest
    ) -> state_pb2.QueryStateResponse:
        bound = self._bound(request.store_name)
        if Feature.QUERY_API not in bound.store.features:
            raise errors.query_not_supported(request.store_name)
        # On the first query, as the HTTP API does (api/handlers.py): not a cold start's cost.
        from statecar_sidecar.stores.query import QueryError, parse_query

        try:
            query = parse_query(orjson.loads(request.query))
        except orjson.JSONDecodeError as exc:
            raise errors.query_failed(
                request.store_name, f"failed to parse JSON query body: {exc}"
            ) from None
        except QueryError as exc:
            raise errors.query_failed(request.store_name, str(exc)) from None
        started = asyncio.get_running_loop().time()
        try:
            page = await bound.store.query(query, key_prefix=bound.prefix)
        except StoreError as exc:
            self._record(bound, "query", False, started)
            raise errors.query_failed(request.store_name, str(exc)) from exc
        self._record(bound, "query", True, started)
        response = state_pb2.QueryStateResponse(token=page.token or "")
        for result in page.results:
            response.results.add(key=result.key, data=result.data, etag=result.etag)
        return response

    # -- metadata and lifecycle ----------------------------------------------------------------

    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest
    ) -> metadata_pb2.GetMetadataResponse:
        """The same document as `GET /v1.0/metadata` (`api.metadata`), in daprd's message.

        The version is read here, not at import: importlib.metadata costs the loaded gRPC API
        ~0.8 MiB of RSS that only this RPC needs (and `GET /v1.0/metadata`, which reads it so).
        """
        version = package_version()
        extended = {"daprRuntimeVersion": f"statecar-{version}"}
        extended.update(self.runtime.extended_metadata)
        if self.runtime.last_reload_error:
            extended["statecarLastReloadError"] = self.runtime.last_reload_error
        return metadata_pb2.GetMetadataResponse(
            id=self.runtime.app_id,
            runtime_version=f"statecar-{version}",
            registered_components=[
                metadata_pb2.RegisteredComponents(
                    name=b.name,
                    type=b.component.type,
                    version=b.component.version,
                    capabilities=capabilities(b.store.features),
                )
                for b in sorted(self.runtime.stores.values(), key=lambda b: b.name)
            ],
            extended_metadata=extended,
        )

    async def SetMetadata(self, request: metadata_pb2.SetMetadataRequest) -> empty_pb2.Empty:
        """An extended attribute, shown by GetMetadata and `GET /v1.0/metadata` until restart."""
        self.runtime.extended_metadata[request.key] = request.value
        return _EMPTY

    async def Shutdown(
        self, request: dapr_pb2.ShutdownRequest | empty_pb2.Empty
    ) -> empty_pb2.Empty:
        """Stop the sidecar gracefully, as daprd does; refused when nothing can stop it."""
        if self._shutdown is None:
            raise RpcError(
                StatusCode.UNIMPLEMENTED,
                "statecar does not implement Shutdown here: this server has no stop hook",
            )
        self._shutdown()
        return _EMPTY


#: RPC name (the `DaprService` method answering it) -> the class its request is parsed with;
#: every other RPC is UNIMPLEMENTED. Each is the RPC's input type in dapr.proto, checked by
#: tests/unit/test_grpc_port.py, except Shutdown's: `ShutdownRequest` has no fields (dapr.proto),
#: so `Empty` parses it alike without loading dapr.proto's descriptors (grpcapi.server).
IMPLEMENTED: Final[Mapping[str, Any]] = {
    "GetState": state_pb2.GetStateRequest,
    "GetBulkState": state_pb2.GetBulkStateRequest,
    "SaveState": state_pb2.SaveStateRequest,
    "DeleteState": state_pb2.DeleteStateRequest,
    "DeleteBulkState": state_pb2.DeleteBulkStateRequest,
    "ExecuteStateTransaction": state_pb2.ExecuteStateTransactionRequest,
    "QueryStateAlpha1": state_pb2.QueryStateRequest,
    "GetMetadata": metadata_pb2.GetMetadataRequest,
    "SetMetadata": metadata_pb2.SetMetadataRequest,
    "Shutdown": empty_pb2.Empty,
}

__all__ = ["IMPLEMENTED", "DaprError", "DaprService", "RpcError", "from_dapr_error"]
