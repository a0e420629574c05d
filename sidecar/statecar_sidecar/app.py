"""
The sidecar's two ASGI applications, composed from the pieces in `api/`.

The state port: the Dapr state API's fast path (`api.routing.StateAPI`) in front of FastAPI,
which serves health (`api.health`), metadata (`api.metadata`) and Dapr-style 404s for the rest.
The ops port: health, liveness and `/metrics`. The runtime and metrics are passed in, so tests
build an app over any store without a server.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from statecar_sidecar import __version__
from statecar_sidecar.api.health import Health, health_routes, liveness_route
from statecar_sidecar.api.metadata import metadata_route
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
    metrics.components = runtime
    health = health or Health(runtime, metrics)
    app.state.health = health
    health_routes(app, health)
    metadata_route(app, runtime)
    app.add_exception_handler(StarletteHTTPException, _dapr_style_errors)
    app.add_exception_handler(Exception, _internal_error)
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

    liveness_route(app)
    return app


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
