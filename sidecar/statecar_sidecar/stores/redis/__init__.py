"""
`state.redis`: Dapr's state semantics on Redis, in daprd's data layout.

* `store`: `RedisStore`, reading the component metadata and mapping ops onto the scripts.
* `scripts`: the Lua scripts that make each write one atomic `EVALSHA`.
* `client`: the connection management the store talks through (Sentinel, reconnects, `WAIT`).
* `resp`: the asyncio RESP2 wire protocol under it: `Connection`, `Script`, reply errors.
"""

from statecar_sidecar.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
