"""
Where each Redis command goes: the `Router` the store sends every command through, and
`SingleNode`, its one-server form (a standalone server or Sentinel's master: every key lives on
one `Client`).

A Redis Cluster's router, `cluster.ClusterClient`, lives apart with the slot rules it needs
(`slots`): the store imports it only for `redisType: cluster`, so a sidecar on one server does not
load them at start-up (bench/README.md, "Seventh pass").
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from statecar_sidecar.stores.redis.client import Client
from statecar_sidecar.stores.redis.resp import Arg, Command, RedisEndpoint, Script

__all__ = ["Router", "SingleNode"]


class Router(Protocol):
    """What the Redis store sends commands through; `key` picks the node in a cluster."""

    @property
    def endpoint(self) -> RedisEndpoint: ...

    @property
    def is_cluster(self) -> bool: ...

    def execute(self, key: Arg, *args: Arg, scripts: Sequence[Script] = ()) -> Awaitable[Any]:
        """`args` where `key` lives. A cluster loads `scripts` on a node that answers NOSCRIPT
        and resends there; a single server leaves NOSCRIPT to the caller."""
        ...

    def execute_packed(
        self, key: Arg, packed: bytes, args: tuple[Arg, ...], scripts: Sequence[Script] = ()
    ) -> Awaitable[Any]:
        """`execute(key, *args)`, sent as `packed` (the same command in RESP, `resp.frame`)
        where that is all it takes; a cluster, which may resend it elsewhere, sends `args`."""
        ...

    def pipeline(
        self, keys: Sequence[Arg], commands: Sequence[Command], scripts: Sequence[Script] = ()
    ) -> Awaitable[list[Any]]: ...

    async def node(self, key: Arg) -> Client: ...

    async def primaries(self) -> list[Client]: ...

    async def refresh(self) -> None: ...

    async def close(self) -> None: ...


class SingleNode:
    """One server (or Sentinel's master): every key lives there."""

    is_cluster = False

    def __init__(self, client: Client) -> None:
        self._client = client

    @property
    def endpoint(self) -> RedisEndpoint:
        return self._client.endpoint

    # Plain functions handing back the client's coroutine: no extra coroutine frame on the
    # single-server hot path (bench/README.md measures GET in microseconds).
    def execute(self, key: Arg, *args: Arg, scripts: Sequence[Script] = ()) -> Awaitable[Any]:
        return self._client.execute(*args)

    def execute_packed(
        self, key: Arg, packed: bytes, args: tuple[Arg, ...], scripts: Sequence[Script] = ()
    ) -> Awaitable[Any]:
        return self._client.execute_packed(packed)

    def pipeline(
        self, keys: Sequence[Arg], commands: Sequence[Command], scripts: Sequence[Script] = ()
    ) -> Awaitable[list[Any]]:
        return self._client.pipeline(commands)

    async def node(self, key: Arg) -> Client:
        return self._client

    async def primaries(self) -> list[Client]:
        return [self._client]

    async def refresh(self) -> None:
        """Nothing to re-read: Sentinel mode follows the master in `Client` itself."""

    async def close(self) -> None:
        await self._client.close()
