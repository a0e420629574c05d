"""
Whether Dapr's own sidecar injector is installed: its MutatingWebhookConfiguration exists.

Only with the Dapr-annotations option (`InjectorSettings.dapr_annotations`): the injector then
honours `dapr.io/*` annotations, but never in a cluster where Dapr's injector serves them too
(both would inject a sidecar on the same ports). Dapr's chart installs one cluster-wide
configuration, `dapr-sidecar-injector` (charts/dapr/charts/dapr_sidecar_injector/templates/
dapr_sidecar_injector_webhook_config.yaml), so its presence is the answer for every namespace.

Read once, then kept current by a watch on that one name (RBAC grants `get` and `watch` of it
by `resourceNames`, nothing else); a failed read or watch is retried. `installed` is None until
the first read answered: admission then asks the pod's controller to retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol

from statecar_contract.annotations import DAPR_INJECTOR_WEBHOOK

logger = logging.getLogger(__name__)

KIND: Final = "MutatingWebhookConfiguration"


class WebhookConfigurations(Protocol):
    """The calls made (implemented by `cluster.kube.Kube`)."""

    async def read_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def watch_webhook_configuration(self, kind: str, name: str) -> AsyncIterator[str]: ...


class DaprInjectorPresence:
    """`installed`: True, False, or None while not known yet."""

    def __init__(self, api: WebhookConfigurations, *, retry_interval: float = 5.0) -> None:
        self._api = api
        self._retry = retry_interval
        self.installed: bool | None = None

    async def _read(self) -> None:
        found = await self._api.read_webhook_configuration(KIND, DAPR_INJECTOR_WEBHOOK)
        installed = found is not None
        if installed != self.installed:
            logger.info(
                "Dapr's sidecar injector (%s %s) is %s: dapr.io/* annotations are %s",
                KIND,
                DAPR_INJECTOR_WEBHOOK,
                "installed" if installed else "not installed",
                "left to it" if installed else "honoured by statecar",
            )
        self.installed = installed

    async def run(self) -> None:
        while True:
            try:
                await self._read()
                async for _ in self._api.watch_webhook_configuration(KIND, DAPR_INJECTOR_WEBHOOK):
                    await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  # any API failure: keep the last answer, retry
                logger.warning("Cannot watch %s %s: %s", KIND, DAPR_INJECTOR_WEBHOOK, exc)
                await asyncio.sleep(self._retry)
