"""
The reference denominators of the benchmark (bench/run.py); not part of statecar.

Raw ASGI apps, served by uvicorn with httptools + uvloop in one worker, as the sidecar is:

* ``floor``: the physical floor of a Dapr state GET on this machine. ``GET /v1.0/state/s/{key}``
  sends ONE ``HMGET <prefix><key> data version`` over ONE pipelined hiredis connection (a
  minimal ``asyncio.Protocol``: every call is written at once, replies are matched first in,
  first out) and answers the value with an ``ETag``; 204 when the key is absent. It reads the
  very hashes the sidecar writes (daprd's layout, ``<app-id>||<key>``), so both answer the same
  bytes. For information it also serves ``POST /v1.0/state/s`` with one item: one ``EVALSHA``
  of the sidecar's own save script (its SHA1 given by ``--save-sha``; loaded by the harness).
  No validation, no metrics, no routing beyond a prefix test: nothing a real sidecar could drop.
* ``sqlite-floor`` and ``postgres-floor`` (``--target`` the file or DSN, ``--table``): the same
  for SQL, GET only, reading statecar's own table with the raw driver (bench/run.py's B rows).
* ``hello``: a raw ASGI app answering a constant 5-byte body. S2's HTTP baseline (what the
  "added latency" of the sidecar is measured against, as Dapr's perf tests do against a noop).

    python bench/floor_app.py --app floor --port 8001 --redis-port 6379 [--key-prefix 'bench||']
    python bench/floor_app.py --app hello --port 8002

uvicorn's `proxy_headers` middleware is off (nothing to rewrite on loopback); the Date header
stays on, as in the sidecar. After start-up the GC is frozen and its gen-0 threshold raised exactly as the sidecar does
(server.py), so the comparison is between request paths, not GC settings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
from collections import deque
from functools import partial
from typing import Any, cast

import hiredis
import orjson
import uvicorn

STATE_PREFIX = "/v1.0/state/s/"
SAVE_PATH = "/v1.0/state/s"
_JSON = (b"content-type", b"application/json")


class FloorRedis(asyncio.Protocol):
    """One connection, implicit pipelining: write now, resolve futures in reply order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a TCP connection's: a Transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        gets = self.reader.gets
        pop = self.waiters.popleft
        reply = gets()
        while reply is not False:
            pop().set_result(reply)
            reply = gets()

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiters:
            self.waiters.popleft().set_exception(ConnectionError("redis connection lost"))

    def call(self, *args: Any) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        self.waiters.append(future)
        self.transport.write(hiredis.pack_command(args))  # type: ignore[union-attr]  # only called once connected
        return future


def make_floor(redis_host: str, redis_port: int, key_prefix: str, save_sha: str | None) -> Any:
    redis: FloorRedis | None = None
    prefix = key_prefix.encode()
    sha = save_sha.encode() if save_sha else None

    async def lifespan(receive: Any, send: Any) -> None:
        nonlocal redis
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                running = asyncio.get_running_loop()
                _, redis = await running.create_connection(
                    partial(FloorRedis, running), redis_host, redis_port
                )
                gc.collect()
                gc.freeze()
                gc.set_threshold(50_000, 50, 100)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path.startswith(STATE_PREFIX):
            data, version = await redis.call(  # type: ignore[union-attr]  # the lifespan connected it
                b"HMGET", prefix + path[14:].encode(), b"data", b"version"
            )
            if data is None:
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        _JSON,
                        (b"etag", version),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})
            return
        if method == "POST" and path == SAVE_PATH and sha is not None:
            body = b""
            more = True
            while more:
                message = await receive()
                body += message.get("body", b"")
                more = message.get("more_body", False)
            (item,) = orjson.loads(body)
            await redis.call(  # type: ignore[union-attr]  # the lifespan connected it
                b"EVALSHA",
                sha,
                1,
                prefix + item["key"].encode(),
                b"",
                b"0",
                orjson.dumps(item["value"]),
                b"0",
            )
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def make_sql_floor(kind: str, target: str, table: str, key_prefix: str) -> Any:
    """GET only, over statecar's own SQL layout (`<table>(key, value, etag, ...)`): the raw
    driver's cost, one SELECT by primary key. SQLite: the stdlib driver, called inline on the
    loop (a point read on a warm file takes microseconds). PostgreSQL: an asyncpg pool of 8,
    statecar's default `maxConns`. Expiry is not checked: the seeded rows never expire."""
    prefix = key_prefix
    pool: Any = None
    sqlite_db: Any = None
    select_pg = f'SELECT value, etag FROM "{table}" WHERE key = $1'
    select_lite = f'SELECT value, etag FROM "{table}" WHERE key = ?'

    async def startup() -> None:
        nonlocal pool, sqlite_db
        if kind == "postgres":
            import asyncpg

            pool = await asyncpg.create_pool(target, min_size=8, max_size=8)
        else:
            import sqlite3

            sqlite_db = sqlite3.connect(target, check_same_thread=False)
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if pool is not None:
                        await pool.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        key = prefix + path.rsplit("/", 1)[1]
        if scope["method"] == "GET" and path.startswith("/v1.0/state/"):
            if pool is not None:
                row = await pool.fetchrow(select_pg, key)
            else:
                row = sqlite_db.execute(select_lite, (key,)).fetchone()
            if row is None:
                await send({"type": "http.response.start", "status": 204, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            data = bytes(row[0])
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        _JSON,
                        (b"etag", str(row[1]).encode()),
                        (b"content-length", str(len(data)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                gc.collect()
                gc.freeze()
                gc.set_threshold(50_000, 50, 100)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--app", choices=("floor", "hello", "sqlite-floor", "postgres-floor"), required=True
    )
    parser.add_argument("--target", help="sqlite-floor: the file; postgres-floor: the DSN")
    parser.add_argument("--table", default="state", help="the SQL floors' table")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--key-prefix", default="bench||")
    parser.add_argument("--save-sha", default=None, help="SHA1 of the (loaded) save script")
    args = parser.parse_args()
    if args.app == "floor":
        app = make_floor(args.redis_host, args.redis_port, args.key_prefix, args.save_sha)
    elif args.app == "hello":
        app = hello
    else:
        app = make_sql_floor(args.app.split("-")[0], args.target, args.table, args.key_prefix)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=True,
        proxy_headers=False,  # loopback only: no X-Forwarded-* rewriting on the floor
    )


if __name__ == "__main__":
    main()
