"""
`state.postgresql`: state in one PostgreSQL table, shared by every sidecar that names it.

* `store`: `PostgreSQLStore`: its metadata, each request as statements, consistency, failures.
* `statements`: the table layout, the SQL and DDL text, what they bind and what a refusal means.
* `dapr_layout`, `dapr_store`: daprd's own v1 and v2 tables (`layout: dapr-v1` / `dapr-v2`).
* `pool`: the connection pool, and which errors mean the server is gone.
* `query_sql`: Dapr queries compiled to PostgreSQL (the shared engine is `stores.query`).
"""

from statecar_sidecar.stores.postgresql.store import PostgreSQLStore

__all__ = ["PostgreSQLStore"]
