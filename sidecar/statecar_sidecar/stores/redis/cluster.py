"""
Redis Cluster's `router.Router`: `ClusterClient` sends each command to the primary that owns the
key's slot.

`ClusterClient` keeps a slot table (16384 entries, `slots`) read with `CLUSTER SLOTS` from any
known node or seed, and one `Client` per primary (its own multiplexed connection, reconnects and
dedicated pool). Routing follows the Redis Cluster specification ("Redirection and
resharding"): `MOVED` points the slot at the new owner, schedules a full refresh and resends;
`ASK` resends that one command after `ASKING` on the same connection; a command that could not
be sent (node down) refreshes the table and is resent until `command_timeout` runs out, which is
how a failover is followed. A command whose reply was lost is never resent (Redis may have run
it): the caller gets `RedisReplyLostError`. Reads and writes go to primaries only (no
`READONLY`), so a read always sees the acknowledged writes of the primary it asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Awaitable, Sequence
from typing import Any, Final

from statecar_sidecar.stores.redis import slots
from statecar_sidecar.stores.redis.client import Client
from statecar_sidecar.stores.redis.resp import (
    Arg,
    Command,
    RedisEndpoint,
    RedisReplyLostError,
    RedisUnavailableError,
    ReplyError,
    Script,
)

__all__ = ["ClusterClient"]

#: Redirections followed for one command before giving up (a slot migrating back and forth).
MAX_REDIRECTS: Final = 5
#: Pause between attempts while a node is unreachable or the cluster is down (failover).
RETRY_PAUSE: Final = 0.1
#: The least time between two full `CLUSTER SLOTS` refreshes (a burst of MOVED asks once).
MIN_REFRESH_INTERVAL: Final = 0.05
#: Errors meaning "not now, try again" (Redis Cluster spec): the command did not run.
_TRANSIENT: Final = frozenset({"TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN"})


class ClusterClient:
    """Redis Cluster routing over one `Client` per node; see the module docstring."""

    is_cluster = True

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        endpoint: RedisEndpoint,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`endpoint` carries the credentials, TLS and timeouts of every node; its host and
        port are replaced by each node's address."""
        self._seeds = [f"{host}:{port}" for host, port in seeds]
        self._endpoint = endpoint
        self._ssl_context = ssl_context
        self._nodes: dict[str, Client] = {}
        self._table: list[str | None] = [None] * slots.SLOT_COUNT
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = -1.0
        #: When each address last failed to answer CLUSTER SLOTS: those are asked last.
        self._failed_at: dict[str, float] = {}
        self._prefer: str | None = None
        self._closed = False
        #: Monotonic time of the last change of the slot table (tests measure failover with it).
        self.topology_changed_at = 0.0

    @property
    def endpoint(self) -> RedisEndpoint:
        return self._endpoint

    def owners(self) -> dict[int, str | None]:
        """A copy of the table as {slot: address} (for diagnostics and tests)."""
        return dict(enumerate(self._table))

    # ------------------------------------------------------------------------------ nodes

    def _client(self, address: str) -> Client:
        client = self._nodes.get(address)
        if client is None:
            host, _, port = address.rpartition(":")
            endpoint = dataclasses.replace(self._endpoint, host=host, port=int(port), db=0)
            client = self._nodes[address] = Client(endpoint, ssl_context=self._ssl_context)
        return client

    async def _owner(self, slot: int) -> str:
        address = self._table[slot]
        if address is None:
            await self.refresh()
            address = self._table[slot]
            if address is None:
                raise RedisUnavailableError(
                    f"no redis cluster node serves slot {slot} (the cluster reports it unassigned)"
                )
        return address

    async def node(self, key: Arg) -> Client:
        """The `Client` of the primary that owns `key`'s slot, as the table says now."""
        return self._client(await self._owner(slots.key_slot(_bytes(key))))

    async def primaries(self) -> list[Client]:
        if all(a is None for a in self._table):
            await self.refresh()
        return [self._client(a) for a in dict.fromkeys(a for a in self._table if a is not None)]

    # ---------------------------------------------------------------------------- topology

    async def refresh(self, *, force: bool = True) -> None:
        """Read the slot table again; concurrent callers share one `CLUSTER SLOTS`.

        Raises RedisUnavailableError when no known node or seed answers.
        """
        if self._closed:
            raise RedisUnavailableError("the redis client is closed")
        loop = asyncio.get_running_loop()
        task = self._refreshing
        if task is None:
            if not force and loop.time() - self._refreshed_at < MIN_REFRESH_INTERVAL:
                return
            task = self._refreshing = loop.create_task(self._load_table())
            task.add_done_callback(_consume)
        await asyncio.shield(task)

    def _refresh_soon(self) -> None:
        if self._closed or self._refreshing is not None:
            return
        task = asyncio.get_running_loop().create_task(self.refresh(force=False))
        task.add_done_callback(_consume)

    async def _load_table(self) -> None:
        try:
            # The primaries we know first (they are likely up), then the seeds; an address that
            # just failed goes last, so a dead primary does not delay every refresh of a failover.
            known = [a for a in dict.fromkeys(self._table) if a is not None]
            if self._prefer is not None:
                known.insert(0, self._prefer)
                self._prefer = None
            candidates = sorted(
                dict.fromkeys([*known, *self._seeds]), key=lambda a: self._failed_at.get(a, 0.0)
            )
            failures: list[str] = []
            for address in candidates:
                try:
                    reply = await self._client(address).execute(b"CLUSTER", b"SLOTS")
                except (RedisUnavailableError, ReplyError) as exc:
                    self._failed_at[address] = asyncio.get_running_loop().time()
                    failures.append(f"{address}: {exc}")
                    continue
                self._failed_at.pop(address, None)
                ranges = slots.parse_slots(reply, address.rpartition(":")[0])
                if not ranges:
                    failures.append(f"{address}: no slots assigned (cluster not formed yet)")
                    continue
                table: list[str | None] = [None] * slots.SLOT_COUNT
                for r in ranges:
                    table[r.first : r.last + 1] = [r.address] * (r.last - r.first + 1)
                if table != self._table:
                    self._table = table
                    self.topology_changed_at = asyncio.get_running_loop().time()
                return
            raise RedisUnavailableError(
                "no redis cluster node answered CLUSTER SLOTS: " + "; ".join(failures)
            )
        finally:
            self._refreshed_at = asyncio.get_running_loop().time()
            self._refreshing = None

    async def _load_scripts(self, address: str, scripts: Sequence[Script]) -> None:
        """SCRIPT LOAD on one node: a promoted replica or a new primary has an empty cache."""
        try:
            replies = await self._client(address).pipeline([s.load_command() for s in scripts])
        except RedisReplyLostError as exc:
            # The caller's EVALSHA got NOSCRIPT, so it did not run: nothing was applied.
            raise RedisUnavailableError(str(exc)) from None
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply

    def _moved(self, redirect: slots.Redirect) -> None:
        # The node a MOVED names knows it owns the slot: ask it first when re-reading the
        # table, rather than a node that may not have heard of the failover yet.
        self._prefer = redirect.address
        if self._table[redirect.slot] != redirect.address:
            self._table[redirect.slot] = redirect.address
            self.topology_changed_at = asyncio.get_running_loop().time()
        self._refresh_soon()  # a MOVED usually means many slots moved (failover, resharding)

    # ------------------------------------------------------------------------------ calls

    async def execute(self, key: Arg, *args: Arg, scripts: Sequence[Script] = ()) -> Any:
        """`args` on the primary owning `key`; MOVED/ASK followed, unsent commands resent,
        `scripts` loaded on a node that answers NOSCRIPT (once per node)."""
        slot = slots.key_slot(_bytes(key))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._endpoint.command_timeout
        ask: str | None = None
        redirects = 0
        loaded: set[str] = set()
        while True:
            address = ask or await self._owner(slot)
            try:
                if ask is not None:
                    # ASKING and the command on one connection, back to back: a pipeline is
                    # one write on the shared connection, nothing comes in between.
                    _, reply = await self._client(address).pipeline([(b"ASKING",), args])
                    if isinstance(reply, ReplyError):
                        raise reply
                    return reply
                return await self._client(address).execute(*args)
            except ReplyError as exc:
                if exc.code == "NOSCRIPT" and scripts and address not in loaded:
                    loaded.add(address)
                    await self._load_scripts(address, scripts)
                    continue
                redirect = slots.parse_redirect(exc.message, address.rpartition(":")[0])
                if redirect is not None and redirects < MAX_REDIRECTS:
                    redirects += 1
                    if redirect.moved:
                        self._moved(redirect)
                        ask = None
                    else:
                        ask = redirect.address
                    continue
                if exc.code in _TRANSIENT and loop.time() < deadline:
                    await self._pause_and_refresh()
                    ask = None
                    continue
                raise
            except RedisReplyLostError:
                self._refresh_soon()
                raise
            except RedisUnavailableError:
                # Never sent: safe to resend once the table points at a live primary.
                if loop.time() >= deadline:
                    raise
                await self._pause_and_refresh()
                ask = None

    async def _pause_and_refresh(self) -> None:
        await asyncio.sleep(RETRY_PAUSE)
        with contextlib.suppress(RedisUnavailableError):
            await self.refresh(force=False)

    def execute_packed(
        self, key: Arg, packed: bytes, args: tuple[Arg, ...], scripts: Sequence[Script] = ()
    ) -> Awaitable[Any]:
        # A redirect resends the command, with ASKING in front for ASK: built from `args`.
        return self.execute(key, *args, scripts=scripts)

    async def pipeline(
        self, keys: Sequence[Arg], commands: Sequence[Command], scripts: Sequence[Script] = ()
    ) -> list[Any]:
        """`commands[i]` on the owner of `keys[i]`: one pipeline per primary, run concurrently.

        Replies come back in the order of `commands`. Items redirected, not sent, or answered
        NOSCRIPT (then `scripts` are loaded on that node, once) are resent as `execute` would;
        a lost reply raises RedisReplyLostError (some items may have run).
        """
        loaded: set[str] = set()
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        key_slots = [slots.key_slot(_bytes(k)) for k in keys]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._endpoint.command_timeout
        rounds = 0
        while pending:
            rounds += 1
            if any(self._table[key_slots[i]] is None for i in pending):
                await self.refresh()
            groups: dict[str, list[int]] = {}
            for i in pending:
                groups.setdefault(await self._owner(key_slots[i]), []).append(i)
            addresses = list(groups)
            results = await asyncio.gather(
                *(self._client(a).pipeline([commands[i] for i in groups[a]]) for a in addresses),
                return_exceptions=True,
            )
            pending = []
            unsent: RedisUnavailableError | None = None
            pause = False
            for address, result in zip(addresses, results, strict=True):
                positions = groups[address]
                if isinstance(result, RedisReplyLostError):
                    self._refresh_soon()
                    raise result
                if isinstance(result, RedisUnavailableError):
                    unsent = result
                    pending += positions
                    continue
                if isinstance(result, BaseException):
                    raise result
                for i, reply in zip(positions, result, strict=True):
                    if not isinstance(reply, ReplyError):
                        replies[i] = reply
                        continue
                    if reply.code == "NOSCRIPT" and scripts and address not in loaded:
                        loaded.add(address)
                        await self._load_scripts(address, scripts)
                    if reply.code == "NOSCRIPT" and scripts and rounds <= MAX_REDIRECTS:
                        replies[i] = reply  # did not run: resent below, after the load
                        pending.append(i)
                        continue
                    redirect = slots.parse_redirect(reply.message, address.rpartition(":")[0])
                    if redirect is None:
                        replies[i] = reply
                        if reply.code in _TRANSIENT and loop.time() < deadline:
                            pending.append(i)
                            pause = True
                    elif redirect.moved and rounds <= MAX_REDIRECTS:
                        replies[i] = reply
                        self._moved(redirect)
                        pending.append(i)
                    elif redirect.moved:
                        replies[i] = reply
                    else:
                        # ASK (a slot mid-migration): this one command, with ASKING, once; a
                        # further redirect is reported as the reply it is.
                        asked = await self._client(redirect.address).pipeline(
                            [(b"ASKING",), commands[i]]
                        )
                        replies[i] = asked[1]
            if unsent is not None:
                if loop.time() >= deadline:
                    raise unsent
                pause = True
            if pending and pause:
                await self._pause_and_refresh()
        return replies

    # ---------------------------------------------------------------------------- lifecycle

    async def close(self) -> None:
        self._closed = True
        task = self._refreshing
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
        nodes = list(self._nodes.values())
        self._nodes.clear()
        for client in nodes:
            await client.close()


def _bytes(key: Arg) -> bytes:
    if isinstance(key, bytes):
        return key
    return str(key).encode()


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
