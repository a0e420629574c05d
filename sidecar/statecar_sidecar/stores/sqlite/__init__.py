"""
`state.sqlite`: state in one SQLite file (or in memory), statecar's embedded default store.

* `store`: `SQLiteStore`: its metadata, its worker thread, and the atomic check-then-write.
* `statements`: the table layout and the SQL text.
* `dapr_store`: daprd's own table (`layout: dapr`), its SQL and its migration.
* `inline`: when a read may run on the event loop instead of the worker thread.
"""

from statecar_sidecar.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
