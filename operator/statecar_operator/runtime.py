"""
The operator's shared state, handed to every kopf handler as its `memo` (docs/memos.rst).

kopf gives each object and each admission request a *shallow copy* of the memo, so `Runtime`
is frozen and holds only shared objects; the one thing filled in after kopf starts (references
to kopf's indexes, which a startup handler receives) lives in the mutable `Indexes` holder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from statecar_operator.catalog import ComponentEntry
from statecar_operator.events import EventRecorder
from statecar_operator.health import Readiness
from statecar_operator.reconciler import Reconciler, View
from statecar_operator.settings import OperatorSettings

if TYPE_CHECKING:
    import kopf


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    identity: str
    holder: str | None

    async def release(self) -> None: ...


@dataclass
class Indexes:
    """kopf's live indexes, bound by the startup handler (empty views until then)."""

    components: kopf.Index[str, ComponentEntry] | None = None
    secret_refs: kopf.Index[tuple[str, str], str] | None = None
    wiring: kopf.Index[str, str] | None = None

    def components_in(self, namespace: str) -> list[ComponentEntry]:
        if self.components is None or namespace not in self.components:
            return []
        return list(self.components[namespace])

    def config_hash(self, namespace: str) -> str | None:
        if self.wiring is None or namespace not in self.wiring:
            return None
        return next((h for h in self.wiring[namespace] if h), None)

    def view(self) -> View:
        return View(
            components=self.components_in,
            component_namespaces=lambda: set(self.components or ()),
            wiring_namespaces=lambda: set(self.wiring or ()),
        )


@dataclass(frozen=True)
class Runtime:
    settings: OperatorSettings
    readiness: Readiness
    events: EventRecorder
    reconciler: Reconciler
    leadership: Leadership
    indexes: Indexes = field(default_factory=Indexes)
