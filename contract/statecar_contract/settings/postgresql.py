"""
`state.postgresql` settings: the server (a parsed libpq connection string), table, layout and
bounds.

Names, aliases and defaults follow daprd's (components-contrib `state/postgresql`,
`common/authentication/postgresql/metadata.go`, `common/component/postgresql/v1/metadata.go`,
`state/postgresql/v2/metadata.go`); durations are Go durations or whole seconds.

`layout` picks the table layout: statecar's own, or daprd's v1 or v2 one, so that a database
daprd wrote is served as it is (and daprd can go on using it). A Dapr `Component` gets daprd's
layout of its `spec.version` unless it names one (`components.parse_component` fills it in).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Final, Self

from statecar_contract.settings.libpq import PostgresDSN, parse_libpq
from statecar_contract.settings.schema import MetadataReader, Refused, Setting
from statecar_contract.settings.values import SettingValueError, parse_duration, parse_integer

__all__ = ["LAYOUTS", "PostgreSQLSettings"]

DEFAULT_MAX_CONNS: Final = 8
# Unquoted identifiers, optionally schema-qualified, short enough that the derived names
# (`<table>_statecar_write_v2`) stay within PostgreSQL's 63-byte limit.
_TABLE_NAME: Final = re.compile(
    r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,40})", re.ASCII
)

_seconds = partial(parse_duration, bare_unit=1.0)

#: statecar's own layout, daprd's `state.postgresql` v1 layout, and its v2 layout.
LAYOUTS: Final = ("statecar", "dapr-v1", "dapr-v2")
#: daprd's defaults (components-contrib `common/component/postgresql/v1/metadata.go`,
#: `state/postgresql/v2/metadata.go`): the v2 state table is `<tablePrefix>state`.
DAPR_METADATA_TABLE: Final = "dapr_metadata"
DAPR_V2_TABLE: Final = "state"


def _layout(text: str) -> str:
    value = text.strip()
    if value not in LAYOUTS:
        raise SettingValueError(f"use one of {', '.join(LAYOUTS)}")
    return value


def _table_prefix(text: str) -> str:
    prefix = text.strip()
    if prefix and not _TABLE_NAME.fullmatch(prefix + DAPR_V2_TABLE):
        raise SettingValueError(
            "use letters, digits and '_' (at most 36, not starting with a digit),"
            " optionally after 'schema.'"
        )
    return prefix


def _table_name(text: str) -> str:
    if not _TABLE_NAME.fullmatch(text.strip()):
        raise SettingValueError(
            "use letters, digits and '_' (at most 41, not starting with a digit),"
            " optionally after 'schema.'"
        )
    return text.strip()


def _positive(text: str) -> float:
    seconds = _seconds(text)
    if seconds <= 0:
        raise SettingValueError("must be positive")
    return seconds


def _not_negative(text: str) -> float:
    seconds = _seconds(text)
    if seconds < 0:
        raise SettingValueError("must not be negative")
    return seconds


_NO_CLOUD_AUTH: Final = (
    "statecar's state.postgresql authenticates with the connection string's password only;"
    " remove it and put the credentials in connectionString"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgreSQLSettings:
    """Everything `state.postgresql` (and the operator's reachability probe) reads."""

    TYPE: ClassVar[str] = "state.postgresql"
    SUMMARY: ClassVar[str] = "State in one PostgreSQL table, shared by every sidecar that names it."
    CONNECTION_STRING: ClassVar[Setting] = Setting(
        "connectionString",
        "libpq connection string",
        "A `postgresql://` URL or `key=value` pairs, as libpq reads them. `connect_timeout` and"
        " `pool_max_conns` are honoured, other pgx client options dropped; `options=-c"
        " name=value` and unknown keywords become server settings.",
        required=True,
        secret=True,
    )
    TABLE_NAME: ClassVar[Setting] = Setting(
        "tableName",
        "identifier",
        "The table holding the state, optionally `schema.table` (at most 41 characters).",
        default="state",
    )
    LAYOUT: ClassVar[Setting] = Setting(
        "layout",
        "statecar, dapr-v1 or dapr-v2",
        "The table layout. `statecar`: bytea values, ETags that never repeat, queries run in"
        " PostgreSQL. `dapr-v1` and `dapr-v2`: daprd's `state.postgresql` tables (v1: jsonb"
        " values and `xmin` ETags; v2: bytea values and UUID ETags), read and written as daprd"
        " does, so statecar and daprd can share a database; docs/state-api.md lists what these"
        " layouts cannot promise.",
        default="statecar; a Dapr `Component`: dapr-v1, or dapr-v2 with `spec.version: v2`",
    )
    METADATA_TABLE_NAME: ClassVar[Setting] = Setting(
        "metadataTableName",
        "identifier",
        "dapr-v1/dapr-v2 only: daprd's table of schema versions and cleanup times, optionally"
        " `schema.table`.",
        default=DAPR_METADATA_TABLE,
    )
    TABLE_PREFIX: ClassVar[Setting] = Setting(
        "tablePrefix",
        "identifier prefix",
        "dapr-v2 only (instead of tableName): the state table is `<tablePrefix>state`, as in"
        " daprd's v2 component.",
        default="",
    )
    TIMEOUT: ClassVar[Setting] = Setting(
        "timeoutInSeconds",
        "duration (bare number: seconds)",
        "The bound on every operation, waiting for a connection included.",
        aliases=("timeout",),
        default="5s",
    )
    MAX_CONNS: ClassVar[Setting] = Setting(
        "maxConns",
        "whole number",
        "The most connections the sidecar opens.",
        default="the connection string's pool_max_conns, else 8",
    )
    CONNECTION_MAX_IDLE_TIME: ClassVar[Setting] = Setting(
        "connectionMaxIdleTime",
        "duration (bare number: seconds)",
        "How long a spare connection stays open unused (one is always kept).",
        default="5m",
    )
    CLEANUP_INTERVAL: ClassVar[Setting] = Setting(
        "cleanupInterval",
        "duration (bare number: seconds)",
        "How often expired keys are deleted; 0 (or negative) disables the sweep.",
        aliases=("cleanupIntervalInSeconds",),
        default="10m",
    )
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        CONNECTION_STRING,
        TABLE_NAME,
        LAYOUT,
        METADATA_TABLE_NAME,
        TABLE_PREFIX,
        TIMEOUT,
        MAX_CONNS,
        CONNECTION_MAX_IDLE_TIME,
        CLEANUP_INTERVAL,
    )
    REFUSED: ClassVar[tuple[Refused, ...]] = (
        Refused("useAzureAD", _NO_CLOUD_AUTH),
        Refused("useAWSIAM", _NO_CLOUD_AUTH),
    )

    connection: PostgresDSN
    table_name: str = "state"
    #: One of LAYOUTS.
    layout: str = "statecar"
    #: daprd's metadata table (the dapr-v1 and dapr-v2 layouts).
    metadata_table_name: str = DAPR_METADATA_TABLE
    #: The dapr-v2 layout's table prefix (its migration level is recorded under it).
    table_prefix: str = ""
    #: Seconds.
    timeout: float = 5.0
    max_conns: int = DEFAULT_MAX_CONNS
    connection_max_idle_time: float = 300.0
    #: Seconds between sweeps; 0 means no sweep.
    cleanup_interval: float = 600.0

    @property
    def table_schema(self) -> str | None:
        return self.table_name.rpartition(".")[0] or None

    @property
    def table(self) -> str:
        """The table name without its schema."""
        return self.table_name.rpartition(".")[2]

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
        connection = read.read(cls.CONNECTION_STRING, parse_libpq, PostgresDSN())
        layout = read.read(cls.LAYOUT, _layout, "statecar")
        table_name = read.read(cls.TABLE_NAME, _table_name, "state")
        prefix = read.read(cls.TABLE_PREFIX, _table_prefix, "")
        if layout == "dapr-v2":
            if read.present(cls.TABLE_NAME):
                raise read.error(
                    cls.TABLE_NAME.name,
                    "daprd's v2 layout names its table `<tablePrefix>state`: use tablePrefix",
                )
            table_name = prefix + DAPR_V2_TABLE
        elif read.present(cls.TABLE_PREFIX):
            raise read.error(cls.TABLE_PREFIX.name, "only the dapr-v2 layout has it: use tableName")
        if layout == "statecar" and read.present(cls.METADATA_TABLE_NAME):
            raise read.error(
                cls.METADATA_TABLE_NAME.name,
                "only daprd's layouts (dapr-v1, dapr-v2) have a metadata table; remove it",
            )
        return cls(
            connection=connection,
            table_name=table_name,
            layout=layout,
            metadata_table_name=read.read(
                cls.METADATA_TABLE_NAME, _table_name, DAPR_METADATA_TABLE
            ),
            table_prefix=prefix,
            timeout=read.read(cls.TIMEOUT, _positive, 5.0),
            max_conns=read.read(
                cls.MAX_CONNS,
                partial(parse_integer, minimum=1, example="8"),
                connection.pool_max_conns or DEFAULT_MAX_CONNS,
            ),
            connection_max_idle_time=read.read(cls.CONNECTION_MAX_IDLE_TIME, _not_negative, 300.0),
            cleanup_interval=max(0.0, read.read(cls.CLEANUP_INTERVAL, _seconds, 600.0)),
        )
