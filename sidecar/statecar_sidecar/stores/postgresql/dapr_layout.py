"""
daprd's two `state.postgresql` table layouts (v1, v2) and the SQL statecar runs on them: text,
and the pure functions that turn statecar's values and ETags into what daprd stores.

Read from components-contrib v1.18.0, the version daprd v1.18.1 builds with:

* v1 (`state/postgresql/v1`, `common/component/postgresql/v1/postgresql.go`):
  `<tableName>(key text PRIMARY KEY, value jsonb, isbinary boolean, insertdate timestamptz,
  updatedate timestamptz, expiredate timestamptz, row_id bigint identity)`. A value that is
  not JSON (any value sent over gRPC) is stored as a jsonb string holding its base64 and
  `isbinary = true`. The ETag is the row's `xmin`, the id of the transaction that last wrote it
  (a 32-bit number; an ETag that is not one is invalid, HTTP 400, as in daprd).
* v2 (`state/postgresql/v2/postgresql.go`): `<tablePrefix>state(key text PRIMARY KEY, value
  bytea, etag uuid, created_at, updated_at, expires_at timestamptz, row_id bigint identity)`.
  The ETag is a random UUID drawn on every write; one that is not a UUID simply mismatches.
* Both: daprd's schema version lives in the metadata table (`metadataTableName`, default
  `dapr_metadata`: key `migrations` for v1, `migrations-state-v2-<tablePrefix>` for v2),
  migrations run while holding a row lock on its `lock` row
  (`common/component/sql/migrations/postgres`), and the expired-row cleanup claims its turn by
  updating `last-cleanup` (v1) / `last-cleanup-state-v2-<tablePrefix>` (v2) in the same table
  (`common/component/sql/cleanup.go`), so daprd and statecar sidecars sweep in turns.

Values, byte for byte: v2 stores the bytes as sent. v1 stores a JSON value as jsonb, which
PostgreSQL re-renders (key order, spaces): daprd itself returns that rendering. statecar keeps
its promise that a value reads back exactly as sent by storing a value as jsonb only when the
rendering IS the bytes sent (`{"a": 1}`, `"text"`, `12`); any other value (`{"a":1}`
compact, or not JSON at all) is stored as daprd stores gRPC values: base64 with `isbinary`.
daprd reads both back as the same bytes; only daprd's query API cannot look inside the
base64 ones.

Names are pasted unquoted, as daprd pastes them, so `MyTable` is the same folded `mytable` for
both programs; `PostgreSQLSettings` allows only letters, digits and `_` (and `schema.`).
"""

# ruff: noqa: S608 -- the SQL pastes only table names PostgreSQLSettings validated as identifiers;
# every value a request supplies is a bound parameter.

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Final

from statecar_sidecar.stores import etags
from statecar_sidecar.stores.errors import ETagInvalidError

__all__ = [
    "DaprLayout",
    "etag_given",
    "layout_of",
]

_UINT32_MAX: Final = 2**32 - 1


