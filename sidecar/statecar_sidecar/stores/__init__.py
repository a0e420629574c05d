"""
State store backends behind one small async interface (`base.StateStore`).

One package per backend, named after the Dapr component type's suffix (`memory`, `sqlite`,
`redis`, `postgresql`), holding its store and whatever only it uses (SQL text, Lua scripts, a
pool, a wire client); `registry` imports a backend only when a component asks for it. Shared by
every backend: `base`, `errors`, `etags`, `metadata`, `query` (the query engine), and for the SQL
backends `sql_common`. Backends never import each other. Nothing here knows about HTTP.
"""
