"""
`state.redis`: Dapr's state semantics on Redis, in daprd's data layout.

* `store`: `RedisStore`, reading the component metadata and mapping ops onto the scripts.
* `scripts`: the Lua scripts that make each write one atomic `EVALSHA`.
* `cluster`: where each command goes: one node (`SingleNode`) or a Redis Cluster's slot owner
  (`ClusterClient`: slot table, MOVED/ASK, failover).
* `slots`: Redis Cluster's pure rules: key slots (CRC16, hash tags), redirections, `CLUSTER SLOTS`.
* `client`: the connection management per node (Sentinel, reconnects, `WAIT`, TLS context).
* `resp`: the asyncio RESP2 wire protocol under it: `Connection`, `Script`, reply errors.
"""

from statecar_sidecar.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
