"""
The Dapr state API's front door: a pure ASGI layer in front of the FastAPI app.

It checks the API token, routes `/v1.0/state/...` and `/v1.0-alpha1/state/.../query` to the
`handlers`, renders a `DaprError` as Dapr's JSON and sends the reply; every other request goes
on to FastAPI. Serving these routes below FastAPI's request machinery is a measured choice: that
machinery costs several times the whole GET budget (bench/README.md, "Where the time goes"). Statuses,
codes and bodies follow daprd (Dapr docs, state API reference); deliberate differences are
listed in docs/state-api.md.
"""

from __future__ import annotations

import hmac
import logging
import time
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

# The `path` label of `dapr_http_server_*`: route templates, as daprd labels them.
ROUTE_SAVE: Final = "/v1.0/state/{storeName}"
ROUTE_KEY: Final = "/v1.0/state/{storeName}/{key}"
ROUTE_BULK: Final = "/v1.0/state/{storeName}/bulk"
ROUTE_TRANSACTION: Final = "/v1.0/state/{storeName}/transaction"
ROUTE_QUERY: Final = "/v1.0-alpha1/state/{storeName}/query"


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
        if self._token is not None and not authorized(scope, raw_path, self._token):
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

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, segments: list[bytes]
    ) -> None:
        started = time.perf_counter()
        request = Request(scope, receive)
        # Known gap, kept as it is (issue 8, item 8): a request that fails is labelled "unknown".
        route = "unknown"
        try:
            route, reply = await self._dispatch(request, segments)
        except DaprError as exc:
            reply = Reply(exc.status, exc.body(), [JSON])
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

    async def _dispatch(self, request: Request, segments: list[bytes]) -> tuple[str, Reply]:
        """The route template and the handler's reply; Dapr's routes (state API reference)."""
        method = request.method
        handlers = self.handlers
        store_name = _decode_segment(segments[2])
        if segments[0] == b"v1.0-alpha1":
            if len(segments) == 4 and segments[3] == b"query" and method in _WRITE_METHODS:
                return ROUTE_QUERY, await handlers.query(request, store_name)
            raise _no_route(request, segments)
        if len(segments) == 3 and method in _WRITE_METHODS:
            return ROUTE_SAVE, await handlers.save(request, store_name)
        if len(segments) == 4:
            if method == "GET":
                return ROUTE_KEY, await handlers.get(
                    request, store_name, _decode_segment(segments[3])
                )
            if method == "DELETE":
                return ROUTE_KEY, await handlers.delete(
                    request, store_name, _decode_segment(segments[3])
                )
            if method in _WRITE_METHODS and segments[3] == b"bulk":
                return ROUTE_BULK, await handlers.bulk(request, store_name)
            if method in _WRITE_METHODS and segments[3] == b"transaction":
                return ROUTE_TRANSACTION, await handlers.transaction(request, store_name)
        raise _no_route(request, segments)


def authorized(scope: Scope, raw_path: bytes, token: bytes) -> bool:
    """Whether the request carries `dapr-api-token` (Dapr docs, "Enable API token authentication").

    The token is compared in constant time, so it cannot leak through response timing, and it
    is never logged.
    """
    if scope["method"] == "GET" and raw_path in _TOKEN_EXEMPT:
        return True
    for key, value in scope["headers"]:
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


def _no_route(request: Request, segments: list[bytes]) -> DaprError:
    path = "/" + "/".join(s.decode("latin-1") for s in segments)
    return DaprError(
        404,
        "ERR_DIRECT_INVOKE" if request.method != "GET" or len(segments) != 3 else "ERR_NOT_FOUND",
        f"no state API route for {request.method} {path}: keys containing '/' must be "
        "percent-encoded (%2F); see /v1.0/state/{store}/{key}, /bulk, /transaction and "
        "/v1.0-alpha1/state/{store}/query",
    )
