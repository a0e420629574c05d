"""
`state.postgresql`: state in one PostgreSQL table, shared by every sidecar that names it.

* `store`: `PostgreSQLStore`, its metadata, and how each op becomes one statement.
"""

from statecar_sidecar.stores.postgresql.store import PostgreSQLStore

__all__ = ["PostgreSQLStore"]
