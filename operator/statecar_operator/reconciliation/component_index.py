"""
The operator's in-memory view of StateStoreComponents (and, with the Dapr-components option,
of Dapr's own `state.*` Components): what the kopf indexes hold. Pure.

kopf keeps, per object, what an index handler returns (docs/indexing.rst); these functions turn
a raw component body into that value, once per watch event, so that admission and the
reconciler read parsed, validated entries without an API call or a second parse.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from statecar_contract import components as contract
from statecar_contract.components import (
    DAPR_API_VERSION,
    ComponentError,
    ComponentSpec,
    is_state_component,
    parse_component,
)

#: Dapr's own Component resource (components.dapr.io), watched with the Dapr-components option.
DAPR_KIND: Final = "Component"
DAPR_COMPONENTS: Final = contract.DAPR_COMPONENTS_RESOURCE
#: The secret store a Dapr Component in Kubernetes reads secretKeyRefs from by default (Dapr's
#: built-in `kubernetes` store): the operator resolves exactly those, from the namespace's Secrets.
DAPR_KUBERNETES_STORE: Final = "kubernetes"


@dataclass(frozen=True)
class ComponentEntry:
    """One StateStoreComponent as the operator last saw it."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: ComponentSpec | None
    #: Why `spec` is None: the parse error, naming the field.
    error: str | None
    status: Mapping[str, Any] = field(default_factory=dict, compare=False)
    deleting: bool = False
    api_version: str = f"{contract.API_GROUP}/{contract.API_VERSION}"
    kind: str = contract.KIND

    @property
    def is_dapr(self) -> bool:
        """A Dapr `Component`: wired like a StateStoreComponent, but its status is not ours."""
        return self.kind == DAPR_KIND

    @property
    def fingerprint(self) -> tuple[str, int | None, bool]:
        """Changes when the spec (generation) or the lifecycle does; not on status writes."""
        return self.uid, self.generation, self.deleting


def component_entry(body: Mapping[str, Any]) -> ComponentEntry:
    metadata = body.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    generation = metadata.get("generation")
    dapr = body.get("kind") == DAPR_KIND and body.get("apiVersion") == DAPR_API_VERSION
    spec: ComponentSpec | None
    try:
        spec = parse_component(body)
        error = None
        store = (body.get("auth") or {}).get("secretStore") if dapr else None
        if store not in (None, "", DAPR_KUBERNETES_STORE) and spec.secret_refs:
            raise ComponentError(
                "auth.secretStore",
                f"{store!r}: statecar's operator resolves secretKeyRefs from the namespace's "
                f"Kubernetes Secrets only (Dapr's {DAPR_KUBERNETES_STORE!r} store); drop "
                "auth.secretStore or use Kubernetes Secrets",
            )
    except ComponentError as exc:
        spec, error = None, str(exc)
    return ComponentEntry(
        namespace=namespace,
        name=name,
        uid=str(metadata.get("uid") or ""),
        generation=generation if isinstance(generation, int) else None,
        spec=spec,
        error=error,
        status={} if dapr else copy.deepcopy(dict(body.get("status") or {})),
        deleting=bool(metadata.get("deletionTimestamp")),
        **({"api_version": DAPR_API_VERSION, "kind": DAPR_KIND} if dapr else {}),
    )


def is_wired_dapr_component(body: Mapping[str, Any]) -> bool:
    """A Dapr Component the operator wires: `state.*` only (pub/sub, bindings... are Dapr's)."""
    return is_state_component(body)


def merged(
    statecar: Iterable[ComponentEntry], dapr: Iterable[ComponentEntry]
) -> list[ComponentEntry]:
    """A namespace's components: a StateStoreComponent wins over a Dapr Component of its name."""
    own = list(statecar)
    names = {e.name for e in own}
    return [*own, *(e for e in dapr if e.name not in names)]


def secret_ref_keys(entry: ComponentEntry) -> list[tuple[str, str]]:
    """(namespace, Secret name) for every Secret the component reads."""
    if entry.spec is None:
        return []
    return sorted({(entry.namespace, ref.name) for ref in entry.spec.secret_refs})


def usable_specs(entries: Iterable[ComponentEntry]) -> list[ComponentSpec]:
    """The components a pod may be wired to: valid and not being deleted, by name."""
    specs = [e.spec for e in entries if e.spec is not None and not e.deleting]
    return sorted(specs, key=lambda s: s.name)
