"""
Which backend package serves which Dapr component type, imported only when a component asks for it.

A sidecar whose components are all SQLite never imports a Redis or PostgreSQL driver; a
missing driver is reported with the pip extra that brings it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Final, Protocol

from statecar_sidecar.stores.base import StateStore
from statecar_sidecar.stores.errors import StoreError


class _Opener(Protocol):
    async def open(self, metadata: Mapping[str, str]) -> StateStore: ...


#: component type -> (module, class, pip extra)
BACKENDS: Final[Mapping[str, tuple[str, str, str]]] = {
    "state.in-memory": ("statecar_sidecar.stores.memory", "MemoryStore", "sidecar"),
    "state.sqlite": ("statecar_sidecar.stores.sqlite", "SQLiteStore", "sqlite"),
    "state.redis": ("statecar_sidecar.stores.redis", "RedisStore", "redis"),
    "state.postgresql": ("statecar_sidecar.stores.postgresql", "PostgreSQLStore", "postgresql"),
}


async def open_store(component_type: str, metadata: Mapping[str, str]) -> StateStore:
    try:
        module_name, class_name, extra = BACKENDS[component_type]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise StoreError(f"unknown component type {component_type!r}; use one of {known}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StoreError(
            f"{component_type} needs a driver that is not installed ({exc.name}): "
            f"pip install 'statecar[{extra}]'"
        ) from exc
    opener: _Opener = getattr(module, class_name)
    return await opener.open(metadata)
