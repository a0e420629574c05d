"""
Health routes: `/v1.0/healthz`, `/v1.0/healthz/outbound` and the ops port's liveness `/healthz`.

Served by FastAPI, off the state API's fast path. Readiness is measured (one ping per store)
and cached briefly, so kubelet probes stay cheap; it answers as daprd does (Dapr docs, health
API reference): 204 when ready, else 500 with Dapr's error JSON naming each store and why.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

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


def liveness_route(app: FastAPI) -> None:
    """`/healthz` on the ops port: the process answers, whatever the stores say."""

    @app.get("/healthz", status_code=204, response_class=Response)
    async def liveness() -> Response:
        return Response(status_code=204)


async def _readiness(health: Health, code: str, prefix: str) -> Response:
    """204 when every store answers; else 500 naming each store that doesn't, and why."""
    problems = await health.problems()
    if not problems:
        return Response(status_code=204)
    detail = "; ".join(f"{name}: {p}" for name, p in sorted(problems.items()))
    return JSONResponse({"errorCode": code, "message": f"{prefix}: {detail}"}, status_code=500)
