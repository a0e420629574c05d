"""
`state.sqlite` on daprd's own table (`layout: dapr`): the same store as `store.SQLiteStore`
(writes on one worker thread in IMMEDIATE transactions, reads of a WAL file on the event loop,
durability), with
daprd's layout, so daprd and statecar share one file.

daprd's layout (components-contrib v1.18.0 `state/sqlite/sqlite_migrations.go`,
`sqlite_dbaccess.go`): `<tableName>(key TEXT PRIMARY KEY, value TEXT, is_binary BOOLEAN,
etag TEXT, expiration_time TIMESTAMP, update_time TIMESTAMP)`. A JSON value is stored as its
text (byte for byte: SQLite keeps text as given), any other value as base64 with
`is_binary = 1`, as daprd stores values that come over gRPC. The ETag is a random UUID drawn on
each write. Times are UTC text `YYYY-MM-DD HH:MM:SS` compared as text with CURRENT_TIMESTAMP;
statecar writes expiries with milliseconds (`... HH:MM:SS.mmm`), which still compare
correctly as text and which daprd's driver reads as times.

Schema: daprd's migration (level 1, key `migrations` of the metadata table `metadataTableName`,
default `metadata`) runs in an EXCLUSIVE transaction as daprd runs it, so daprd starts on a file
statecar created. A table that exists and is not daprd's is refused, unchanged. Expired rows are
swept in turns with daprd (`last-cleanup` in the metadata table, common/component/sql/cleanup.go).

What this layout cannot promise (docs/state-api.md, "daprd's table layouts"): ETags are random
UUIDs, so they have no order and a repeat is only as unlikely as a UUID collision.
"""

# ruff: noqa: S608 -- the SQL pastes only table names SQLiteSettings validated as identifiers;
# every value a request supplies is a bound parameter.

from __future__ import annotations

import base64
import binascii
import sqlite3
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import ClassVar, Final

from statecar_contract.settings import SQLiteSettings
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import Operation, SetOp, StoredItem
from statecar_sidecar.stores.errors import (
    ETagInvalidError,
    ETagMismatchError,
    StoreError,
    TransactionError,
)
from statecar_sidecar.stores.sql_common import json_text, prefix_successor
from statecar_sidecar.stores.sqlite.store import SQLiteStore

__all__ = ["DaprSQLiteStore"]

EXPECTED_COLUMNS: Final = {
    "key": "TEXT",
    "value": "TEXT",
    "is_binary": "BOOLEAN",
    "etag": "TEXT",
    "expiration_time": "TIMESTAMP",
}
_LEVEL: Final = 1  # daprd's migrations of the SQLite state store
_MIGRATIONS_KEY: Final = "migrations"
_LIVE: Final = "(expiration_time IS NULL OR expiration_time > ?)"
# The value as stored (TEXT, read as its bytes so no decoding can fail), then is_binary.
_VALUE: Final = "CAST(value AS BLOB), is_binary"


def _sql(table: str, meta: str) -> dict[str, str]:
    # daprd pastes both names unquoted; SQLiteSettings allows only letters, digits and '_'.
    t, m = table, meta
    return {
        "current": f"SELECT etag, expiration_time FROM {t} WHERE key = ?",
        "get": f"SELECT {_VALUE}, etag, expiration_time FROM {t} WHERE key = ? AND {_LIVE}",
        "get_many": (
            f"SELECT key, {_VALUE}, etag, expiration_time FROM {t}"
            f" WHERE key IN ({{marks}}) AND {_LIVE}"
        ),
        # As daprd's save: INSERT OR REPLACE, update_time from the clock of SQLite.
        "upsert": (
            f"INSERT OR REPLACE INTO {t} (key, value, is_binary, etag, update_time,"
            " expiration_time) VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP, ?)"
        ),
        "delete": f"DELETE FROM {t} WHERE key = ?",
        "range": f"SELECT key, {_VALUE}, etag FROM {t} WHERE key >= ? AND key < ? AND {_LIVE}",
        "from": f"SELECT key, {_VALUE}, etag FROM {t} WHERE key >= ? AND {_LIVE}",
        "sweep": (
            f"DELETE FROM {t} WHERE expiration_time IS NOT NULL"
            " AND expiration_time < CURRENT_TIMESTAMP"
        ),
        "claim": (
            f"INSERT INTO {m} (key, value) VALUES ('last-cleanup', CURRENT_TIMESTAMP)"
            " ON CONFLICT (key) DO UPDATE SET value = CURRENT_TIMESTAMP"
            " WHERE (unixepoch(CURRENT_TIMESTAMP) - unixepoch(value)) * 1000 > ?"
        ),
        "ping": f"SELECT 1 FROM {t} LIMIT 1",
        "columns": f"PRAGMA table_info({t})",
        "meta_exists": "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
        "meta_ddl": (
            f"CREATE TABLE IF NOT EXISTS {m} (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
        ),
        "get_level": f"SELECT value FROM {m} WHERE key = '{_MIGRATIONS_KEY}'",
        "set_level": f"REPLACE INTO {m} (key, value) VALUES ('{_MIGRATIONS_KEY}', ?)",
        "table_ddl": (
            f"CREATE TABLE IF NOT EXISTS {t} (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL,"
            " is_binary BOOLEAN NOT NULL, etag TEXT NOT NULL,"
            " expiration_time TIMESTAMP DEFAULT NULL,"
            " update_time TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        ),
    }


def _timestamp(epoch: float) -> str:
    """UTC text as SQLite's CURRENT_TIMESTAMP writes it, with milliseconds."""
    whole = int(epoch)
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
        + f".{int((epoch - whole) * 1000):03d}"
    )


