"""
The only module of the operator that calls the Kubernetes API (kopf's own watching aside).

Client: kubernetes_asyncio, used as a thin authenticated REST transport (`ApiClient.call_api`
with raw JSON in and out), so the rest of the operator works with plain dicts in the API's own
camelCase shape, exactly what kopf hands to handlers and what the pure modules produce. The
credentials come from the same place, in the same order, as kopf's `login_via_async_client`
(in-cluster ServiceAccount first, then kubeconfig), which `handlers` registers for kopf: both
halves of the operator act as one identity, the one the documented RBAC is bound to.

Every call is bounded (`request_timeout`). API errors become `KubeError` subclasses; transport
errors (aiohttp, timeouts) propagate and the callers retry on their next pass.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final, cast
from urllib.parse import quote

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from statecar_contract import components as contract

_JSON: Final = "application/json"
#: Custom resources do not support strategic merge patches; kubernetes_asyncio would pick one
#: for a dict body unless told (api_client.select_header_content_type).
_MERGE_PATCH: Final = "application/merge-patch+json"
_JSON_PATCH: Final = "application/json-patch+json"
#: The labels every wiring Secret carries (`reconciliation.wiring_secret.WIRING_LABELS`).
WIRING_SELECTOR: Final = "app.kubernetes.io/managed-by=statecar,app.kubernetes.io/component=wiring"
_RESPONSE_TYPES: Final = {200: "object", 201: "object", 202: "object"}


class KubeError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")


class NotFoundError(KubeError):
    pass


class ConflictError(KubeError):
    """409: the object changed (or exists) since we read it; re-read and retry."""


class ForbiddenError(KubeError):
    """403: the operator's RBAC does not allow this."""


