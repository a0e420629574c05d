"""
Typed backend settings: one frozen settings class per state store type, shared by every program.

Each class (`InMemorySettings`, `SQLiteSettings`, `RedisSettings`, `PostgreSQLSettings`) holds
its backend's metadata names, Dapr's aliases, the defaults and the validation, and is built with
`from_metadata`; errors are `ComponentError`s naming `spec.metadata.<name>` and the fix. The
contract's allowed-names table (`components.BACKEND_METADATA`), component validation, and the
reference in `docs/components.md` (`python3 -m statecar_contract.settings.reference`) are all
derived from these classes. Shared value syntaxes live in `values` (durations, booleans, whole
numbers, `host:port`) and `libpq` (PostgreSQL connection strings).
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Final

from statecar_contract.errors import ComponentError
from statecar_contract.settings.schema import (
    COMMON_METADATA,
    COMMON_REFUSED,
    COMMON_SETTINGS,
    ENCRYPTION_SETTINGS,
    BackendSettings,
    Refused,
    Setting,
)
from statecar_contract.settings.values import (
    HostPort,
    SettingValueError,
    parse_duration,
    parse_flag,
    parse_host_list,
    parse_host_port,
    parse_integer,
)

if TYPE_CHECKING:
    from statecar_contract.settings.encryption import EncryptionKey, EncryptionSettings
    from statecar_contract.settings.libpq import PostgresDSN, parse_libpq
    from statecar_contract.settings.memory import InMemorySettings
    from statecar_contract.settings.postgresql import PostgreSQLSettings
    from statecar_contract.settings.redis import RedisSettings
    from statecar_contract.settings.sqlite import SQLiteSettings, SQLiteTarget, parse_sqlite_target

__all__ = [
    "BACKENDS",
    "COMMON_METADATA",
    "COMMON_REFUSED",
    "COMMON_SETTINGS",
    "ENCRYPTION_SETTINGS",
    "BackendSettings",
    "EncryptionKey",
    "EncryptionSettings",
    "HostPort",
    "InMemorySettings",
    "PostgreSQLSettings",
    "PostgresDSN",
    "RedisSettings",
    "Refused",
    "SQLiteSettings",
    "SQLiteTarget",
    "Setting",
    "SettingValueError",
    "parse_duration",
    "parse_flag",
    "parse_host_list",
    "parse_host_port",
    "parse_integer",
    "parse_libpq",
    "parse_sqlite_target",
    "read_settings",
]

#: Where each exported name not imported above lives (a submodule of this package). The backends'
#: modules and the encryption one are imported on first use, so a process reads only the settings
#: of the component types it has: a Redis sidecar's cold start loads neither the PostgreSQL nor the
#: SQLite class nor the libpq parser (tests/unit/test_sidecar_imports.py).
_LAZY: Final[Mapping[str, str]] = {
    "EncryptionKey": "encryption",
    "EncryptionSettings": "encryption",
    "InMemorySettings": "memory",
    "PostgreSQLSettings": "postgresql",
    "PostgresDSN": "libpq",
    "RedisSettings": "redis",
    "SQLiteSettings": "sqlite",
    "SQLiteTarget": "sqlite",
    "parse_libpq": "libpq",
    "parse_sqlite_target": "sqlite",
}

#: Every backend statecar serves, by Dapr component type, in the reference's order: the name of
#: its settings class (each class's `TYPE` is its key: tests/unit/test_contract_settings.py).
_BACKEND_CLASSES: Final[Mapping[str, str]] = {
    "state.in-memory": "InMemorySettings",
    "state.sqlite": "SQLiteSettings",
    "state.redis": "RedisSettings",
    "state.postgresql": "PostgreSQLSettings",
}


def __getattr__(name: str) -> object:
    """A name of `_LAZY`, from its module, imported when first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # The import statement's machinery (`__import__`), not importlib.import_module: only it is
    # seen by `python -X importtime`, which tests/unit/test_sidecar_imports.py reads.
    __import__(f"{__name__}.{module}")
    value = getattr(sys.modules[f"{__name__}.{module}"], name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


class _Backends(Mapping[str, "type[BackendSettings]"]):
    """Component type -> settings class, each class imported when its type is first looked up."""

    def __getitem__(self, component_type: str) -> type[BackendSettings]:
        backend = __getattr__(_BACKEND_CLASSES[component_type])
        assert isinstance(backend, type)
        return backend

    def __iter__(self) -> Iterator[str]:
        return iter(_BACKEND_CLASSES)

    def __len__(self) -> int:
        return len(_BACKEND_CLASSES)

    def __contains__(self, component_type: object) -> bool:
        return component_type in _BACKEND_CLASSES


#: Every backend statecar serves, by Dapr component type, in the reference's order.
BACKENDS: Final[Mapping[str, type[BackendSettings]]] = _Backends()


def read_settings(
    component_type: str,
    metadata: Mapping[str, str],
    *,
    component: str | None = None,
    source: str | None = None,
    deferred: Collection[str] = (),
    redacted: Collection[str] = (),
) -> BackendSettings:
    """The settings object of `component_type` read from `metadata` (see `from_metadata`)."""
    backend = BACKENDS.get(component_type)
    if backend is None:
        options = ", ".join(BACKENDS)
        raise ComponentError(
            "spec.type",
            f"'{component_type}' is not a state store statecar serves; use one of {options}",
            source=source,
        )
    return backend.from_metadata(
        metadata, component=component, source=source, deferred=deferred, redacted=redacted
    )
