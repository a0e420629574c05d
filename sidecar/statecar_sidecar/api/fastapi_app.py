"""
The FastAPI applications behind `api.front`: every route of the state and ops ports that the
raw layers do not serve (`/v1.0/healthz?appid=`, `/v1.0/healthz/{store}`, HEAD and other
methods, Dapr-style 404/405 for unknown paths).

Importing this module imports FastAPI, pydantic and Starlette: ~0.5 s and ~15 MiB on this
project's VM (bench/README.md, "Imports and memory"). So only `api.front` imports it, when the
first request that needs it arrives; a sidecar that only serves state, probes and scrapes never
does.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from statecar_sidecar import __version__
from statecar_sidecar.api.front import METRICS_MEDIA_TYPE
from statecar_sidecar.api.health import (
    NOT_READY,
    OUTBOUND_NOT_READY,
    Answer,
    Health,
    readiness,
    store_health,
)
from statecar_sidecar.api.metadata import metadata_document
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime


def build_state_app(runtime: ComponentRuntime, health: Health) -> FastAPI:
    """Health, metadata and Dapr-style errors for the state port's non-state routes."""
    app = FastAPI(
        title="statecar",
        version=__version__,
        description="The Dapr state API v1.0 (see /v1.0/state/{store}); this page lists the rest.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.health = health
    health_routes(app, health)
    metadata_route(app, runtime)
    app.add_exception_handler(StarletteHTTPException, _dapr_style_errors)
    app.add_exception_handler(Exception, _internal_error)
    return app


def build_ops_app(health: Health, metrics: Metrics) -> FastAPI:
    """The port the kubelet and Prometheus reach: `/metrics` and the health probes (no token)."""
    app = FastAPI(title="statecar-ops", docs_url=None, redoc_url=None, openapi_url=None)
    health_routes(app, health)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=METRICS_MEDIA_TYPE.decode())

    liveness_route(app)
    return app


def health_routes(app: FastAPI, health: Health) -> None:
    """`/v1.0/healthz`, `/v1.0/healthz/outbound`, `/v1.0/healthz/{store}`: 204 when serving."""

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
        return _response(await readiness(health, *NOT_READY))

    @app.get("/v1.0/healthz/outbound", status_code=204, response_class=Response)
    async def healthz_outbound() -> Response:
        return _response(await readiness(health, *OUTBOUND_NOT_READY))

    @app.get("/v1.0/healthz/{store}", status_code=204, response_class=Response)
    async def healthz_store(store: str) -> Response:
        return _response(await store_health(health, store))


def liveness_route(app: FastAPI) -> None:
    """`/healthz` on the ops port: the process answers, whatever the stores say."""

    @app.get("/healthz", status_code=204, response_class=Response)
    async def liveness() -> Response:
        return Response(status_code=204)


def metadata_route(app: FastAPI, runtime: ComponentRuntime) -> None:
    """`GET /v1.0/metadata`."""

    @app.get("/v1.0/metadata")
    async def get_metadata() -> JSONResponse:
        # The JS SDK waits for a truthy body here before its first call (never send 204).
        return JSONResponse(metadata_document(runtime))


def _response(answer: Answer) -> Response:
    status, document = answer
    if document is None:
        return Response(status_code=status)
    return JSONResponse(document, status_code=status)


async def _dapr_style_errors(request: Request, exc: Exception) -> Response:
    """FastAPI's own 404/405 and HTTP errors, answered in Dapr's error JSON."""
    assert isinstance(exc, StarletteHTTPException)  # registered for this type only
    if exc.status_code == 404:
        return JSONResponse(
            {
                "errorCode": "ERR_DIRECT_INVOKE",
                "message": f"statecar serves the Dapr state API only: no route for {request.method} {request.url.path}",
            },
            status_code=404,
        )
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return JSONResponse(
            {
                "errorCode": "ERR_METHOD_NOT_ALLOWED",
                "message": f"{request.url.path} does not take {request.method}; it takes {allow}",
            },
            status_code=405,
            headers={"Allow": allow},
        )
    return JSONResponse(
        {"errorCode": "ERR_HTTP", "message": str(exc.detail)}, status_code=exc.status_code
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Any other failure on these routes: Dapr's error JSON, never a plain-text traceback page.

    Starlette's outermost middleware calls this, then re-raises, so the server logs the traceback.
    """
    return JSONResponse(
        {
            "errorCode": "ERR_INTERNAL",
            "message": f"internal error serving {request.method} {request.url.path} "
            f"({type(exc).__name__}); the sidecar logged the details. Please report it",
        },
        status_code=500,
    )
