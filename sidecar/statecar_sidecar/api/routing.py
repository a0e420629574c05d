"""
The Dapr state API's front door: a pure ASGI layer in front of the FastAPI app.

It checks the API token, routes `/v1.0/state/...` and `/v1.0-alpha1/state/.../query` to the
`handlers` (404 for a path no route matches, 405 for a route called with another method),
renders a `DaprError` as Dapr's JSON, turns any other exception into a JSON 500 `ERR_INTERNAL`
(logged with its traceback), records `dapr_http_server_*` under the matched route whatever the
outcome, and sends the reply; every other request goes on to FastAPI.

Serving these routes below FastAPI's request machinery is a measured choice: that machinery
costs several times the whole GET budget (bench/README.md, "Where the time goes"). Statuses,
codes and bodies follow daprd (Dapr docs, state API reference); deliberate differences are
listed in docs/state-api.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable
from typing import Final
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from statecar_sidecar.api import errors
from statecar_sidecar.api.asgi import JSON, Reply, Request
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.api.handlers import StateHandlers
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

log = logging.getLogger("statecar.api")

# Exactly these raw paths skip the token, and only for GET (daprd middlewares.go); they are
# compared as sent, so `/v1.0/healthz/../state/x` cannot ride on the exemption.
_TOKEN_EXEMPT: Final = frozenset({b"/v1.0/healthz", b"/v1.0/healthz/outbound"})
_WRITE_METHODS: Final = frozenset({"POST", "PUT"})
_UNAUTHORIZED: Final = b"invalid api token"

# The `path` label of `dapr_http_server_*`: route templates, a fixed set (daprd's default writes
# `/v1.0/state/<store name>`, one series per name a client sends; docs/state-api.md "Metrics").
ROUTE_SAVE: Final = "/v1.0/state/{storeName}"
ROUTE_KEY: Final = "/v1.0/state/{storeName}/{key}"
ROUTE_BULK: Final = "/v1.0/state/{storeName}/bulk"
ROUTE_TRANSACTION: Final = "/v1.0/state/{storeName}/transaction"
ROUTE_QUERY: Final = "/v1.0-alpha1/state/{storeName}/query"
#: The label of a request whose path matches no route.
_UNMATCHED: Final = "unknown"
_ALLOW_WRITE: Final = ("POST", "PUT")
_ALLOW_KEY: Final = ("DELETE", "GET")
_ALLOW_ALL: Final = ("DELETE", "GET", "POST", "PUT")
# `_route`'s answers, built once: matching allocates nothing per request.
_QUERY: Final = (ROUTE_QUERY, _ALLOW_WRITE)
_SAVE: Final = (ROUTE_SAVE, _ALLOW_WRITE)
_KEY: Final = (ROUTE_KEY, _ALLOW_KEY)
_KEY_NAMED_LIKE_A_ROUTE: Final = (ROUTE_KEY, _ALLOW_ALL)
_BULK: Final = (ROUTE_BULK, _ALLOW_ALL)
_TRANSACTION: Final = (ROUTE_TRANSACTION, _ALLOW_ALL)
_NO_ROUTE: Final[tuple[str, tuple[str, ...]]] = (_UNMATCHED, ())


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
        self.handlers = StateHandlers(runtime, metrics, max_body_bytes=max_body_bytes)
        self._token = api_token.encode() if api_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if b"?" in raw_path:
            # Some ASGI clients (httpx's ASGITransport) put the query in raw_path; a literal '?'
            # can't be part of the path itself, so cutting there is always safe.
            raw_path = raw_path.split(b"?", 1)[0]
        answer = self.direct(Request.from_scope(scope, receive), raw_path)
        if answer is None:
            await self.app(scope, receive, send)
            return
        reply = await answer
        headers = reply.headers
        if reply.body:
            # An explicit length spares the client chunked decoding on every response.
            headers = [*headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    def direct(self, request: Request, raw_path: bytes) -> Awaitable[Reply] | None:
        """The reply to a state API request, or to any request without the API token; None
        for every other request, which `app` answers.

        statecar's HTTP/1.1 server calls this with the request it has read whole, so a state
        call crosses no ASGI machinery; `__call__` is the same over ASGI.
        """
        if self._token is not None and not authorized(
            request.method, request.headers, raw_path, self._token
        ):
            return self._unauthorized(request.method, raw_path)
        segments = _state_segments(raw_path)
        if segments is None:
            return None
        return self._serve(request, segments)

    async def _unauthorized(self, method: str, raw_path: bytes) -> Reply:
        segments = _state_segments(raw_path)
        if segments is not None:
            route, _ = _route(method, segments)
            self.metrics.http(method, route, 401, 0.0)
        return Reply(401, _UNAUTHORIZED, [(b"content-type", b"text/plain; charset=utf-8")])

    async def _serve(self, request: Request, segments: list[bytes]) -> Reply:
        started = time.perf_counter()
        # The label is the route the path matched, whatever the outcome (daprd labels a request
        # by its path, not by its status); a path no route matches is "unknown".
        route = _UNMATCHED
        try:
            route, allowed = _route(request.method, segments)
            if request.method not in allowed:
                raise _refusal(request.method, route, allowed, segments)
            reply = await self._dispatch(route, request, segments)
        except DaprError as exc:
            reply = Reply(exc.status, exc.body(), [JSON, *exc.headers] if exc.headers else [JSON])
            if exc.status >= 500:
                log.warning("%s %s: %s", request.method, route, exc)
            self.metrics.error_code(exc.code, exc.category)
        except Exception as exc:  # the one catch-all: no request may get a non-JSON error
            log.exception("%s %s: unexpected error", request.method, route)
            crash = errors.internal(request.method, route, exc)
            reply = Reply(crash.status, crash.body(), [JSON])
            self.metrics.error_code(crash.code, crash.category)
        self.metrics.http(
            request.method, route, reply.status, (time.perf_counter() - started) * 1000
        )
        return reply

    def _dispatch(self, route: str, request: Request, segments: list[bytes]) -> Awaitable[Reply]:
        """The handler call for a matched route (Dapr's routes, state API reference)."""
        handlers = self.handlers
        store_name = _decode_segment(segments[2])
        if route is ROUTE_KEY:
            key = _decode_segment(segments[3])
            if request.method == "GET":
                return handlers.get(request, store_name, key)
            return handlers.delete(request, store_name, key)
        if route is ROUTE_SAVE:
            return handlers.save(request, store_name)
        if route is ROUTE_BULK:
            return handlers.bulk(request, store_name)
        if route is ROUTE_TRANSACTION:
            return handlers.transaction(request, store_name)
        return handlers.query(request, store_name)


def _route(method: str, segments: list[bytes]) -> tuple[str, tuple[str, ...]]:
    """The route template the path (and, for `/bulk` and `/transaction`, the method) matches,
    with the methods that path takes; `_UNMATCHED` and no methods when no route matches.

    GET and DELETE of a key called "bulk" or "transaction" are key routes, as in daprd.
    """
    count = len(segments)
    if segments[0] == b"v1.0-alpha1":
        if count == 4 and segments[3] == b"query":
            return _QUERY
        return _NO_ROUTE
    if count == 3:
        return _SAVE
    if count == 4:
        last = segments[3]
        if last == b"bulk" or last == b"transaction":
            if method == "GET" or method == "DELETE":
                return _KEY_NAMED_LIKE_A_ROUTE
            return _BULK if last == b"bulk" else _TRANSACTION
        return _KEY
    return _NO_ROUTE


def _refusal(method: str, route: str, allowed: tuple[str, ...], segments: list[bytes]) -> DaprError:
    """A path no route matches is a 404; a route called with another method is a 405 with an
    `Allow` header (RFC 9110 §15.5.6)."""
    if route is _UNMATCHED:
        return _no_route(method, segments)
    return errors.method_not_allowed(method, route, allowed)


def _state_segments(raw_path: bytes) -> list[bytes] | None:
    """The path's non-empty segments when it is a state API path, else None."""
    segments = raw_path.split(b"/")
    if segments[0] or segments.count(b"") != 1:
        segments = [s for s in segments if s]
    else:  # the usual path: one leading "/", no empty segment after it
        del segments[0]
    if len(segments) >= 3 and segments[1] == b"state" and segments[0] in (b"v1.0", b"v1.0-alpha1"):
        return segments
    return None


def authorized(
    method: str, headers: list[tuple[bytes, bytes]], raw_path: bytes, token: bytes
) -> bool:
    """Whether the request carries `dapr-api-token` (Dapr docs, "Enable API token authentication").

    The token is compared in constant time, so it cannot leak through response timing, and it
    is never logged.
    """
    if method == "GET" and raw_path in _TOKEN_EXEMPT:
        return True
    for key, value in headers:
        if key == b"dapr-api-token":
            return hmac.compare_digest(value, token)
    return False


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


def _no_route(method: str, segments: list[bytes]) -> DaprError:
    path = "/" + "/".join(s.decode("latin-1") for s in segments)
    return DaprError(
        404,
        "ERR_DIRECT_INVOKE",
        f"no state API route for {method} {path}: keys containing '/' must be "
        "percent-encoded (%2F); see /v1.0/state/{store}/{key}, /bulk, /transaction and "
        "/v1.0-alpha1/state/{store}/query",
    )
