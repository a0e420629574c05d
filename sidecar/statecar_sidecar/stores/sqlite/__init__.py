"""
`state.sqlite`: state in one SQLite file (or in memory), statecar's embedded default store.

* `store`: `SQLiteStore`: its metadata, its worker thread, and the atomic check-then-write.
* `statements`: the table layout and the SQL text.
* `target`: `connectionString` (a path, `:memory:` or a `file:` URI) read as daprd reads it.
"""

from statecar_sidecar.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
