"""
kopf's webhook server, reporting when its certificate is loaded and filling in the namespace.

kopf's `WebhookServer` loads the certificate files (and re-loads them when they change: its
`file_check_interval`) and then yields its client config once it listens; that moment is
when `/readyz` may turn green. A pod's `metadata.namespace` may be empty in an admission
request (`kubectl create` without `-n`: the API server only fills it in later); the request
carries it in `request.namespace`, so it is copied into the object before kopf's handlers see
it (Istio's injector does the same).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import kopf


def fill_namespace(request: Any) -> None:
    """Copy `request.namespace` into the admitted object's metadata when that is empty."""
    payload = request.get("request") if isinstance(request, dict) else None
    if not isinstance(payload, dict):
        return
    namespace = payload.get("namespace")
    for key in ("object", "oldObject"):
        obj = payload.get(key)
        if isinstance(obj, dict) and namespace:
            metadata = obj.setdefault("metadata", {})
            if isinstance(metadata, dict) and not metadata.get("namespace"):
                metadata["namespace"] = namespace


class StatecarWebhookServer(kopf.WebhookServer):
    def __init__(self, *, on_listening: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_listening = on_listening

    async def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def with_namespace(
            request: Any,
            *,
            webhook: kopf.HandlerId | None = None,
            headers: kopf.Headers | None = None,
            sslpeer: kopf.SSLPeer | None = None,
        ) -> Any:
            fill_namespace(request)
            return await fn(request, webhook=webhook, headers=headers, sslpeer=sslpeer)

        # The request/response TypedDicts of kopf.WebhookFn are not exported by kopf.
        wrapped = cast(kopf.WebhookFn, with_namespace)
        async for client_config in super().__call__(wrapped):
            self._on_listening()
            yield client_config
