"""
`state.sqlite` settings: what the SQLite store opens and how.

Names, aliases and defaults are daprd's (components-contrib
`common/authentication/sqlite/metadata.go`, `state/sqlite/sqlite_metadata.go`). Durations are
Go durations or whole seconds, as daprd's metadata decoder reads them.

`layout` picks the table layout: statecar's own, or daprd's (`state/sqlite`), so that a file
daprd wrote is served as it is. A Dapr `Component` gets daprd's layout unless it names one
(`components.parse_component` fills it in).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Final, Self
from urllib.parse import parse_qsl, urlencode

from statecar_contract.settings.schema import MetadataReader, Refused, Setting
from statecar_contract.settings.values import SettingValueError, parse_duration, parse_flag

__all__ = ["SQLiteSettings", "SQLiteTarget", "parse_sqlite_target"]

# daprd's ValidIdentifier; SQLite identifiers are quoted anyway, this keeps names portable.
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_PRAGMA_ITEM: Final = re.compile(r"([A-Za-z_]+)\((-?[A-Za-z0-9_.]+)\)")
# daprd refuses these too: each has its own setting, or statecar manages it.
_FORBIDDEN_PRAGMAS: Final = {
    "busy_timeout": "use the busyTimeout setting instead",
    "journal_mode": "use the disableWAL setting instead",
    "foreign_keys": "statecar manages it",
}

_seconds = partial(parse_duration, bare_unit=1.0)

#: statecar's own layout and daprd's `state.sqlite` one.
LAYOUTS: Final = ("statecar", "dapr")
#: daprd's default (components-contrib `state/sqlite/sqlite_metadata.go`).
DAPR_METADATA_TABLE: Final = "metadata"


def _layout(text: str) -> str:
    value = text.strip()
    if value not in LAYOUTS:
        raise SettingValueError(f"use one of {', '.join(LAYOUTS)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLiteTarget:
    """What `sqlite3.connect` opens, and how to name it in messages."""

    database: str
    uri: bool
    label: str
    in_memory: bool
    read_only: bool
    #: `_pragma=name(value)` items of a URI, applied after connecting.
    pragmas: tuple[tuple[str, str], ...]


def parse_sqlite_target(connection_string: str) -> SQLiteTarget:
    """A file path, `:memory:`, or a `file:` URI; a string with `?` is a URI, as in daprd."""
    text = connection_string.strip()
    if not text:
        raise SettingValueError("is empty; use a file path, ':memory:' or a file: URI")
    lowered = text.lower()
    in_memory = lowered.startswith((":memory:", "file::memory:")) or "mode=memory" in lowered
    if "?" not in text and not lowered.startswith("file:"):
        # A plain path is opened as a path: no URI decoding, so '%' or '#' in a name is literal.
        return SQLiteTarget(
            database=text, uri=False, label=text, in_memory=in_memory, read_only=False, pragmas=()
        )
    base, _, query = text.partition("?")
    if not lowered.startswith("file:"):
        base = "file:" + base  # as daprd does, so 'data.db?mode=ro' works
    kept: list[tuple[str, str]] = []
    pragmas: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "_pragma":
            match = _PRAGMA_ITEM.fullmatch(value.strip())
            if match is None:
                raise SettingValueError(f"has _pragma={value!r}: write _pragma=name(value)")
            pragma = match.group(1).lower()
            if pragma in _FORBIDDEN_PRAGMAS:
                raise SettingValueError(
                    f"must not set _pragma={pragma}: {_FORBIDDEN_PRAGMAS[pragma]}"
                )
            pragmas.append((pragma, match.group(2)))
        elif not name.startswith("_"):  # _txlock and other Go-driver options mean nothing here
            kept.append((name, value))
    params = dict(kept)
    read_only = params.get("mode") == "ro" or params.get("immutable") == "1"
    database = base + ("?" + urlencode(kept) if kept else "")
    label = base.removeprefix("file:") or ":memory:"
    return SQLiteTarget(
        database=database,
        uri=True,
        label=label,
        in_memory=in_memory,
        read_only=read_only,
        pragmas=tuple(pragmas),
    )


def _table_name(text: str) -> str:
    name = text.strip()
    if not _IDENTIFIER.fullmatch(name):
        raise SettingValueError("use letters, digits and '_' only")
    return name


def _at_least_one_second(text: str) -> float:
    seconds = _seconds(text)
    if seconds < 1:
        raise SettingValueError("must be at least 1s (as in daprd)")
    return seconds


def _not_negative(text: str) -> float:
    seconds = _seconds(text)
    if seconds < 0:
        raise SettingValueError("must not be negative; 0 means do not wait")
    return seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLiteSettings:
    """Everything `state.sqlite` reads from its metadata."""

    TYPE: ClassVar[str] = "state.sqlite"
    SUMMARY: ClassVar[str] = (
        "State in one SQLite file (or in memory), local to each sidecar: statecar's default store."
    )
    CONNECTION_STRING: ClassVar[Setting] = Setting(
        "connectionString",
        "file path or URI",
        "A file path, `:memory:`, or a `file:` URI (a string with `?` is read as a URI, as in"
        " daprd). URI items `_pragma=name(value)` are applied, except `busy_timeout`,"
        " `journal_mode` and `foreign_keys`; `_txlock` and other `_` items are ignored.",
        aliases=("url",),
        required=True,
    )
    TABLE_NAME: ClassVar[Setting] = Setting(
        "tableName",
        "identifier",
        "The table holding the state: letters, digits and `_`.",
        default="state",
    )
    LAYOUT: ClassVar[Setting] = Setting(
        "layout",
        "statecar or dapr",
        "The table layout. `statecar`: BLOB values, ETags that never repeat. `dapr`: daprd's"
        " `state.sqlite` table (TEXT values, base64 for binary ones, UUID ETags), read and"
        " written as daprd does, so statecar and daprd can share a file; docs/state-api.md"
        " lists what this layout cannot promise.",
        default="statecar; a Dapr `Component`: dapr",
    )
    METADATA_TABLE_NAME: ClassVar[Setting] = Setting(
        "metadataTableName",
        "identifier",
        "dapr layout only: daprd's table of schema versions and cleanup times.",
        default=DAPR_METADATA_TABLE,
    )
    TIMEOUT: ClassVar[Setting] = Setting(
        "timeout",
        "duration (bare number: seconds)",
        "The bound on every operation, at least 1s.",
        aliases=("timeoutInSeconds",),
        default="20s",
    )
    BUSY_TIMEOUT: ClassVar[Setting] = Setting(
        "busyTimeout",
        "duration (bare number: seconds)",
        "How long a write waits for another process's write lock before failing as unavailable.",
        default="2s",
    )
    DISABLE_WAL: ClassVar[Setting] = Setting(
        "disableWAL",
        "boolean",
        "Use a rollback journal instead of write-ahead logging, for network file systems that"
        " cannot share WAL's memory map.",
        default="false",
    )
    CLEANUP_INTERVAL: ClassVar[Setting] = Setting(
        "cleanupInterval",
        "duration (bare number: seconds)",
        "How often expired keys are deleted from the file; 0 (or negative) disables the sweep.",
        aliases=("cleanupIntervalInSeconds",),
        default="10m",
    )
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        CONNECTION_STRING,
        TABLE_NAME,
        LAYOUT,
        METADATA_TABLE_NAME,
        TIMEOUT,
        BUSY_TIMEOUT,
        DISABLE_WAL,
        CLEANUP_INTERVAL,
    )
    REFUSED: ClassVar[tuple[Refused, ...]] = ()

    target: SQLiteTarget
    table_name: str = "state"
    #: One of LAYOUTS.
    layout: str = "statecar"
    metadata_table_name: str = DAPR_METADATA_TABLE
    #: Seconds.
    timeout: float = 20.0
    busy_timeout: float = 2.0
    disable_wal: bool = False
    #: Seconds between sweeps; 0 means no sweep.
    cleanup_interval: float = 600.0

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
        read = MetadataReader(
            cls, metadata, component=component, source=source, deferred=deferred, redacted=redacted
        )
        layout = read.read(cls.LAYOUT, _layout, "statecar")
        if layout == "statecar" and read.present(cls.METADATA_TABLE_NAME):
            raise read.error(
                cls.METADATA_TABLE_NAME.name,
                "only daprd's layout (layout: dapr) has a metadata table; remove it",
            )
        return cls(
            target=read.read(cls.CONNECTION_STRING, parse_sqlite_target, _PLACEHOLDER_TARGET),
            table_name=read.read(cls.TABLE_NAME, _table_name, "state"),
            layout=layout,
            metadata_table_name=read.read(
                cls.METADATA_TABLE_NAME, _table_name, DAPR_METADATA_TABLE
            ),
            timeout=read.read(cls.TIMEOUT, _at_least_one_second, 20.0),
            busy_timeout=read.read(cls.BUSY_TIMEOUT, _not_negative, 2.0),
            disable_wal=read.read(cls.DISABLE_WAL, parse_flag, False),
            cleanup_interval=max(0.0, read.read(cls.CLEANUP_INTERVAL, _seconds, 600.0)),
        )


# Stands in for a connectionString that comes from a secret, while only the document is checked.
_PLACEHOLDER_TARGET: Final = SQLiteTarget(
    database=":memory:",
    uri=False,
    label="(from a secret)",
    in_memory=True,
    read_only=False,
    pragmas=(),
)
