"""
The routes probes and scrapers hit, served without FastAPI; FastAPI is built on first need.

A kubelet probes `/v1.0/healthz` every few seconds, Prometheus scrapes `/metrics`, SDKs read
`/v1.0/metadata` once at start-up. Building FastAPI for those would cost the sidecar ~0.5 s of
cold start and ~15 MiB of RSS (bench/README.md, "Imports and memory"), so `Front` answers a
plain `GET` of those paths (and of `/v1.0/healthz/{store}`) itself, with the bytes FastAPI would send (Starlette's
`Response`/`JSONResponse`: no headers for a 204; `content-length` then `content-type`, JSON
encoded compactly with `ensure_ascii=False`). Every other request (a query string, HEAD,
another method, another path, a websocket) goes to the FastAPI app, which `build` makes the
first time one arrives (importing it on a worker thread, so state calls keep being served
meanwhile); so do requests whose raw answer fails, and FastAPI answers those as it
always has (a JSON 500, the traceback logged).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from statecar_sidecar.api.health import Answer

#: One raw reply: status, headers, body.
Raw = tuple[int, list[tuple[bytes, bytes]], bytes]
#: One raw route: no arguments (a plain GET of one exact path), its reply.
RawRoute = Callable[[], Awaitable[Raw]]
ASGI = Callable[[Any, Any, Any], Awaitable[None]]

JSON_TYPE = (b"content-type", b"application/json")
#: The exposition format's content type (Prometheus text format 0.0.4).
METRICS_MEDIA_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Front:
    """ASGI app: `routes` for a plain GET of their exact path, the built FastAPI app otherwise."""

    def __init__(
        self,
        routes: Mapping[str, RawRoute],
        build: Callable[[], ASGI],
        *,
        under: Mapping[str, Callable[[str], Awaitable[Raw]]] | None = None,
        prepare: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """`routes` by exact path; `under[prefix](rest)` for `prefix` + one segment, as a
        `{param}` route matches (Starlette's `str` convertor: no '/', not empty); `prepare` runs
        once, before the first `build`, so the loop can import FastAPI off its own thread."""
        self.routes = routes
        self.under = under or {}
        self._build = build
        self._prepare = prepare
        self._app: ASGI | None = None

    @property
    def app(self) -> ASGI:
        """The FastAPI app, built now if no request has needed it yet."""
        if self._app is None:
            self._app = self._build()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope.get("query_string")
            and not scope.get("root_path")
        ):
            reply = self._raw(scope["path"])
            if reply is not None:
                try:
                    status, headers, body = await reply
                except Exception:  # noqa: BLE001, S110 -- FastAPI answers it (and logs) as before
                    pass
                else:
                    await send(
                        {"type": "http.response.start", "status": status, "headers": headers}
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        if self._app is None and self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            await prepare()
        await self.app(scope, receive, send)

    def _raw(self, path: str) -> Awaitable[Raw] | None:
        route = self.routes.get(path)
        if route is not None:
            return route()
        for prefix, param_route in self.under.items():
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                if rest and "/" not in rest:
                    return param_route(rest)
        return None


def json_route(answer: Callable[[], Awaitable[Answer]]) -> RawRoute:
    """A raw route replying as Starlette's `Response` (no body) or `JSONResponse` would."""

    async def route() -> Raw:
        return json_reply(await answer())

    return route


def json_reply(answer: Answer) -> Raw:
    """`answer` as Starlette's `Response` (no body) or `JSONResponse` would send it."""
    status, document = answer
    if document is None:
        return status, [], b""
    body = render_json(document)
    return status, [(b"content-length", b"%d" % len(body)), JSON_TYPE], body


def text_route(media_type: bytes, text: Callable[[], bytes]) -> RawRoute:
    """A raw route replying 200 with `text()`, as Starlette's `Response(text, media_type=...)`."""

    async def route() -> Raw:
        body = text()
        return 200, [(b"content-length", b"%d" % len(body)), (b"content-type", media_type)], body

    return route


def render_json(document: object) -> bytes:
    """The body Starlette's `JSONResponse` renders for `document`, byte for byte."""
    return json.dumps(
        document, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
