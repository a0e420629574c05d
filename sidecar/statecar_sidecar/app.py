"""
The sidecar's two ASGI applications, composed from the pieces in `api/`.

The state port: the Dapr state API's fast path (`api.routing.StateAPI`), then `api.front`,
which answers the probes' and SDKs' plain GETs of health and metadata itself and hands the rest
to FastAPI (`api.fastapi_app`: health with arguments, Dapr-style 404s), built on first need.
The ops port: `api.front` again for health, liveness and `/metrics`, FastAPI behind it. The
runtime and metrics are passed in, so tests build an app over any store without a server.

No FastAPI import here: a sidecar that serves state, probes and scrapes never imports it
(bench/README.md, "Imports and memory": ~0.5 s of cold start and ~15 MiB).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable

from statecar_sidecar.api.front import (
    ASGI,
    METRICS_MEDIA_TYPE,
    Front,
    Raw,
    RawRoute,
    json_reply,
    json_route,
    text_route,
)
from statecar_sidecar.api.health import (
    NOT_READY,
    OUTBOUND_NOT_READY,
    Answer,
    Health,
    readiness,
    store_health,
)
from statecar_sidecar.api.metadata import metadata_document
from statecar_sidecar.api.routing import StateAPI
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

__all__ = ["Health", "create_app", "create_ops_app"]


def create_app(
    runtime: ComponentRuntime,
    metrics: Metrics,
    *,
    api_token: str | None,
    max_body_bytes: int,
    health: Health | None = None,
) -> StateAPI:
    """The ASGI app uvicorn serves: the state API's fast path, then `Front`, then FastAPI.

    The fast path wraps FastAPI from the outside, not as one of its middlewares: inside,
    every state request would first cross FastAPI's and Starlette's own layers (error
    middleware, telemetry, body limit), ~10 µs a GET here (bench/README.md, "Where the time
    goes"), which is half of what statecar adds over the floor.
    """
    metrics.components = runtime
    checked = health or Health(runtime, metrics)

    async def metadata() -> Answer:
        return 200, metadata_document(runtime)

    def build() -> ASGI:
        from statecar_sidecar.api.fastapi_app import build_state_app

        return build_state_app(runtime, checked)

    front = Front(
        {**_health_routes(checked), "/v1.0/metadata": json_route(metadata)},
        build,
        under=_store_health(checked),
        prepare=_import_fastapi,
    )
    return StateAPI(
        front, runtime=runtime, metrics=metrics, api_token=api_token, max_body_bytes=max_body_bytes
    )


def create_ops_app(health: Health, metrics: Metrics) -> Front:
    """The port the kubelet and Prometheus reach: `/metrics` and the health probes (no token)."""

    async def liveness() -> Answer:
        return 204, None

    def build() -> ASGI:
        from statecar_sidecar.api.fastapi_app import build_ops_app

        return build_ops_app(health, metrics)

    routes = {
        **_health_routes(health),
        "/healthz": json_route(liveness),
        "/metrics": text_route(METRICS_MEDIA_TYPE, metrics.exposition),
    }
    return Front(routes, build, under=_store_health(health), prepare=_import_fastapi)


def _health_routes(health: Health) -> dict[str, RawRoute]:
    async def ready() -> Answer:
        return await readiness(health, *NOT_READY)

    async def outbound() -> Answer:
        return await readiness(health, *OUTBOUND_NOT_READY)

    return {"/v1.0/healthz": json_route(ready), "/v1.0/healthz/outbound": json_route(outbound)}


def _store_health(health: Health) -> dict[str, Callable[[str], Awaitable[Raw]]]:
    async def one(store: str) -> Raw:
        return json_reply(await store_health(health, store))

    return {"/v1.0/healthz/": one}


def _import_fastapi() -> Awaitable[object]:
    """FastAPI's import (~0.5 s) on a worker thread: the loop keeps serving state calls."""
    return asyncio.to_thread(importlib.import_module, "statecar_sidecar.api.fastapi_app")
