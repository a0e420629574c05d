"""
`state.sqlite`: state in one SQLite file (or in memory), statecar's embedded default store.

* `store`: `SQLiteStore`, its worker thread, and how the concurrency rule is made atomic.
"""

from statecar_sidecar.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
