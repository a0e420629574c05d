"""
`state.in-memory` settings: there are none; the store lives and dies with the sidecar.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from statecar_contract.settings.schema import MetadataReader, Refused, Setting

__all__ = ["InMemorySettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class InMemorySettings:
    """`state.in-memory` takes no backend settings; any name given is an error."""

    TYPE: ClassVar[str] = "state.in-memory"
    SUMMARY: ClassVar[str] = (
        "State in the sidecar's memory: lost when the sidecar stops, never shared between pods."
    )
    SETTINGS: ClassVar[tuple[Setting, ...]] = ()
    REFUSED: ClassVar[tuple[Refused, ...]] = ()

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, str],
        *,
        component: str | None = None,
        source: str | None = None,
        deferred: Collection[str] = (),
        redacted: Collection[str] = (),
    ) -> Self:
        MetadataReader(
            cls, metadata, component=component, source=source, deferred=deferred, redacted=redacted
        )
        return cls()
