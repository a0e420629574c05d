"""
The six Dapr state API handlers: get, save, delete, bulk get, transaction and query.

Each one finds the store, has `bodies` decode the request and `policy` decide what to run, runs
it, records it with `_observe` (the one place that records `dapr_component_state_*`), and maps a store
error to daprd's status and code (Dapr docs, state API reference "HTTP Response codes"). Routing, the token and
the sending of replies belong to `routing`; nothing here knows the URL.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from statecar_sidecar.api import bodies, errors, policy
from statecar_sidecar.api.asgi import JSON, NO_CONTENT, Reply, Request
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.api.policy import NO_OPTIONS, SaveItem
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import BoundStore, ComponentRuntime
from statecar_sidecar.stores.base import DeleteOp, Feature, SetOp
from statecar_sidecar.stores.errors import (
    EncryptedQueryError,
    ETagInvalidError,
    ETagMismatchError,
    OutcomeUnknownError,
    RequestRefusedError,
    StoreError,
    TransactionError,
)

T = TypeVar("T")


class StateHandlers:
    """The handlers over one runtime; each takes the request and the decoded path parameters."""

    def __init__(self, runtime: ComponentRuntime, metrics: Metrics, *, max_body_bytes: int) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    # -- shared steps ------------------------------------------------------------------------

    def _bound(self, store_name: str) -> BoundStore:
        return policy.serving_store(store_name, self.runtime)

    async def _timed(
        self,
        bound: BoundStore,
        operation: str,
        call: Awaitable[T],
        succeeded: Callable[[T], bool] | None = None,
    ) -> T:
        """Await one store call and record its latency and outcome under daprd's names.

        A `StoreError` counts as a failure and is re-raised for the handler to map. A result
        counts as a failure when `succeeded` refuses it (a multi-item save reports per item).
        """
        started = time.perf_counter()
        try:
            result = await call
        except StoreError:
            self._observe(bound, operation, False, started)
            raise
        self._observe(bound, operation, succeeded is None or succeeded(result), started)
        return result

    def _observe(self, bound: BoundStore, operation: str, succeeded: bool, started: float) -> None:
        """Record one store call, begun at `perf_counter()` `started`, under daprd's names."""
        self.metrics.state(bound.name, operation, succeeded, (time.perf_counter() - started) * 1000)

    # -- handlers ----------------------------------------------------------------------------

    async def get(self, request: Request, store_name: str, key: str) -> Reply:
        bound = self._bound(store_name)
        stored = policy.stored_key(bound, key)
        params, _ = request.query()
        strong = policy.read_strong(
            bound, params.get("consistency"), request.header(b"consistency")
        )
        # Timed here rather than through `_timed`: the two hottest calls (this and a one-item
        # save) await one coroutine frame less (bench/README.md, S3).
        started = time.perf_counter()
        try:
            item = await bound.store.get(stored, strong=strong)
        except StoreError as exc:
            self._observe(bound, "get", False, started)
            raise DaprError(
                500, "ERR_STATE_GET", f"fail to get {key} from state store {store_name}: {exc}"
            ) from exc
        self._observe(bound, "get", True, started)
        if item is None:
            return NO_CONTENT
        headers = [JSON, (b"etag", item.etag.encode())]
        if item.expire_at is not None:
            headers.append((b"metadata.ttlexpiretime", _rfc3339(item.expire_at)))
        return Reply(200, item.value, headers)

    async def save(self, request: Request, store_name: str) -> Reply:
        bound = self._bound(store_name)  # before the body, as daprd: unknown store wins
        _, query_metadata = request.query()
        body = request.read_body(self.max_body_bytes)
        if body is None:
            body = await request.body(self.max_body_bytes)
        concurrency, consistency = request.header(b"concurrency"), request.header(b"consistency")
        sole = bodies.sole_item(body)
        if sole is not None:
            # The usual save, `[{"key":k,"value":v}]`: its operation straight from the body.
            op = policy.set_operation(
                bound, sole[0], sole[1], None, NO_OPTIONS, query_metadata, concurrency, consistency
            )
        else:
            items = bodies.parse_save_in_full(body, query_metadata)
            if not items:
                return NO_CONTENT
            if len(items) > 1:
                return await self._save_many(bound, store_name, items, concurrency, consistency)
            op = policy.operation(bound, items[0], concurrency, consistency)
        started = time.perf_counter()  # timed here, as in `get`
        try:
            await bound.store.set(op)
        except StoreError as exc:
            self._observe(bound, "set", False, started)
            raise _write_error(
                "ERR_STATE_SAVE", f"failed saving state in state store {store_name}", [exc]
            ) from exc
        self._observe(bound, "set", True, started)
        return NO_CONTENT

    async def _save_many(
        self,
        bound: BoundStore,
        store_name: str,
        items: Sequence[SaveItem],
        concurrency: str | None,
        consistency: str | None,
    ) -> Reply:
        """A save of several items: one `set_many`, each item's failure reported."""
        ops = policy.save_operations(bound, items, concurrency, consistency)
        try:
            results = await self._timed(bound, "bulk_set", bound.store.set_many(ops), _all_applied)
        except StoreError as exc:
            # A backend that writes the batch at once (SQL) fails it as a whole: locked, down.
            raise _write_error(
                "ERR_STATE_SAVE", f"failed saving state in state store {store_name}", [exc]
            ) from exc
        failures = [r for r in results if r is not None]
        if failures:
            raise _write_error(
                "ERR_STATE_SAVE", f"failed saving state in state store {store_name}", failures
            )
        return NO_CONTENT

    async def delete(self, request: Request, store_name: str, key: str) -> Reply:
        bound = self._bound(store_name)
        stored = policy.stored_key(bound, key)
        params, _ = request.query()
        op = policy.delete_operation(
            bound,
            stored,
            request.header(b"if-match") or None,
            bodies.query_options(params),
            request.header(b"concurrency"),
            request.header(b"consistency"),
        )
        try:
            await self._timed(bound, "delete", bound.store.delete(op))
        except StoreError as exc:
            raise _write_error(
                "ERR_STATE_DELETE", f"failed deleting state with key {key}", [exc]
            ) from exc
        return NO_CONTENT

    async def bulk(self, request: Request, store_name: str) -> Reply:
        bound = self._bound(store_name)
        user_keys, _ = bodies.parse_bulk(await request.body(self.max_body_bytes))
        if not user_keys:
            return Reply(200, b"[]", [JSON])
        stored = [policy.stored_key(bound, k) for k in user_keys]
        try:
            items = await self._timed(bound, "bulk_get", bound.store.bulk_get(stored))
        except StoreError as exc:
            raise DaprError(500, "ERR_STATE_BULK_GET", str(exc)) from exc
        parts: list[bytes] = []
        for key, item in zip(user_keys, items, strict=True):
            encoded_key = orjson.dumps(key)
            if item is None:
                parts.append(b'{"key":' + encoded_key + b"}")
                continue
            part = (
                b'{"key":'
                + encoded_key
                + b',"data":'
                + _json_data(item.value)
                + b',"etag":'
                + orjson.dumps(item.etag)
            )
            if item.expire_at is not None:
                part += b',"metadata":{"ttlExpireTime":"' + _rfc3339(item.expire_at) + b'"}'
            parts.append(part + b"}")
        return Reply(200, b"[" + b",".join(parts) + b"]", [JSON])

    async def transaction(self, request: Request, store_name: str) -> Reply:
        bound = self._bound(store_name)
        if Feature.TRANSACTIONAL not in bound.store.features:
            raise errors.transactions_not_supported(store_name)
        _, query_metadata = request.query()
        body = await request.body(self.max_body_bytes)
        concurrency, consistency = request.header(b"concurrency"), request.header(b"consistency")
        upserts = bodies.plain_upserts(body)
        ops: Sequence[SetOp | DeleteOp]
        if upserts is not None:
            # The usual transaction, upserts of a key and a value: straight from the body.
            ops = policy.upsert_operations(bound, upserts, query_metadata, concurrency, consistency)
        else:
            transaction = bodies.parse_transaction(body, query_metadata)
            ops = policy.transaction_operations(
                bound, transaction.operations, concurrency, consistency
            )
        if not ops:
            return NO_CONTENT
        try:
            await self._timed(bound, "transaction", bound.store.transact(ops))
        except StoreError as exc:
            message = exc
            if isinstance(exc, TransactionError):
                # Name the user's key, not the stored one (`policy.stored_key` prefixed it).
                user = ops[exc.index].key[len(bound.prefix) :]
                message = StoreError(
                    f"operation {exc.index} on key {user!r} failed, nothing was applied: {exc.cause}"
                )
            if isinstance(exc, OutcomeUnknownError):
                raise errors.outcome_unknown(
                    f"error while executing state transaction: {message}"
                ) from exc
            # A request the store can never run as written (keys on several Redis Cluster slots)
            # is the client's to change: 400, where daprd passes Redis's CROSSSLOT on as a 500.
            status = 400 if isinstance(exc, RequestRefusedError) else 500
            raise DaprError(
                status,
                "ERR_STATE_TRANSACTION",
                f"error while executing state transaction: {message}",
            ) from exc
        return NO_CONTENT

    async def query(self, request: Request, store_name: str) -> Reply:
        bound = self._bound(store_name)
        if Feature.QUERY_API not in bound.store.features:
            raise errors.query_not_supported(store_name)
        body = await request.body(self.max_body_bytes)
        # Imported by the first query, not at start: the query engine is ~15 ms of a cold start
        # that a sidecar which never queries would pay (tests/unit/test_sidecar_imports.py).
        from statecar_sidecar.stores.query import QueryError, loads_exact, parse_query

        try:
            # Exact numbers: a filter value beyond 64 bits or a double compares as written.
            document = loads_exact(body)
        except ValueError as exc:
            raise errors.query_failed(
                store_name, f"failed to parse JSON query body: {exc}"
            ) from None
        try:
            query = parse_query(document)
        except QueryError as exc:
            raise errors.query_failed(store_name, str(exc)) from None
        try:
            page = await self._timed(
                bound, "query", bound.store.query(query, key_prefix=bound.prefix)
            )
        except QueryError as exc:
            raise errors.query_failed(store_name, str(exc)) from None
        except EncryptedQueryError as exc:
            raise errors.query_encrypted(store_name, str(exc)) from None
        except StoreError as exc:
            raise errors.query_failed(store_name, str(exc)) from exc
        if not page.results:
            return NO_CONTENT
        parts = [
            b'{"key":'
            + orjson.dumps(r.key)
            + b',"data":'
            + r.data
            + b',"etag":'
            + orjson.dumps(r.etag)
            + b"}"
            for r in page.results
        ]
        body = b'{"results":[' + b",".join(parts) + b"]"
        if page.token:
            body += b',"token":' + orjson.dumps(page.token)
        return Reply(200, body + b"}", [JSON])


