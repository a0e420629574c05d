"""
The sidecar's ASGI application: FastAPI for health, metadata and everything off the hot path,
with the Dapr state API served by `api.routing.StateAPI` in front of it.

`create_app` is the one constructor; the runtime and metrics are passed in, so tests build an
app over any store without a server.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from statecar_sidecar import __version__
from statecar_sidecar.api.routing import StateAPI
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime
from statecar_sidecar.stores.base import Feature

HEALTH_CACHE_SECONDS = 0.5


class Health:
    """Store reachability, measured (a ping per store) and cached briefly so probes stay cheap."""

    def __init__(self, runtime: ComponentRuntime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._checked_at = 0.0
        self._problems: dict[str, str] = {}

    async def problems(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._checked_at > HEALTH_CACHE_SECONDS:
            results = await self.runtime.check_health()
            for name, problem in results.items():
                self.metrics.store_up.labels(self.runtime.app_id, name).set(0 if problem else 1)
            self._problems = {name: p for name, p in results.items() if p is not None}
            self._problems.update(self.runtime.failures)
            self._checked_at = time.monotonic()
        return self._problems


def capabilities(features: frozenset[Feature]) -> list[str]:
    names = sorted(str(f) for f in features)
    # daprd adds ACTOR for stores with both ETAG and TRANSACTIONAL (pkg/runtime/runtime.go).
    if Feature.ETAG in features and Feature.TRANSACTIONAL in features:
        names.append("ACTOR")
    return names


def metadata_document(runtime: ComponentRuntime) -> dict[str, object]:
    extended: dict[str, str] = {"daprRuntimeVersion": f"statecar-{__version__}"}
    if runtime.last_reload_error:
        extended["statecarLastReloadError"] = runtime.last_reload_error
    return {
        "id": runtime.app_id,
        "runtimeVersion": f"statecar-{__version__}",
        "enabledFeatures": [],
        "components": [
            {
                "name": b.name,
                "type": b.component.type,
                "version": b.component.version,
                "capabilities": capabilities(b.store.features),
            }
            for b in sorted(runtime.stores.values(), key=lambda b: b.name)
        ],
        "extended": extended,
    }


def health_routes(app: FastAPI, health: Health) -> None:
    """`/v1.0/healthz` and `/v1.0/healthz/outbound`: 204 only when every store answers."""

    @app.get("/v1.0/healthz", status_code=204, response_class=Response)
    async def healthz(appid: str | None = None) -> Response:
        if appid is not None and appid != health.runtime.app_id:
            return JSONResponse(
                {
                    "errorCode": "ERR_HEALTH_APPID_NOT_MATCH",
                    "message": "dapr app-id does not match",
                },
                status_code=500,
            )
        return await _readiness(health, "ERR_HEALTH_NOT_READY", "statecar is not ready")

    @app.get("/v1.0/healthz/outbound", status_code=204, response_class=Response)
    async def healthz_outbound() -> Response:
        return await _readiness(
            health, "ERR_OUTBOUND_HEALTH_NOT_READY", "statecar outbound is not ready"
        )


async def _readiness(health: Health, code: str, prefix: str) -> Response:
    """204 when every store answers; else 500 naming each store that doesn't, and why."""
    problems = await health.problems()
    if not problems:
        return Response(status_code=204)
    detail = "; ".join(f"{name}: {p}" for name, p in sorted(problems.items()))
    return JSONResponse({"errorCode": code, "message": f"{prefix}: {detail}"}, status_code=500)


def create_app(
    runtime: ComponentRuntime,
    metrics: Metrics,
    *,
    api_token: str | None,
    max_body_bytes: int,
    health: Health | None = None,
) -> StateAPI:
    """The ASGI app uvicorn serves: the state API's fast path, then FastAPI for the rest.

    The fast path wraps FastAPI from the outside, not as one of its middlewares: inside,
    every state request would first cross FastAPI's and Starlette's own layers (error
    middleware, telemetry, body limit), ~10 µs a GET here (bench/README.md, "Where the time
    goes"), which is half of what statecar adds over the floor.
    """
    app = FastAPI(
        title="statecar",
        version=__version__,
        description="The Dapr state API v1.0 (see /v1.0/state/{store}); this page lists the rest.",
        docs_url=None,
        redoc_url=None,
    )
    health = health or Health(runtime, metrics)
    app.state.health = health
    health_routes(app, health)

    @app.get("/v1.0/metadata")
    async def get_metadata() -> JSONResponse:
        # The JS SDK waits for a truthy body here before its first call (never send 204).
        return JSONResponse(metadata_document(runtime))

    @app.exception_handler(StarletteHTTPException)
    async def dapr_style_errors(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            return JSONResponse(
                {
                    "errorCode": "ERR_DIRECT_INVOKE",
                    "message": f"statecar serves the Dapr state API only: no route for {request.method} {request.url.path}",
                },
                status_code=404,
            )
        return JSONResponse(
            {"errorCode": "ERR_HTTP", "message": str(exc.detail)}, status_code=exc.status_code
        )

    return StateAPI(
        app, runtime=runtime, metrics=metrics, api_token=api_token, max_body_bytes=max_body_bytes
    )


def create_ops_app(health: Health, metrics: Metrics) -> FastAPI:
    """The port the kubelet and Prometheus reach: `/metrics` and the health probes (no token)."""
    app = FastAPI(title="statecar-ops", docs_url=None, redoc_url=None, openapi_url=None)
    health_routes(app, health)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", status_code=204, response_class=Response)
    async def liveness() -> Response:
        return Response(status_code=204)

    return app
