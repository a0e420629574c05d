"""
The operator's own small HTTP server: `/healthz` (liveness), `/readyz` (readiness), `/metrics`.

kopf's probing endpoint serves a single liveness path and no readiness (docs/probing.rst), but
a webhook server needs readiness: kopf answers admission requests from its indexes without
waiting for them to be filled (its admission path does not wait on the `operator_indexed`
toggle that resource handlers wait on; compare kopf `reactor/processing.py` with
`engines/admission.py`). So `/readyz` is green only when every StateStoreComponent the API
server listed has reached the index, and the webhook server listens with a certificate loaded.
`/metrics` serves the webhook certificate's expiry and the caBundle repairs (`webhook_tls.sources`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)


class Readiness:
    """The operator's readiness: warm indexes and a loaded webhook certificate."""

    def __init__(self) -> None:
        self.cert_loaded = False
        self.indexes_warm = False
        self.problem: str | None = "starting"
        self._indexed_uids: set[str] = set()

    def note_indexed(self, uid: str) -> None:
        """Called by the component index handler for every component it indexes."""
        if not self.indexes_warm and uid:
            self._indexed_uids.add(uid)

    def check_warm(self, listed_uids: set[str]) -> bool:
        """Warm once every listed component has been indexed (then it stays warm)."""
        if not self.indexes_warm and listed_uids <= self._indexed_uids:
            self.indexes_warm = True
            self._indexed_uids.clear()
        return self.indexes_warm

    @property
    def ready(self) -> bool:
        return self.cert_loaded and self.indexes_warm

    def report(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "webhookCertificateLoaded": self.cert_loaded,
            "indexesWarm": self.indexes_warm,
            "problem": None if self.ready else self.problem,
        }


async def wait_until_warm(
    readiness: Readiness,
    list_component_uids: Callable[[], Awaitable[set[str]]],
    *,
    interval: float = 1.0,
) -> None:
    """Re-list components until the index holds all of them (a deleted one drops off the list)."""
    while not readiness.indexes_warm:
        try:
            listed = await list_component_uids()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # e.g. the CRD is not installed yet: report, retry
            readiness.problem = f"cannot list StateStoreComponents: {exc}"
        else:
            if readiness.check_warm(listed):
                logger.info("Indexes are warm (%d components)", len(listed))
                break
            readiness.problem = "indexing StateStoreComponents"
        await asyncio.sleep(interval)


async def serve(
    readiness: Readiness,
    *,
    addr: str,
    port: int,
    details: Callable[[], Mapping[str, Any]] = dict,
    metrics: Callable[[], str] | None = None,
) -> None:
    """Serve the probes (and `/metrics`, Prometheus' text format, when given) until cancelled."""

    async def healthz(request: web.Request) -> web.Response:
        # The loop answered, so the process is alive; details help a human reading it.
        return web.json_response({"alive": True, **details()})

    async def readyz(request: web.Request) -> web.Response:
        body = {**readiness.report(), **details()}
        return web.json_response(body, status=200 if readiness.ready else 503)

    async def prometheus(request: web.Request) -> web.Response:
        assert metrics is not None  # only routed when given
        # https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
        return web.Response(
            body=metrics().encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz)])
    if metrics is not None:
        app.add_routes([web.get("/metrics", prometheus)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, addr, port)
    await site.start()
    logger.info("Serving /healthz, /readyz%s on %s:%d", ", /metrics" if metrics else "", addr, port)
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(runner.cleanup())