@contextlib.asynccontextmanager
async def connect(request_timeout: float = 10.0) -> AsyncIterator[Kube]:
    """An authenticated client: in-cluster ServiceAccount, else the current kubeconfig context."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # kubernetes_asyncio's loaders are untyped
    except config.ConfigException:
        await config.load_kube_config(client_configuration=configuration)
    async with client.ApiClient(configuration=configuration) as api:
        yield Kube(api, request_timeout=request_timeout)


def _path(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _component_base(namespace: str) -> list[str]:
    return [
        "apis",
        contract.API_GROUP,
        contract.API_VERSION,
        "namespaces",
        namespace,
        contract.PLURAL,
    ]


class Kube:
    """Raw-JSON calls for exactly the resources the operator's RBAC (see `rbac`) allows."""

    def __init__(self, api: Any, *, request_timeout: float = 10.0) -> None:
        self._api = api
        self._timeout = request_timeout

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = _JSON,
    ) -> dict[str, Any]:
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Accept": _JSON, "Content-Type": content_type},
                body=body,
                auth_settings=["BearerToken"],
                response_types_map=_RESPONSE_TYPES,
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            raise _translate(exc) from None
        return cast(dict[str, Any], result) if isinstance(result, dict) else {}

    # --- Secrets (wiring Secrets: create/update/delete; referenced Secrets: get) ------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request(
                "GET", _path("api", "v1", "namespaces", namespace, "secrets", name)
            )
        except NotFoundError:
            return None

    async def list_wiring_secrets(self, namespace: str) -> dict[str, dict[str, Any]]:
        """The namespace's Secrets labelled as statecar's wiring, by name."""
        listing = await self._request(
            "GET",
            _path("api", "v1", "namespaces", namespace, "secrets"),
            query=[("labelSelector", WIRING_SELECTOR)],
        )
        return {
            str(item["metadata"]["name"]): item
            for item in listing.get("items") or []
            if isinstance(item, dict) and (item.get("metadata") or {}).get("name")
        }

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request(
            "POST", _path("api", "v1", "namespaces", namespace, "secrets"), body=dict(body)
        )

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request(
            "PUT", _path("api", "v1", "namespaces", namespace, "secrets", name), body=dict(body)
        )

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        """Delete; with `uid`, only that incarnation (never a Secret recreated meanwhile)."""
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if uid:
            options["preconditions"] = {"uid": uid}
        with contextlib.suppress(NotFoundError):
            await self._request(
                "DELETE", _path("api", "v1", "namespaces", namespace, "secrets", name), body=options
            )

    # --- StateStoreComponents (read by kopf's watch; status written here) -------------------

    async def patch_component_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        path = _path(*_component_base(namespace), name, "status")
        await self._request("PATCH", path, body={"status": dict(status)}, content_type=_MERGE_PATCH)

    async def list_component_uids(
        self, namespaces: Sequence[str] = (), *, dapr_components: bool = False
    ) -> set[str]:
        """Every component's uid: cluster-wide, or in each of `namespaces` (restricted RBAC);
        with `dapr_components`, every Dapr Component's too (each of them is indexed)."""
        kinds = [(contract.API_GROUP, contract.API_VERSION, contract.PLURAL)]
        if dapr_components:
            kinds.append(contract.DAPR_COMPONENTS_RESOURCE)
        paths = [
            _path("apis", group, version, *(("namespaces", ns) if ns else ()), plural)
            for group, version, plural in kinds
            for ns in (namespaces or [""])
        ]
        uids: set[str] = set()
        for path in paths:
            listing = await self._request("GET", path)
            uids.update(
                str(item["metadata"]["uid"])
                for item in listing.get("items") or []
                if isinstance(item, Mapping) and "uid" in (item.get("metadata") or {})
            )
        return uids

    # --- Workloads (the opt-in rollout of stale sidecars; `reconciliation.sidecar_updates`) ----

    async def read_workload(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A ReplicaSet, Deployment, StatefulSet or DaemonSet (apps/v1)."""
        try:
            return await self._request("GET", _workload_path(kind, namespace, name))
        except NotFoundError:
            return None

    async def patch_workload(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            _workload_path(kind, namespace, name),
            body=dict(patch),
            content_type=_MERGE_PATCH,
        )

    async def list_disruption_budgets(self, namespace: str) -> list[dict[str, Any]]:
        path = _path("apis", "policy", "v1", "namespaces", namespace, "poddisruptionbudgets")
        listing = await self._request("GET", path)
        return [i for i in listing.get("items") or [] if isinstance(i, dict)]

    # --- Leases (leader election) -------------------------------------------------------------

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", self._lease_path(namespace, name))
        except NotFoundError:
            return None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        path = _path("apis", "coordination.k8s.io", "v1", "namespaces", namespace, "leases")
        return await self._request("POST", path, body=dict(body))

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self._request("PUT", self._lease_path(namespace, name), body=dict(body))

    @staticmethod
    def _lease_path(namespace: str, name: str) -> str:
        return _path("apis", "coordination.k8s.io", "v1", "namespaces", namespace, "leases", name)

    # --- Webhook configurations (the caBundle the operator keeps; see `webhook_tls.sources`) ------------

    async def read_webhook_configuration(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", _webhook_configuration_path(kind, name))
        except NotFoundError:
            return None

    async def patch_webhook_configuration(
        self, kind: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """An RFC 6902 JSON patch; a failed `test` operation comes back as 422 (a KubeError)."""
        return await self._request(
            "PATCH",
            _webhook_configuration_path(kind, name),
            body=operations,
            content_type=_JSON_PATCH,
        )

    # --- Watching one named object ----------------------------------------------------------------

    async def watch_secret(
        self, namespace: str, name: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[str]:
        async for event in self._watch_named(
            _path("api", "v1", "namespaces", namespace, "secrets"), name, timeout_seconds
        ):
            yield event

    async def watch_webhook_configuration(
        self, kind: str, name: str, *, timeout_seconds: int = 300
    ) -> AsyncIterator[str]:
        collection = _webhook_configuration_path(kind, None)
        async for event in self._watch_named(collection, name, timeout_seconds):
            yield event

    async def _watch_named(
        self, collection: str, name: str, timeout_seconds: int
    ) -> AsyncIterator[str]:
        """
        The event types (ADDED, MODIFIED, DELETED) of one object until the server ends the watch.

        Only a wake-up signal for a loop that then GETs the object: no resourceVersion to keep,
        so a watch started without one (the API server first sends the object as ADDED) is
        enough, and 410 Gone cannot happen. The `metadata.name` field selector is what lets RBAC
        authorize a watch by `resourceNames`
        (https://kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-resources).
        """
        query = [
            ("watch", "true"),
            ("fieldSelector", f"metadata.name={name}"),
            ("timeoutSeconds", str(timeout_seconds)),
            ("allowWatchBookmarks", "false"),
        ]
        try:
            response = await self._api.call_api(
                collection,
                "GET",
                query_params=query,
                header_params={"Accept": _JSON},
                auth_settings=["BearerToken"],
                _preload_content=False,
                # Connect quickly or fail; the stream itself lasts until timeoutSeconds.
                _request_timeout=(self._timeout, timeout_seconds + self._timeout),
            )
        except ApiException as exc:
            raise _translate(exc) from None
        try:
            if not 200 <= response.status < 300:
                # Unread responses are not checked by kubernetes_asyncio (rest.py): do it here.
                error = ApiException(status=response.status, reason=response.reason)
                error.body = (await response.read()).decode(errors="replace")
                raise _translate(error)
            while True:
                line = await response.content.readline()
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                kind = str(event.get("type") or "")
                if kind == "ERROR":
                    status = event.get("object") or {}
                    raise KubeError(
                        int(status.get("code") or 0),
                        str(status.get("reason") or ""),
                        str(status.get("message") or ""),
                    )
                yield kind
        finally:
            # Closing (not releasing) drops the connection with the unread rest of the stream.
            response.close()

    # --- Events ---------------------------------------------------------------------------------

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        await self._request(
            "POST", _path("api", "v1", "namespaces", namespace, "events"), body=dict(body)
        )


def _workload_path(kind: str, namespace: str, name: str) -> str:
    plural = {
        "ReplicaSet": "replicasets",
        "Deployment": "deployments",
        "StatefulSet": "statefulsets",
        "DaemonSet": "daemonsets",
    }[kind]
    return _path("apis", "apps", "v1", "namespaces", namespace, plural, name)


def _webhook_configuration_path(kind: str, name: str | None) -> str:
    plural = {
        "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
        "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
    }[kind]
    segments = ["apis", "admissionregistration.k8s.io", "v1", plural]
    return _path(*segments, *([name] if name is not None else []))


def _translate(exc: ApiException) -> KubeError:
    status = int(getattr(exc, "status", 0) or 0)
    reason = str(getattr(exc, "reason", "") or "")
    message = reason
    body = getattr(exc, "body", None)
    if body:
        try:
            decoded = json.loads(body)
        except (TypeError, ValueError):
            message = str(body)[:500]
        else:
            if isinstance(decoded, dict):
                message = str(decoded.get("message") or message)
    kind: type[KubeError] = {404: NotFoundError, 409: ConflictError, 403: ForbiddenError}.get(
        status, KubeError
    )
    return kind(status, reason, message)
