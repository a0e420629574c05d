"""
The SQLite layout and the SQL text that runs on it.

Layout: `<table>(key TEXT PRIMARY KEY, value BLOB, etag INTEGER, expire_at REAL)`, the value
being the exact bytes the client sent and `expire_at` epoch seconds, plus `<table>_meta`, one
row holding the highest ETag ever issued in the file. daprd's own SQLite table has a different
layout (TEXT values, UUID ETags): this one refuses a table it did not create, and `layout: dapr`
serves daprd's instead (`dapr_store`).
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXPECTED_COLUMNS", "SCHEMA", "SQL", "render"]

EXPECTED_COLUMNS: Final = {"key": "TEXT", "value": "BLOB", "etag": "INTEGER", "expire_at": "REAL"}


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


# Statements, with {t} for the quoted table, {m} for its `_meta` table, {x} for the expiry index
# and {live} for "not expired" (the time is a parameter). Everything a request supplies is a
# bound parameter; only the table name (checked by SQLiteSettings, then quoted) is pasted in.
SQL: Final = {
    "current": "SELECT etag, expire_at FROM {t} WHERE key = ?",
    "get": "SELECT value, etag, expire_at FROM {t} WHERE key = ? AND {live}",
    "get_many": "SELECT key, value, etag, expire_at FROM {t} WHERE key IN ({{marks}}) AND {live}",
    "upsert": (
        "INSERT INTO {t} (key, value, etag, expire_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET"
        " value = excluded.value, etag = excluded.etag, expire_at = excluded.expire_at"
    ),
    "delete": "DELETE FROM {t} WHERE key = ?",
    "hwm": "SELECT value FROM {m} WHERE name = 'etag'",
    "set_hwm": "UPDATE {m} SET value = ? WHERE name = 'etag' AND value < ?",
    "sweep": "DELETE FROM {t} WHERE expire_at IS NOT NULL AND expire_at <= ?",
    # BINARY collation compares UTF-8 bytes, which is code point order, as Python compares str:
    # the primary key's order, so a key prefix is a range scan.
    "range": "SELECT key, value, etag FROM {t} WHERE key >= ? AND key < ? AND {live}",
    "from": "SELECT key, value, etag FROM {t} WHERE key >= ? AND {live}",
    "ping": "SELECT 1 FROM {t} LIMIT 1",
    "columns": "PRAGMA table_info({t})",
}
SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS {t} (key TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL,"
    " etag INTEGER NOT NULL, expire_at REAL)",
    # Partial index: the sweep finds expired rows without reading keys that never expire.
    "CREATE INDEX IF NOT EXISTS {x} ON {t} (expire_at) WHERE expire_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS {m} (name TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO {m} (name, value) VALUES ('etag', 0)",
)


def render(template: str, table: str) -> str:
    return template.format(
        t=_quote(table),
        m=_quote(table + "_meta"),
        x=_quote(table + "_expire_at"),
        live="(expire_at IS NULL OR expire_at > ?)",
    )