def base64_text(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def etag_given(version: str, key: str, etag: str) -> str:
    """The given ETag as the statements compare it (`etag::text = $n`), or ETagInvalidError.

    v1: an `xmin`, a 32-bit transaction id, never 0 (daprd: `strconv.ParseUint(etag, 10, 32)`,
    "invalid" otherwise). v2: a UUID, compared in its lower-case text form (daprd parses it with
    uuid.Parse; a non-UUID is a mismatch there, invalid here).
    """
    if version == "dapr-v1":
        etags.validate_etag(key, etag)
        if int(etag) > _UINT32_MAX:
            raise ETagInvalidError(key, etag)
        return etag
    return etags.validate_uuid_etag(key, etag)


@dataclass(frozen=True, slots=True)
class DaprLayout:
    """One of daprd's layouts, for one table: the SQL statecar runs on it.

    Parameters of the write statements: $1 key, $2 value (v1: the JSON candidate text or
    NULL; v2: bytea), $3 TTL seconds or NULL, $4 first-write (save) or given ETag (save_if),
    $5 base64 of the value (v1 only).
    """

    version: str
    table: str
    metadata_table: str
    migrations_key: str
    cleanup_key: str
    expected_columns: dict[str, str]
    sql: dict[str, str]
    migrations: tuple[tuple[str, ...], ...]


_LIVE_V1: Final = "(expiredate IS NULL OR expiredate > now())"
_LIVE_V2: Final = "(expires_at IS NULL OR expires_at > now())"
_PREFIX: Final = (
    '(key COLLATE "C" >= $1 AND ($2::text IS NULL OR key COLLATE "C" < $2)'
    " AND starts_with(key, $1))"
)
_EXPIRY: Final = "CASE WHEN $3::integer IS NULL THEN NULL ELSE now() + $3 * interval '1 second' END"
# v1: jsonb when jsonb renders the candidate back unchanged, else base64 in a jsonb string.
_JSON_OK: Final = "coalesce($2::text::jsonb::text = $2::text, false)"
_V1_VALUE: Final = f"CASE WHEN {_JSON_OK} THEN $2::text::jsonb ELSE to_jsonb($5::text) END"
_V1_BINARY: Final = f"NOT {_JSON_OK}"
_V1_BYTES: Final = (
    "CASE WHEN isbinary THEN decode(value #>> '{}', 'base64')"
    " ELSE convert_to(value::text, 'UTF8') END"
)


def _row_id_migration(table: str, order_column: str) -> tuple[str, ...]:
    """daprd's last migration of both layouts: a `row_id` identity column, backfilled in
    (insert time, key) order, unique-indexed (v1 migrations.go, v2 postgresql.go)."""
    bare = table.rpartition(".")[2]
    return (
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS row_id BIGINT",
        f"WITH ranked AS (SELECT key, ROW_NUMBER() OVER (ORDER BY {order_column} ASC, key ASC)"
        f" AS rn FROM {table} WHERE row_id IS NULL)"
        f" UPDATE {table} AS t SET row_id = r.rn FROM ranked r WHERE r.key = t.key",
        f"ALTER TABLE {table} ALTER COLUMN row_id SET NOT NULL",
        # Only when it is not one yet (daprd checks information_schema the same way).
        "DO $statecar$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid ="
        f" '{table}'::regclass AND attname = 'row_id' AND attidentity <> '') THEN"
        f" ALTER TABLE {table} ALTER COLUMN row_id ADD GENERATED BY DEFAULT AS IDENTITY;"
        " END IF; END $statecar$",
        f"SELECT setval(pg_get_serial_sequence('{table}', 'row_id'),"
        f" COALESCE((SELECT MAX(row_id) FROM {table}), 0) + 1, false)",
        f'CREATE UNIQUE INDEX IF NOT EXISTS "{bare}_row_id_uidx" ON {table} (row_id)',
    )


def _v1(table: str, metadata_table: str) -> DaprLayout:
    t = table
    live = _LIVE_V1
    return DaprLayout(
        version="dapr-v1",
        table=t,
        metadata_table=metadata_table,
        migrations_key="migrations",
        cleanup_key="last-cleanup",
        expected_columns={
            "key": "text",
            "value": "jsonb",
            "isbinary": "boolean",
            "expiredate": "timestamp with time zone",
        },
        sql={
            "get": (
                f"SELECT {_V1_BYTES}, xmin::text, extract(epoch FROM expiredate)::float8"
                f" FROM {t} WHERE key = $1 AND {live}"
            ),
            "bulk_get": (
                f"SELECT key, {_V1_BYTES}, xmin::text, extract(epoch FROM expiredate)::float8"
                f" FROM {t} WHERE key = ANY($1::text[]) AND {live}"
            ),
            "observe": f"SELECT xmin::text FROM {t} WHERE key = $1 AND {live}",
            "save_if": (
                f"UPDATE {t} SET value = {_V1_VALUE}, isbinary = {_V1_BINARY},"
                f" updatedate = now(), expiredate = {_EXPIRY}"
                f" WHERE key = $1 AND xmin::text = $4::text AND {live} RETURNING xmin::text"
            ),
            # As daprd: insertdate keeps its default on insert and is never rewritten.
            "save": (
                f"INSERT INTO {t} AS s (key, value, isbinary, expiredate)"
                f" SELECT $1, {_V1_VALUE}, {_V1_BINARY}, {_EXPIRY}"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " isbinary = excluded.isbinary, updatedate = now(),"
                " expiredate = excluded.expiredate"
                " WHERE NOT $4::boolean OR (s.expiredate IS NOT NULL AND s.expiredate <= now())"
                " RETURNING s.xmin::text"
            ),
            "delete_if": (
                f"DELETE FROM {t} WHERE key = $1 AND xmin::text = $2::text AND {live} RETURNING 0"
            ),
            "delete": f"DELETE FROM {t} WHERE key = $1",
            "rows": (
                f"SELECT key, {_V1_BYTES}, xmin::text FROM {t} WHERE {_PREFIX} AND {live}"
                " ORDER BY key"
            ),
            "sweep": f"DELETE FROM {t} WHERE expiredate IS NOT NULL AND expiredate < now()",
        },
        migrations=(
            (
                f"CREATE TABLE IF NOT EXISTS {t} (key text NOT NULL PRIMARY KEY,"
                " value jsonb NOT NULL, isbinary boolean NOT NULL,"
                " insertdate TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),"
                " updatedate TIMESTAMP WITH TIME ZONE NULL)",
            ),
            (f"ALTER TABLE {t} ADD expiredate TIMESTAMP WITH TIME ZONE",),
            _row_id_migration(t, "insertdate"),
        ),
    )


def _v2(table: str, metadata_table: str, prefix: str) -> DaprLayout:
    t = table
    live = _LIVE_V2
    return DaprLayout(
        version="dapr-v2",
        table=t,
        metadata_table=metadata_table,
        migrations_key=f"migrations-state-v2-{prefix}",
        cleanup_key=f"last-cleanup-state-v2-{prefix}",
        expected_columns={
            "key": "text",
            "value": "bytea",
            "etag": "uuid",
            "expires_at": "timestamp with time zone",
        },
        sql={
            "get": (
                "SELECT value, etag::text, extract(epoch FROM expires_at)::float8"
                f" FROM {t} WHERE key = $1 AND {live}"
            ),
            "bulk_get": (
                "SELECT key, value, etag::text, extract(epoch FROM expires_at)::float8"
                f" FROM {t} WHERE key = ANY($1::text[]) AND {live}"
            ),
            "observe": f"SELECT etag::text FROM {t} WHERE key = $1 AND {live}",
            "save_if": (
                f"UPDATE {t} SET value = $2::bytea, updated_at = now(), etag = gen_random_uuid(),"
                f" expires_at = {_EXPIRY}"
                f" WHERE key = $1 AND etag::text = $4::text AND {live}"
                " RETURNING etag::text"
            ),
            "save": (
                f"INSERT INTO {t} AS s (key, value, etag, expires_at)"
                f" SELECT $1, $2::bytea, gen_random_uuid(), {_EXPIRY}"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " updated_at = now(), etag = excluded.etag, expires_at = excluded.expires_at"
                " WHERE NOT $4::boolean OR (s.expires_at IS NOT NULL AND s.expires_at <= now())"
                " RETURNING s.etag::text"
            ),
            "delete_if": (
                f"DELETE FROM {t} WHERE key = $1 AND etag::text = $2::text AND {live} RETURNING 0"
            ),
            "delete": f"DELETE FROM {t} WHERE key = $1",
            "rows": (
                f"SELECT key, value, etag::text FROM {t} WHERE {_PREFIX} AND {live} ORDER BY key"
            ),
            "sweep": f"DELETE FROM {t} WHERE expires_at IS NOT NULL AND expires_at < now()",
        },
        migrations=(
            (
                f"CREATE TABLE IF NOT EXISTS {t} (key text NOT NULL PRIMARY KEY,"
                " value bytea NOT NULL, etag uuid NOT NULL DEFAULT gen_random_uuid(),"
                " created_at timestamp with time zone NOT NULL DEFAULT now(),"
                " updated_at timestamp with time zone, expires_at timestamp with time zone)",
                f"CREATE INDEX ON {t} (expires_at)",
            ),
            _row_id_migration(t, "created_at"),
        ),
    )


def layout_of(layout: str, *, table: str, metadata_table: str, prefix: str) -> DaprLayout:
    """The statements of `layout` (`dapr-v1` or `dapr-v2`) on the given tables."""
    if layout == "dapr-v1":
        return _v1(table, metadata_table)
    return _v2(table, metadata_table, prefix)


#: daprd's metadata table and its rows (common/component/sql/migrations/postgres).
METADATA_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {m} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
)
LOCK_ROW: Final = (
    "INSERT INTO {m} (key, value) VALUES ('lock', 'lock') ON CONFLICT (key) DO NOTHING"
)
TAKE_LOCK: Final = "SELECT value FROM {m} WHERE key = 'lock' FOR UPDATE"
GET_LEVEL: Final = "SELECT value FROM {m} WHERE key = $1"
SET_LEVEL: Final = (
    "INSERT INTO {m} (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2"
)
# The sweep's turn (common/component/sql/cleanup.go): claimed when the last one is older than
# the interval (less 100 ms, as daprd), atomically across daprd and statecar processes.
CLAIM_CLEANUP: Final = (
    "INSERT INTO {m} AS md (key, value) VALUES ($1, now()::text) ON CONFLICT (key)"
    " DO UPDATE SET value = now()::text"
    " WHERE (extract('epoch' FROM now() - md.value::timestamptz) * 1000)::bigint > $2"
)
# Locks on the keys of a multi-key write, in one order for every statecar sidecar.
LOCK_KEYS: Final = (
    "SELECT pg_advisory_xact_lock({lock_class}, h) FROM"
    " (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) AS hashes"
)