def _all_applied(results: Sequence[Exception | None]) -> bool:
    return all(r is None for r in results)


def _json_data(value: bytes) -> bytes:
    """A stored value as the JSON of a bulk-get item's `data`.

    Values saved over HTTP are JSON and go out as they are. A value saved over gRPC (or by another
    program) may be any bytes; pasted raw it would make the whole reply invalid JSON (daprd
    v1.18.1 then answers 200 with an empty body: pkg/api/http/http.go onBulkGetState encodes
    `json.RawMessage` and drops the encoder's error). Such a value goes out as a JSON string: its
    text when it is UTF-8, else its base64 (docs/state-api.md, "Bulk get").
    """
    if _is_json(value):
        return value
    try:
        return orjson.dumps(value.decode())
    except UnicodeDecodeError:
        return orjson.dumps(base64.b64encode(value).decode())


def _is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        # orjson refuses two things RFC 8259 allows: numbers beyond a double (1e999) and
        # escaped lone surrogates ("\ud800"). The standard parser takes both; NaN and Infinity,
        # which it would also take, are not JSON.
        try:
            json.loads(value, parse_constant=_not_json)
        except ValueError:
            return False
    return True


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


def _rfc3339(epoch: float) -> bytes:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def _write_error(code: str, prefix: str, failures: Sequence[Exception]) -> DaprError:
    """daprd's mapping: only ETag failures → 409 (400 when one is invalid); anything else 500.

    A write whose outcome is unknown (sent, no answer) has its own code, whatever the others.
    """
    message = f"{prefix}: " + "; ".join(str(f) for f in failures)
    if any(isinstance(f, OutcomeUnknownError) for f in failures):
        return errors.outcome_unknown(message)
    if all(isinstance(f, ETagMismatchError | ETagInvalidError) for f in failures):
        status = 400 if any(isinstance(f, ETagInvalidError) for f in failures) else 409
        return DaprError(status, code, message)
    return DaprError(500, code, message)
