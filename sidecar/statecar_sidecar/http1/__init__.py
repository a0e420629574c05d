"""
statecar's HTTP/1.1 server: the state API port and the ops port, on httptools and asyncio.

It replaces uvicorn (bench/README.md, "Issue 12"): a state call is read whole by the
connection (`connection`), handed to the state API as one `Request` and answered with one
write, with no ASGI scope, no per-message dicts and no per-request timers; every other request
(probes, metadata, FastAPI's routes) goes through a small ASGI bridge (`asgi_bridge`). The
listener (`listener`) owns the sockets, the connection cap and the graceful stop.
"""
