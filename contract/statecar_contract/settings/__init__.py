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

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Final

from statecar_contract.errors import ComponentError
from statecar_contract.settings.libpq import PostgresDSN, parse_libpq
from statecar_contract.settings.memory import InMemorySettings
from statecar_contract.settings.postgresql import PostgreSQLSettings
from statecar_contract.settings.redis import RedisSettings
from statecar_contract.settings.schema import (
    COMMON_METADATA,
    COMMON_REFUSED,
    COMMON_SETTINGS,
    ENCRYPTION_SETTINGS,
    BackendSettings,
    Refused,
    Setting,
)
from statecar_contract.settings.sqlite import SQLiteSettings, SQLiteTarget, parse_sqlite_target
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

#: Every backend statecar serves, by Dapr component type, in the reference's order.
BACKENDS: Final[Mapping[str, type[BackendSettings]]] = {
    cls.TYPE: cls for cls in (InMemorySettings, SQLiteSettings, RedisSettings, PostgreSQLSettings)
}


def __getattr__(name: str) -> object:
    """`EncryptionKey` and `EncryptionSettings`, imported on first use: a process whose components
    configure no keys never loads them (a sidecar's cold start; `components.encryption_settings`)."""
    if name in ("EncryptionKey", "EncryptionSettings"):
        from statecar_contract.settings import encryption

        return getattr(encryption, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
