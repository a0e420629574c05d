"""
`state.postgresql`: state in one PostgreSQL table, shared by every sidecar that names it.

* `store`: `PostgreSQLStore`: its metadata, each request as statements, consistency, failures.
* `statements`: the table layout, the SQL and DDL text, what they bind and what a refusal means.
* `pool`: the connection pool, and which errors mean the server is gone.
* `query_sql`: Dapr queries compiled to PostgreSQL (the shared engine is `stores.query`).
"""

from statecar_sidecar.stores.postgresql.store import PostgreSQLStore

__all__ = ["PostgreSQLStore"]
