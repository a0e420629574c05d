"""
Health routes: `/v1.0/healthz`, `/v1.0/healthz/outbound`, `/v1.0/healthz/{store}` and the ops
port's liveness `/healthz`.

Served by FastAPI, off the state API's fast path. Readiness is measured (one ping per store)
and cached briefly, so kubelet probes stay cheap; it answers as daprd does (Dapr docs, health
API reference): 204 when ready, else 500 with Dapr's error JSON naming each store and why.

Not ready means: some declared component is not serving as declared. That is a store whose
backend does not answer, and also a component that could not be loaded or opened (`redisPort:
abc`, a missing secret, an unreachable host) while the other stores keep serving. The 500's
body lists them under `components` (name -> reason, the reason naming the file and the field),
so a probe failure says what to fix. `/v1.0/healthz/{store}` answers the same for one store:
204, 500 with its reason, or 404 when no such component is declared for this app. Liveness
(`/healthz`) stays 204 whatever the stores say: restarting the sidecar fixes none of this.
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
        """Every declared component that is not serving as declared, with the reason."""
        now = time.monotonic()
        if now - self._checked_at > HEALTH_CACHE_SECONDS:
            results = await self.runtime.check_health()
            problems = {name: p for name, p in results.items() if p is not None}
            problems.update(self.runtime.failures)
            for name in results.keys() | problems.keys():
                self.metrics.store_up.labels(self.runtime.app_id, name).set(
                    0 if name in problems else 1
                )
            self._problems = problems
            self._checked_at = time.monotonic()
        return self._problems


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
        return await _readiness(health, "ERR_HEALTH_NOT_READY", "statecar is not ready")

    @app.get("/v1.0/healthz/outbound", status_code=204, response_class=Response)
    async def healthz_outbound() -> Response:
        return await _readiness(
            health, "ERR_OUTBOUND_HEALTH_NOT_READY", "statecar outbound is not ready"
        )

    @app.get("/v1.0/healthz/{store}", status_code=204, response_class=Response)
    async def healthz_store(store: str) -> Response:
        problems = await health.problems()
        if store in problems:
            return JSONResponse(
                {
                    "errorCode": "ERR_HEALTH_NOT_READY",
                    "message": f"state store {store} is not ready: {problems[store]}",
                    "components": {store: problems[store]},
                },
                status_code=500,
            )
        if store in health.runtime.stores:
            return Response(status_code=204)
        known = ", ".join(sorted(health.runtime.stores.keys() | problems.keys())) or "none"
        return JSONResponse(
            {
                "errorCode": "ERR_STATE_STORE_NOT_FOUND",
                "message": f"state store {store} is not declared for this app (declared: {known})",
            },
            status_code=404,
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
    return JSONResponse(
        {
            "errorCode": code,
            "message": f"{prefix}: {detail}",
            "components": dict(sorted(problems.items())),
        },
        status_code=500,
    )
