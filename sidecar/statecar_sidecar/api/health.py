"""
Health routes: `/v1.0/healthz`, `/v1.0/healthz/outbound`, `/v1.0/healthz/{store}` and the ops
port's liveness `/healthz`.

Readiness is measured (one ping per store) and cached briefly, so kubelet probes stay cheap; it
answers as daprd does (Dapr docs, health API reference): 204 when ready, else 500 with Dapr's
error JSON naming each store and why. The answers are computed here once (`readiness`,
`store_health`) and served two ways: by `api.front` for the exact paths probes hit, without
FastAPI, and by `api.fastapi_app`'s routes for everything else (a query string, `{store}`),
which `api.front` builds only when such a request first arrives.

Not ready means: some declared component is not serving as declared. That is a store whose
backend does not answer, and also a component that could not be loaded or opened (`redisPort:
abc`, a missing secret, an unreachable host) while the other stores keep serving. The 500's
body lists them under `components` (name -> reason, the reason naming the file and the field),
so a probe failure says what to fix. `/v1.0/healthz/{store}` answers the same for one store:
204, 500 with its reason, or 404 when no such component is declared for this app. Liveness
(`/healthz`) stays 204 whatever the stores say: restarting the sidecar fixes none of this.

Not ready also means: still starting. HTTP answers before the gRPC port listens (its modules are
imported after HTTP serves, for a fast cold start), so until it listens `starting` says so and
readiness is 500: the Dapr SDKs wait for `/v1.0/healthz/outbound` and then call gRPC at once
(dapr python-sdk `DaprHealth.wait_until_ready`), as daprd answers 500 until it has initialised.
"""

from __future__ import annotations

import time
from typing import Any

from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentRuntime

HEALTH_CACHE_SECONDS = 0.5

#: (status, JSON document or None for an empty body): one health answer, framework-free.
Answer = tuple[int, dict[str, Any] | None]

NOT_READY: tuple[str, str] = ("ERR_HEALTH_NOT_READY", "statecar is not ready")
OUTBOUND_NOT_READY: tuple[str, str] = (
    "ERR_OUTBOUND_HEALTH_NOT_READY",
    "statecar outbound is not ready",
)


class Health:
    """Store reachability, measured (a ping per store) and cached briefly so probes stay cheap."""

    def __init__(self, runtime: ComponentRuntime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._checked_at = 0.0
        self._problems: dict[str, str] = {}
        #: What start-up still waits for (the gRPC listener), or None once everything listens.
        self.starting: str | None = None

    async def problems(self) -> dict[str, str]:
        """Every declared component that is not serving as declared, with the reason."""
        now = time.monotonic()
        if now - self._checked_at > HEALTH_CACHE_SECONDS:
            results = await self.runtime.check_health()
            problems = {name: p for name, p in results.items() if p is not None}
            problems.update(self.runtime.failures)
            for name in results.keys() | problems.keys():
                self.metrics.component_up(name, name not in problems)
            self._problems = problems
            self._checked_at = time.monotonic()
        return self._problems


async def readiness(health: Health, code: str, prefix: str) -> Answer:
    """204 when every store answers; else 500 naming each store that doesn't, and why."""
    problems = await health.problems()
    if not problems and health.starting is None:
        return 204, None
    detail = "; ".join(f"{name}: {p}" for name, p in sorted(problems.items()))
    if health.starting is not None:
        detail = "; ".join(filter(None, (health.starting, detail)))
    return 500, {
        "errorCode": code,
        "message": f"{prefix}: {detail}",
        "components": dict(sorted(problems.items())),
    }


async def store_health(health: Health, store: str) -> Answer:
    """`/v1.0/healthz/{store}`: 204, 500 with the store's problem, or 404 when not declared."""
    problems = await health.problems()
    if store in problems:
        return 500, {
            "errorCode": "ERR_HEALTH_NOT_READY",
            "message": f"state store {store} is not ready: {problems[store]}",
            "components": {store: problems[store]},
        }
    if store in health.runtime.stores:
        return 204, None
    known = ", ".join(sorted(health.runtime.stores.keys() | problems.keys())) or "none"
    return 404, {
        "errorCode": "ERR_STATE_STORE_NOT_FOUND",
        "message": f"state store {store} is not declared for this app (declared: {known})",
    }
