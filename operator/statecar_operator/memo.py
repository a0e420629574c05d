"""
The operator's shared objects, handed to every kopf handler as its `memo` (kopf docs/memos.rst).

kopf gives each object and each admission request a *shallow copy* of the memo, so `Memo` is
frozen and holds only shared objects; the one thing filled in after kopf starts (references to
kopf's indexes, which a startup handler receives) lives in the mutable `Indexes` holder.

kopf itself is not imported here: an index is typed by its shape (kopf's `Index` is a
`Mapping` of keys to `Store`s, and a `Store` a `Collection` of values), so only the handlers
and the composition root depend on kopf.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from statecar_contract.wiring import WIRING_SECRET_NAME, app_secret_name
from statecar_operator.cluster.dapr_injector import DaprInjectorPresence
from statecar_operator.cluster.events import EventRecorder
from statecar_operator.health_server import Readiness
from statecar_operator.reconciliation.component_index import ComponentEntry, merged
from statecar_operator.reconciliation.reconciler import Reconciler, View
from statecar_operator.reconciliation.staleness import PodInfo
from statecar_operator.reconciliation.wiring_secret import pod_config_hash
from statecar_operator.settings import OperatorSettings


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    identity: str
    holder: str | None

    async def release(self) -> None: ...


@dataclass
class Indexes:
    """kopf's live indexes, bound by the startup handler (empty views until then)."""

    components: Mapping[str, Collection[ComponentEntry]] | None = None
    secret_refs: Mapping[tuple[str, str], Collection[str]] | None = None
    #: With the Dapr-components option: Dapr's state.* Components, as `components` holds ours.
    dapr_components: Mapping[str, Collection[ComponentEntry]] | None = None
    #: With stale-sidecar reporting: the injected pods, by namespace.
    pods: Mapping[str, Collection[PodInfo]] | None = None
    #: Whether pods are watched at all (the index stays None until kopf binds it).
    watches_pods: bool = False

    def pods_in(self, namespace: str) -> list[PodInfo] | None:
        if not self.watches_pods:
            return None
        if self.pods is None or namespace not in self.pods:
            return []
        return list(self.pods[namespace])

    def all_pods(self) -> Mapping[str, Collection[PodInfo]]:
        return dict(self.pods or {})

    #: (namespace, Secret name) -> the wiring Secret's config hash.
    wiring: Mapping[tuple[str, str], Collection[str]] | None = None

    def components_in(self, namespace: str) -> list[ComponentEntry]:
        return merged(
            _entries(self.components, namespace), _entries(self.dapr_components, namespace)
        )

    def secret_hash(self, namespace: str, name: str) -> str | None:
        if self.wiring is None or (namespace, name) not in self.wiring:
            return None
        return next((h for h in self.wiring[(namespace, name)] if h), None)

    def config_hash(self, namespace: str, app_id: str) -> str | None:
        """What a pod of `app_id` records: its two wiring Secrets' hashes, combined."""
        return pod_config_hash(
            self.secret_hash(namespace, WIRING_SECRET_NAME),
            self.secret_hash(namespace, app_secret_name(app_id)),
        )

    def view(self) -> View:
        return View(
            components=self.components_in,
            component_namespaces=lambda: {*(self.components or ()), *(self.dapr_components or ())},
            wiring_namespaces=lambda: {namespace for namespace, _ in self.wiring or ()},
            pods=self.pods_in,
        )


def _entries(
    index: Mapping[str, Collection[ComponentEntry]] | None, namespace: str
) -> list[ComponentEntry]:
    if index is None or namespace not in index:
        return []
    return list(index[namespace])


@dataclass(frozen=True)
class Memo:
    """What every kopf handler receives as `memo`; built once by the composition root."""

    settings: OperatorSettings
    readiness: Readiness
    events: EventRecorder
    reconciler: Reconciler
    leadership: Leadership
    indexes: Indexes = field(default_factory=Indexes)
    #: Only with the Dapr-annotations option: whether Dapr's own injector is installed.
    dapr_injector: DaprInjectorPresence | None = None
