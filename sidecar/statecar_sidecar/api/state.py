"""
The Dapr state API's hot path: a pure ASGI layer in front of the FastAPI app.

It authenticates (`dapr-api-token`), routes `/v1.0/state/...` and `/v1.0-alpha1/state/.../query`,
and answers them itself; every other request goes on to FastAPI. Serving these routes below
FastAPI's request machinery is a measured choice: that machinery costs several times the whole
GET budget (research/perf-anchors.md §3). Statuses, codes and bodies follow daprd
(research/dapr-state-spec.md §1); deliberate differences are marked ★ in contract.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from statecar_sidecar import keys
from statecar_sidecar.api import bodies, errors
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import BoundStore, ComponentRuntime
from statecar_sidecar.stores.base import DeleteOp, Feature, SetOp
from statecar_sidecar.stores.errors import (
    ETagInvalidError,
    ETagMismatchError,
    StoreError,
    TransactionError,
)
from statecar_sidecar.stores.query import QueryError, parse_query

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("statecar.api")

# Exactly these raw paths skip the token, and only for GET (daprd middlewares.go); they are
# compared as sent, so `/v1.0/healthz/../state/x` cannot ride on the exemption.
_TOKEN_EXEMPT: Final = frozenset({b"/v1.0/healthz", b"/v1.0/healthz/outbound"})
_JSON: Final = (b"content-type", b"application/json")
_WRITE_METHODS: Final = frozenset({"POST", "PUT"})
_UNAUTHORIZED: Final = b"invalid api token"

ROUTE_SAVE: Final = "/v1.0/state/{storeName}"
ROUTE_KEY: Final = "/v1.0/state/{storeName}/{key}"
ROUTE_BULK: Final = "/v1.0/state/{storeName}/bulk"
ROUTE_TRANSACTION: Final = "/v1.0/state/{storeName}/transaction"
ROUTE_QUERY: Final = "/v1.0-alpha1/state/{storeName}/query"


class _Reply:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


_NO_CONTENT: Final = _Reply(204)


class _Request:
    """What the handlers need of one request, decoded lazily."""

    __slots__ = ("headers", "method", "query_string", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.query_string: bytes = scope.get("query_string", b"")
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.receive = receive

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def query(self) -> tuple[dict[str, str], dict[str, str]]:
        """(plain parameters, `metadata.<name>` parameters); first value wins, as in daprd."""
        if not self.query_string:
            return {}, {}
        params: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for name, value in parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True):
            if name.startswith("metadata."):
                metadata.setdefault(name[9:], value)
            else:
                params.setdefault(name, value)
        return params, metadata


def _decode_segment(segment: bytes) -> str:
    # daprd unescapes path parameters with url.QueryUnescape: `%2F` is '/', '+' is a space.
    if b"%" not in segment and b"+" not in segment:
        try:
            return segment.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.malformed("the URL path is not UTF-8; percent-encode the key") from None
    try:
        return unquote_to_bytes(segment.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.malformed("the key is not UTF-8 once percent-decoded") from None


def _rfc3339(epoch: float) -> bytes:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


class StateAPI:
    """ASGI middleware serving the Dapr state API; anything else goes on to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        runtime: ComponentRuntime,
        metrics: Metrics,
        api_token: str | None,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.metrics = metrics
        self._token = api_token.encode() if api_token else None
        self.max_body_bytes = max_body_bytes

    # -- ASGI entry -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if b"?" in raw_path:
            # Some ASGI clients (httpx's ASGITransport) put the query in raw_path; a literal '?'
            # can't be part of the path itself, so cutting there is always safe.
            raw_path = raw_path.split(b"?", 1)[0]
        if self._token is not None and not self._authorized(scope, raw_path):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": _UNAUTHORIZED})
            return
        segments = [s for s in raw_path.split(b"/") if s]
        if (
            len(segments) >= 3
            and segments[1] == b"state"
            and segments[0] in (b"v1.0", b"v1.0-alpha1")
        ):
            await self._serve(scope, receive, send, segments)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope, raw_path: bytes) -> bool:
        if scope["method"] == "GET" and raw_path in _TOKEN_EXEMPT:
            return True
        for key, value in scope["headers"]:
            if key == b"dapr-api-token":
                # Constant-time comparison: the token must not leak through response timing.
                return hmac.compare_digest(value, self._token or b"")
        return False

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, segments: list[bytes]
    ) -> None:
        started = time.perf_counter()
        request = _Request(scope, receive)
        route = "unknown"
        try:
            route, reply = await self._dispatch(request, segments)
        except DaprError as exc:
            reply = _Reply(exc.status, exc.body(), [_JSON])
            if exc.status >= 500:
                log.warning("%s %s: %s", request.method, route, exc)
        headers = reply.headers
        if reply.body:
            # An explicit length spares the client chunked decoding on every response.
            headers = [*headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self.metrics.http(
            request.method, route, reply.status, (time.perf_counter() - started) * 1000
        )

    async def _dispatch(self, request: _Request, segments: list[bytes]) -> tuple[str, _Reply]:
        method = request.method
        store_name = _decode_segment(segments[2])
        if segments[0] == b"v1.0-alpha1":
            if len(segments) == 4 and segments[3] == b"query" and method in _WRITE_METHODS:
                return ROUTE_QUERY, await self.query(request, store_name)
            raise self._no_route(request, segments)
        if len(segments) == 3 and method in _WRITE_METHODS:
            return ROUTE_SAVE, await self.save(request, store_name)
        if len(segments) == 4:
            if method == "GET":
                return ROUTE_KEY, await self.get(request, store_name, _decode_segment(segments[3]))
            if method == "DELETE":
                return ROUTE_KEY, await self.delete(
                    request, store_name, _decode_segment(segments[3])
                )
            if method in _WRITE_METHODS and segments[3] == b"bulk":
                return ROUTE_BULK, await self.bulk(request, store_name)
            if method in _WRITE_METHODS and segments[3] == b"transaction":
                return ROUTE_TRANSACTION, await self.transaction(request, store_name)
        raise self._no_route(request, segments)

    @staticmethod
    def _no_route(request: _Request, segments: list[bytes]) -> DaprError:
        path = "/" + "/".join(s.decode("latin-1") for s in segments)
        return DaprError(
            404,
            "ERR_DIRECT_INVOKE"
            if request.method != "GET" or len(segments) != 3
            else "ERR_NOT_FOUND",
            f"no state API route for {request.method} {path}: keys containing '/' must be "
            "percent-encoded (%2F); see /v1.0/state/{store}/{key}, /bulk, /transaction and "
            "/v1.0-alpha1/state/{store}/query",
        )

    # -- shared steps ------------------------------------------------------------------------

    def _bound(self, store_name: str) -> BoundStore:
        bound = self.runtime.stores.get(store_name)
        if bound is None:
            if store_name in self.runtime.failures:
                raise DaprError(
                    500,
                    "ERR_STATE_STORE_NOT_CONFIGURED",
                    f"state store {store_name} is not ready: {self.runtime.failures[store_name]}",
                )
            if not self.runtime.stores:
                raise errors.store_not_configured(store_name, self.runtime.app_id)
            raise errors.store_not_found(store_name, self.runtime.app_id, list(self.runtime.stores))
        return bound

    @staticmethod
    def _key(bound: BoundStore, key: str) -> str:
        try:
            return keys.stored_key(bound.prefix, key)
        except keys.IllegalKeyError:
            raise errors.illegal_key(bound.name, key) from None
        except keys.NulInKeyError as exc:
            raise errors.malformed(str(exc)) from None

    @staticmethod
    def _mode(bound: BoundStore, requested: str | None, kind: str) -> str:
        """The request's mode wins over the component's default, unless the component enforces."""
        default: str = getattr(bound.component, kind)
        if requested is None:
            return default
        if bound.component.enforce and requested != default:
            raise errors.malformed(
                f"state store {bound.name} enforces {kind} {default}: the request asked for "
                f"{requested}; drop the {kind} option or use {default}"
            )
        return requested

    def _options(
        self, bound: BoundStore, options: bodies.Options, headers: _Request
    ) -> tuple[bool, bool]:
        # Extension: the Dapr docs' snippets send these as headers; honoured only when the
        # request says nothing else.
        concurrency = options.concurrency or _header_choice(
            headers, b"concurrency", bodies.CONCURRENCY
        )
        consistency = options.consistency or _header_choice(
            headers, b"consistency", bodies.CONSISTENCY
        )
        return (
            self._mode(bound, concurrency, "concurrency") == "first-write",
            self._mode(bound, consistency, "consistency") == "strong",
        )

    async def _body(self, request: _Request) -> bytes:
        length = request.header(b"content-length")
        limit = self.max_body_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise DaprError(
                    400, "ERR_BODY_READ", "failed to read request body: client disconnected"
                )
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> DaprError:
        return DaprError(
            413,
            "ERR_MALFORMED_REQUEST",
            f"request body is larger than the limit of {self.max_body_bytes} bytes; send less "
            "or raise STATECAR_MAX_BODY_BYTES (annotation statecar.io/http-max-request-size)",
        )

    def _observe(self, bound: BoundStore, operation: str, started: float, success: bool) -> None:
        self.metrics.state(bound.name, operation, success, (time.perf_counter() - started) * 1000)

    # -- handlers ----------------------------------------------------------------------------

    async def get(self, request: _Request, store_name: str, key: str) -> _Reply:
        bound = self._bound(store_name)
        stored = self._key(bound, key)
        params, _ = request.query()
        consistency = params.get("consistency") or _header_choice(
            request, b"consistency", bodies.CONSISTENCY
        )
        if consistency and consistency not in bodies.CONSISTENCY:
            raise errors.malformed(
                f"query parameter consistency must be eventual or strong, got {consistency!r}"
            )
        strong = self._mode(bound, consistency or None, "consistency") == "strong"
        started = time.perf_counter()
        try:
            item = await bound.store.get(stored, strong=strong)
        except StoreError as exc:
            self._observe(bound, "get", started, False)
            raise DaprError(
                500, "ERR_STATE_GET", f"fail to get {key} from state store {store_name}: {exc}"
            ) from exc
        self._observe(bound, "get", started, True)
        if item is None:
            return _NO_CONTENT
        headers = [_JSON, (b"etag", item.etag.encode())]
        if item.expire_at is not None:
            headers.append((b"metadata.ttlexpiretime", _rfc3339(item.expire_at)))
        return _Reply(200, item.value, headers)

    async def save(self, request: _Request, store_name: str) -> _Reply:
        bound = self._bound(
            store_name
        )  # before the body, as daprd: unknown store wins over bad body
        _, query_metadata = request.query()
        items = bodies.parse_save(await self._body(request), query_metadata)
        if not items:
            return _NO_CONTENT
        ops = []
        for item in items:
            first_write, strong = self._options(bound, item.options, request)
            ops.append(
                SetOp(
                    key=self._key(bound, item.key),
                    value=item.value,
                    etag=item.etag,
                    first_write=first_write,
                    strong=strong,
                    ttl=bodies.parse_ttl(item.metadata, bound.default_ttl),
                )
            )
        started = time.perf_counter()
        if len(ops) == 1:
            try:
                await bound.store.set(ops[0])
            except StoreError as exc:
                self._observe(bound, "set", started, False)
                raise _write_error(
                    "ERR_STATE_SAVE", f"failed saving state in state store {store_name}", [exc]
                ) from exc
            self._observe(bound, "set", started, True)
            return _NO_CONTENT
        results = await bound.store.set_many(ops)
        failures = [r for r in results if r is not None]
        self._observe(bound, "bulk_set", started, not failures)
        if failures:
            raise _write_error(
                "ERR_STATE_SAVE", f"failed saving state in state store {store_name}", failures
            )
        return _NO_CONTENT

    async def delete(self, request: _Request, store_name: str, key: str) -> _Reply:
        bound = self._bound(store_name)
        stored = self._key(bound, key)
        params, _ = request.query()
        options = bodies.Options(
            concurrency=params.get("concurrency") or None,
            consistency=params.get("consistency") or None,
        )
        bodies.parse_options(
            {"concurrency": options.concurrency, "consistency": options.consistency}, "query"
        )
        first_write, strong = self._options(bound, options, request)
        etag = request.header(b"if-match") or None
        started = time.perf_counter()
        try:
            await bound.store.delete(
                DeleteOp(stored, etag=etag, first_write=first_write, strong=strong)
            )
        except StoreError as exc:
            self._observe(bound, "delete", started, False)
            raise _write_error(
                "ERR_STATE_DELETE", f"failed deleting state with key {key}", [exc]
            ) from exc
        self._observe(bound, "delete", started, True)
        return _NO_CONTENT

    async def bulk(self, request: _Request, store_name: str) -> _Reply:
        bound = self._bound(store_name)
        user_keys, _ = bodies.parse_bulk(await self._body(request))
        if not user_keys:
            return _Reply(200, b"[]", [_JSON])
        stored = [self._key(bound, k) for k in user_keys]
        started = time.perf_counter()
        try:
            items = await bound.store.bulk_get(stored)
        except StoreError as exc:
            self._observe(bound, "bulk_get", started, False)
            raise DaprError(500, "ERR_STATE_BULK_GET", str(exc)) from exc
        self._observe(bound, "bulk_get", started, True)
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
                + item.value
                + b',"etag":'
                + orjson.dumps(item.etag)
            )
            if item.expire_at is not None:
                part += b',"metadata":{"ttlExpireTime":"' + _rfc3339(item.expire_at) + b'"}'
            parts.append(part + b"}")
        return _Reply(200, b"[" + b",".join(parts) + b"]", [_JSON])

    async def transaction(self, request: _Request, store_name: str) -> _Reply:
        bound = self._bound(store_name)
        if Feature.TRANSACTIONAL not in bound.store.features:
            raise errors.transactions_not_supported(store_name)
        _, query_metadata = request.query()
        transaction = bodies.parse_transaction(await self._body(request), query_metadata)
        if not transaction.operations:
            return _NO_CONTENT
        ops: list[SetOp | DeleteOp] = []
        for item in transaction.operations:
            first_write, strong = self._options(bound, item.options, request)
            key = self._key(bound, item.key)
            if isinstance(item, bodies.SaveItem):
                ttl = bodies.parse_ttl(item.metadata, bound.default_ttl)
                ops.append(SetOp(key, item.value, item.etag, first_write, strong, ttl))
            else:
                ops.append(DeleteOp(key, item.etag, first_write, strong))
        started = time.perf_counter()
        try:
            await bound.store.transact(ops)
        except StoreError as exc:
            self._observe(bound, "transaction", started, False)
            message = exc
            if isinstance(exc, TransactionError):
                # Name the user's key, not the prefixed one.
                user = transaction.operations[exc.index].key
                message = StoreError(
                    f"operation {exc.index} on key {user!r} failed, nothing was applied: {exc.cause}"
                )
            raise DaprError(
                500, "ERR_STATE_TRANSACTION", f"error while executing state transaction: {message}"
            ) from exc
        self._observe(bound, "transaction", started, True)
        return _NO_CONTENT

    async def query(self, request: _Request, store_name: str) -> _Reply:
        bound = self._bound(store_name)
        if Feature.QUERY_API not in bound.store.features:
            raise errors.query_not_supported(store_name)
        body = await self._body(request)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise errors.query_failed(
                store_name, f"failed to parse JSON query body: {exc}"
            ) from None
        try:
            query = parse_query(document)
        except QueryError as exc:
            raise errors.query_failed(store_name, str(exc)) from None
        started = time.perf_counter()
        try:
            page = await bound.store.query(query, key_prefix=bound.prefix)
        except QueryError as exc:
            self._observe(bound, "query", started, False)
            raise errors.query_failed(store_name, str(exc)) from None
        except StoreError as exc:
            self._observe(bound, "query", started, False)
            raise errors.query_failed(store_name, str(exc)) from exc
        self._observe(bound, "query", started, True)
        if not page.results:
            return _NO_CONTENT
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
        return _Reply(200, body + b"}", [_JSON])


def _header_choice(request: _Request, name: bytes, allowed: frozenset[str]) -> str | None:
    value = request.header(name)
    if value is None:
        return None
    value = value.strip().lower()
    if value not in allowed:
        raise errors.malformed(
            f"header {name.decode()} must be one of {', '.join(sorted(allowed))}, got {value!r}"
        )
    return value


def _write_error(code: str, prefix: str, failures: Sequence[Exception]) -> DaprError:
    """daprd's mapping: only ETag failures → 409 (400 when one is invalid); anything else 500."""
    message = f"{prefix}: " + "; ".join(str(f) for f in failures)
    if all(isinstance(f, ETagMismatchError | ETagInvalidError) for f in failures):
        status = 400 if any(isinstance(f, ETagInvalidError) for f in failures) else 409
        return DaprError(status, code, message)
    return DaprError(500, code, message)
