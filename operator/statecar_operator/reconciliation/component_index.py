"""
The operator's in-memory view of StateStoreComponents: what the kopf indexes hold. Pure.

kopf keeps, per object, what an index handler returns (docs/indexing.rst); these functions turn
a raw component body into that value, once per watch event, so that admission and the
reconciler read parsed, validated entries without an API call or a second parse.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from statecar_contract.components import ComponentError, ComponentSpec, parse_component


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

    @property
    def fingerprint(self) -> tuple[str, int | None, bool]:
        """Changes when the spec (generation) or the lifecycle does; not on status writes."""
        return self.uid, self.generation, self.deleting


def component_entry(body: Mapping[str, Any]) -> ComponentEntry:
    metadata = body.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "")
    name = str(metadata.get("name") or "")
    generation = metadata.get("generation")
    spec: ComponentSpec | None
    try:
        spec = parse_component(body)
        error = None
    except ComponentError as exc:
        spec, error = None, str(exc)
    return ComponentEntry(
        namespace=namespace,
        name=name,
        uid=str(metadata.get("uid") or ""),
        generation=generation if isinstance(generation, int) else None,
        spec=spec,
        error=error,
        status=copy.deepcopy(dict(body.get("status") or {})),
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def secret_ref_keys(entry: ComponentEntry) -> list[tuple[str, str]]:
    """(namespace, Secret name) for every Secret the component reads."""
    if entry.spec is None:
        return []
    return sorted({(entry.namespace, ref.name) for ref in entry.spec.secret_refs})


def usable_specs(entries: Iterable[ComponentEntry]) -> list[ComponentSpec]:
    """The components a pod may be wired to: valid and not being deleted, by name."""
    specs = [e.spec for e in entries if e.spec is not None and not e.deleting]
    return sorted(specs, key=lambda s: s.name)
