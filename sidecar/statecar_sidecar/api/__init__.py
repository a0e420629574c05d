"""
The sidecar's HTTP API, one concern per module.

- `routing`: the ASGI front door of the state API: the API token, the routes, error replies.
- `handlers`: the six state handlers and the one helper that times store calls.
- `asgi`: one request and its reply at the ASGI level.
- `bodies`: JSON request bodies decoded into `policy`'s items, values kept byte for byte.
- `rawjson`: the JSON walker `bodies` falls back to.
- `policy`: pure decisions (options, `enforce`, TTL, keys) that turn items into store operations.
- `errors`: Dapr's error codes and JSON bodies.
- `health`, `metadata`: the FastAPI routes off the fast path.
"""