def _epoch(text: object) -> float | None:
    """An expiration_time as epoch seconds (UTC unless it names its zone), None when unset."""
    if text is None:
        return None
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _decode(value: bytes, is_binary: object) -> bytes:
    if not is_binary:
        return bytes(value)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise StoreError(f"a binary value is not valid base64: {exc}") from exc


class DaprSQLiteStore(SQLiteStore):
    """daprd's `state.sqlite` table in one SQLite file."""

    _layout: ClassVar[str] = "dapr"
    _expected_columns: ClassVar[Mapping[str, str]] = EXPECTED_COLUMNS

    def __init__(self, settings: SQLiteSettings) -> None:
        super().__init__(settings)
        self._meta = settings.metadata_table_name
        self._cleanup_ms = max(0, int(self._sweeper.interval * 1000) - 100)
        self._sql = _sql(settings.table_name, settings.metadata_table_name)

    # -----------------------------------------------------------------------------------------
    # Schema: daprd's migration, in daprd's EXCLUSIVE transaction.

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        if self._target.read_only:
            self._check_layout(conn)
            return
        conn.execute("BEGIN EXCLUSIVE")
        try:
            if conn.execute(self._sql["columns"]).fetchall():
                self._check_layout(conn)  # before anything is changed
            if not conn.execute(self._sql["meta_exists"], (self._meta,)).fetchall():
                conn.execute(self._sql["meta_ddl"])
            row = conn.execute(self._sql["get_level"]).fetchone()
            try:
                level = 0 if row is None else int(row[0])
            except ValueError:
                level = -1
            if level < 0:
                raise StoreError(
                    f"{self._meta} in {self._target.label} records migration level {row!r},"
                    " which is not a number; daprd would refuse it too"
                )
            # A missing table is created whatever the level (as for PostgreSQL's v1).
            conn.execute(self._sql["table_ddl"])
            if level < _LEVEL:
                conn.execute(self._sql["set_level"], (str(_LEVEL),))
            self._check_layout(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    # -----------------------------------------------------------------------------------------
    # Reads.

    def _read(self, conn: sqlite3.Connection, keys: Sequence[str]) -> list[StoredItem | None]:
        now = _timestamp(time.time())
        if len(keys) == 1:
            row = conn.execute(self._sql["get"], (keys[0], now)).fetchone()
            if row is None:
                return [None]
            value, is_binary, etag, expiry = row
            return [StoredItem(_decode(value, is_binary), str(etag), _epoch(expiry))]
        found: dict[str, StoredItem] = {}
        unique = list(dict.fromkeys(keys))
        step = max(1, self._max_variables - 1)
        for start in range(0, len(unique), step):
            chunk = unique[start : start + step]
            sql = self._sql["get_many"].format(marks=", ".join("?" * len(chunk)))
            for key, value, is_binary, etag, expiry in conn.execute(sql, (*chunk, now)):
                found[key] = StoredItem(_decode(value, is_binary), str(etag), _epoch(expiry))
        return [found.get(key) for key in keys]

    def _query_rows(self, key_prefix: str) -> list[tuple[str, bytes, str]]:
        conn = self._connection()
        now = _timestamp(time.time())
        upper = prefix_successor(key_prefix)
        if upper is None:
            cursor = conn.execute(self._sql["from"], (key_prefix, now))
        else:
            cursor = conn.execute(self._sql["range"], (key_prefix, upper, now))
        cut = len(key_prefix)
        return [
            (key[cut:], _decode(value, is_binary), str(etag))
            for key, value, is_binary, etag in cursor
        ]

    # -----------------------------------------------------------------------------------------
    # Writes: the checks of `SQLiteStore._apply`, on daprd's columns.

    def _apply(
        self, conn: sqlite3.Connection, ops: Sequence[Operation], *, atomic: bool
    ) -> list[Exception | None]:
        now = time.time()
        now_text = _timestamp(now)
        written: set[str] = set()
        results: list[Exception | None] = []
        for index, op in enumerate(ops):
            try:
                given = etags.validate_uuid_etag(op.key, op.etag) if op.etag else None
                row = conn.execute(self._sql["current"], (op.key,)).fetchone()
                live = row is not None and (row[1] is None or str(row[1]) > now_text)
                current = str(row[0]) if live and row is not None else None
                if given and op.key in written:
                    raise ETagMismatchError(
                        op.key,
                        f"key {op.key!r} was written by an earlier operation of this transaction,"
                        f" so etag {op.etag} cannot match",
                    )
                if isinstance(op, SetOp):
                    etags.check_write(op.key, current, given, first_write=op.first_write)
                    text = json_text(op.value)
                    stored = text if text is not None else base64.b64encode(op.value).decode()
                    expiry = _timestamp(now + op.ttl) if op.ttl is not None and op.ttl > 0 else None
                    conn.execute(
                        self._sql["upsert"],
                        (op.key, stored, text is None, str(uuid.uuid4()), expiry),
                    )
                    if atomic:
                        written.add(op.key)
                else:
                    etags.check_delete(op.key, current, given, first_write=op.first_write)
                    if row is not None:
                        conn.execute(self._sql["delete"], (op.key,))
                    written.discard(op.key)
            except (ETagMismatchError, ETagInvalidError) as exc:
                if atomic:
                    raise TransactionError(index, op.key, exc) from exc
                results.append(exc)
            else:
                results.append(None)
        return results

    # -----------------------------------------------------------------------------------------
    # TTL sweep, in turns with daprd.

    def _sweep(self) -> int:
        conn = self._connection()
        if conn.execute(self._sql["claim"], (self._cleanup_ms,)).rowcount == 0:
            return 0  # another process swept within the interval
        return conn.execute(self._sql["sweep"]).rowcount
