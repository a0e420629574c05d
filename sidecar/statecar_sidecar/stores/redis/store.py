"""
`state.redis`: Dapr's state semantics on Redis, with docs/state-api.md's single rule set.

Layout is daprd's (components-contrib `state/redis`): one HASH per key with `data` (the value
bytes) and `version` (the ETag, a decimal integer), so daprd and statecar read each other's data;
statecar adds `exp` (expiry, epoch ms, absent without one) and `exp-version` (the `version` its
write left), so a GET reports `ttlExpireTime` from the one `HMGET` it sends. When `exp-version`
is not the key's `version`, someone else wrote last: daprd (its script HINCRBYs `version` and
sets a TTL with a bare `EXPIRE`, components-contrib state/redis), or a statecar from before
`exp-version`. Only then does a GET read again, `HMGET` + `PTTL` pipelined, and report the key's
own TTL: a second round trip for those keys until statecar writes them, and none for the rest.

Round trips (bench S4): GET = 1 `HMGET`; save = 1 `EVALSHA`; bulk get of N = N `HMGET`s in one
pipelined write; a transaction of N = 1 `EVALSHA` of a script that checks every op against the
state the earlier ops leave, then applies all of them — atomic, unlike daprd's MULTI/EXEC, which
keeps the ops that passed when another failed. Strong consistency adds `WAIT` on a dedicated
connection and FAILS the request when not every connected replica confirmed (daprd ignores the
count WAIT returns).

On a Redis Cluster (`redisType: cluster`) every command goes through `cluster.ClusterClient` to
the primary owning the key's slot; bulk get is one pipeline per primary; a transaction runs on
its slot's primary and is refused (`CrossSlotError`, a 400) when its keys span slots;
`keyPrefixHashTag` stores `app||key` as `{app}||key` so an app's keys share one slot
(docs/state-api.md, "Redis Cluster").

Failures: a write that never reached Redis (no connection could be had) raises
StoreUnavailableError; one that was sent and then lost its reply (the primary stalled past
`readTimeout`, the connection dropped) raises OutcomeUnknownError, since Redis may have applied
it. Reads only ever raise StoreUnavailableError.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from statecar_contract.settings import RedisSettings
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ConsistencyError,
    ETagMismatchError,
    OutcomeUnknownError,
    RequestRefusedError,
    StoreError,
    StoreUnavailableError,
    TransactionError,
    read_settings,
)
from statecar_sidecar.stores.redis.client import Client, SentinelConfig, tls_context
from statecar_sidecar.stores.redis.resp import (
    Connection,
    RedisEndpoint,
    RedisReplyLostError,
    RedisUnavailableError,
    ReplyError,
    Script,
    frame,
)
from statecar_sidecar.stores.redis.router import Router, SingleNode
from statecar_sidecar.stores.redis.scripts import DELETE, SAVE, TRANSACT

if TYPE_CHECKING:
    from statecar_sidecar.stores.query import Query, QueryPage

STRONG_TIMEOUT_MS: Final = 1000  # daprd waits 1 s for replicas (components-contrib state/redis)
REPLICA_COUNT_TTL: Final = 1.0  # seconds a measured replica count is reused
QUERY_SCAN_COUNT: Final = 500  # keys per SCAN of a query, fetched with one pipeline each
MAX_STRONG_REDIRECTS: Final = 3  # a strong write follows this many cluster redirects
_SCRIPTS: Final = (SAVE, DELETE, TRANSACT)  # loaded together wherever one is missing


# What a read asks of a key's hash (the module docstring says why `exp-version`); a read that
# takes its expiry from elsewhere (the key's PTTL, or none for a query) needs the first two only.
_FIELDS: Final = (b"data", b"version", b"exp", b"exp-version")
_VALUE_FIELDS: Final = _FIELDS[:2]


class _AskTTL(enum.Enum):
    """`_item`'s answer when the key's own TTL must be read: statecar did not write it last."""

    ASK_TTL = enum.auto()


ASK_TTL: Final = _AskTTL.ASK_TTL


def _ttl_ms(op: SetOp) -> bytes:
    return b"%d" % (op.ttl * 1000) if op.ttl else b"0"


# The usual save's EVALSHA SAVE 1 <key> <etag> <first-write> <data> <ttl ms> as a RESP template:
# `set` fills in the five arguments with one format (bench S4a; `resp.frame` says why).
_SAVE_FRAME: Final = frame(b"EVALSHA", SAVE.sha1, b"1", rest=5)


class RedisStore(StateStore):
    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})

    def __init__(self, router: Router, description: str, *, hash_tag: bool = False) -> None:
        self._router = router
        self._description = description
        self._hash_tag: Callable[[str], str] | None = None
        if hash_tag:
            # Redis Cluster's rules are loaded only when used (stores/redis/router.py says why).
            from statecar_sidecar.stores.redis.slots import hash_tagged

            self._hash_tag = hash_tagged
        #: Connected replicas per primary (address -> (measured at, count)), for strong writes.
        self._replicas: dict[str, tuple[float, int]] = {}
        self._scripts_loaded = False

    @classmethod
    async def open(cls, metadata: Mapping[str, str]) -> RedisStore:
        settings = read_settings(RedisSettings, metadata)
        first = settings.address
        endpoint = RedisEndpoint(
            host=first.host,
            port=first.port,
            username=settings.username,
            password=settings.password,
            db=settings.db,
            tls=settings.enable_tls,
            tls_insecure=settings.insecure_skip_tls_verify,
            connect_timeout=settings.dial_timeout,
            command_timeout=settings.read_timeout,
        )
        context = tls_context(settings) if settings.enable_tls else None
        hash_tag = settings.key_prefix_hash_tag
        if settings.cluster:
            hosts = ",".join(h.address for h in settings.hosts)
            from statecar_sidecar.stores.redis.cluster import ClusterClient

            router: Router = ClusterClient(
                [(h.host, h.port) for h in settings.hosts], endpoint, ssl_context=context
            )
            return cls(router, f"redis cluster (seeds {hosts})", hash_tag=hash_tag)
        sentinel = None
        description = f"redis at {endpoint.address}"
        if settings.failover:
            master = settings.sentinel_master_name or ""  # required with failover
            sentinel = SentinelConfig(
                sentinels=[(h.host, h.port) for h in settings.hosts],
                master_name=master,
                username=settings.sentinel_username,
                password=settings.sentinel_password,
                tls=settings.enable_tls,
                tls_insecure=settings.insecure_skip_tls_verify,
            )
            hosts = ",".join(h.address for h in settings.hosts)
            description = f"redis master {master!r} via sentinel {hosts}"
        client = Client(endpoint, sentinel=sentinel, ssl_context=context)
        return cls(SingleNode(client), description, hash_tag=hash_tag)

    async def _load_scripts(self) -> None:
        # Loaded up front so the first save or transaction is one EVALSHA, not a NOSCRIPT retry.
        # On a cluster each primary has its own script cache: load on every one.
        for node in await self._router.primaries():
            replies = await node.pipeline([s.load_command() for s in (SAVE, DELETE, TRANSACT)])
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise StoreError(f"{self._description} refused SCRIPT LOAD: {reply.message}")

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        """The Redis key of a stored key: `{app}||key` with `keyPrefixHashTag`."""
        return key if self._hash_tag is None else self._hash_tag(key)

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"{self._description} is unavailable: {exc}")

    def _outcome_unknown(self, exc: RedisReplyLostError) -> OutcomeUnknownError:
        """A write's command was sent, then its reply lost: Redis may have applied it."""
        return OutcomeUnknownError(self._description, str(exc))

    @staticmethod
    def _item(reply: Sequence[Any]) -> StoredItem | _AskTTL | None:
        """The item an `HMGET` of `_FIELDS` read: None when the key holds none, `ASK_TTL` when
        statecar did not write its current version (so `exp` may not be its expiry)."""
        data, version, expire_ms, expire_version = reply
        if data is None or version is None:
            return None
        if expire_version != version:
            return ASK_TTL
        expire_at = int(expire_ms) / 1000 if expire_ms is not None else None
        return StoredItem(value=data, etag=version.decode(), expire_at=expire_at)

    @staticmethod
    def _item_with_pttl(reply: Sequence[Any], pttl: object) -> StoredItem | None:
        """The item an `HMGET` + `PTTL` read: the key's own TTL is its expiry, whoever set it."""
        data, version = reply
        if data is None or version is None:
            return None
        expire_at = time.time() + pttl / 1000 if isinstance(pttl, int) and pttl > 0 else None
        return StoredItem(value=data, etag=version.decode(), expire_at=expire_at)

    async def _read_with_pttl(self, keys: Sequence[str], rkeys: Sequence[str]) -> list[Any]:
        """Read `rkeys` again, each `HMGET` pipelined with its key's `PTTL`: one round trip."""
        commands = [c for k in rkeys for c in ((b"HMGET", k, *_VALUE_FIELDS), (b"PTTL", k))]
        try:
            replies = await self._router.pipeline([k for k in rkeys for _ in range(2)], commands)
        except RedisUnavailableError as exc:
            raise self._unavailable(exc) from exc
        items: list[StoredItem | None] = []
        for index, key in enumerate(keys):
            reply, pttl = replies[2 * index], replies[2 * index + 1]
            if isinstance(reply, ReplyError):
                raise StoreError(f"{self._description}: key {key!r}: {reply.message}")
            items.append(self._item_with_pttl(reply, pttl))
        return items

    async def _replica_count(self, node: Client) -> int:
        address = node.endpoint.address
        measured_at, count = self._replicas.get(address, (0.0, 0))
        if measured_at and time.monotonic() - measured_at < REPLICA_COUNT_TTL:
            return count
        try:
            info = await node.execute(b"INFO", b"replication")
        except RedisReplyLostError as exc:
            raise RedisUnavailableError(str(exc)) from None  # a read: no write was sent yet
        match = re.search(rb"connected_slaves:(\d+)", info)
        count = int(match.group(1)) if match else 0
        self._replicas[address] = (time.monotonic(), count)
        return count

    async def _run_strong(
        self,
        node: Client,
        conn: Connection,
        commands: list[tuple[Any, ...]],
        scripts: Sequence[Script],
    ) -> list[Any]:
        """Run `commands` then WAIT for every connected replica, on one dedicated connection."""
        replicas = await self._replica_count(node)
        if replicas == 0:
            return await conn.pipeline_with_scripts(commands, scripts)
        replies = await conn.pipeline_with_scripts(
            [*commands, (b"WAIT", replicas, STRONG_TIMEOUT_MS)], scripts
        )
        if any(_redirected(r) for r in replies[:-1]):
            return replies[:-1]  # nothing ran there: the caller follows the redirect
        confirmed = replies[-1]
        if isinstance(confirmed, int) and confirmed < replicas:
            raise ConsistencyError(
                f"strong write not confirmed: {confirmed} of {replicas} connected replicas "
                f"acknowledged within {STRONG_TIMEOUT_MS} ms. The primary has applied it; read "
                "the key back before retrying"
            )
        return replies[:-1]

    async def _strong(self, key: str, command: tuple[Any, ...], script: Script) -> Any:
        """One write plus WAIT on the primary owning `key` (following a cluster redirect)."""
        for _ in range(MAX_STRONG_REDIRECTS):
            node = await self._router.node(key)
            async with node.dedicated() as conn:
                # One write: on NOSCRIPT pipeline_with_scripts loads it and resends, which is safe.
                (reply,) = await self._run_strong(node, conn, [command], [script])
            if not _redirected(reply):
                return reply
            await self._router.refresh()
        return reply

    async def _eval(
        self, script: Script, keys: Sequence[Any], args: Sequence[Any], strong: bool
    ) -> Any:
        if not strong:
            command = script.command(keys, args)
            try:
                return await self._router.execute(keys[0], *command, scripts=_SCRIPTS)
            except (ReplyError, RedisUnavailableError) as exc:
                return await self._eval_again(exc, keys[0], command)
        try:
            reply = await self._strong(keys[0], script.command(keys, args), script)
            if isinstance(reply, ReplyError):
                raise reply
            return reply
        except (ReplyError, RedisUnavailableError) as exc:
            raise self._eval_error(exc) from exc

    async def _eval_again(
        self, exc: ReplyError | RedisUnavailableError, key: str, command: tuple[Any, ...]
    ) -> Any:
        """An EVALSHA (not strong) raised `exc`: on NOSCRIPT load our scripts and send it once
        more, else raise `exc` as the store error it is."""
        if not (isinstance(exc, ReplyError) and exc.code == "NOSCRIPT"):
            raise self._eval_error(exc) from exc
        # Redis lost its script cache (restart, failover): reload all of ours at once.
        # NOSCRIPT means the write did not run: a failure here is before sending it.
        try:
            await self._load_scripts()
        except RedisReplyLostError as lost:
            raise self._unavailable(RedisUnavailableError(str(lost))) from None
        except (ReplyError, RedisUnavailableError) as failed:
            raise self._eval_error(failed) from failed
        try:
            return await self._router.execute(key, *command)
        except (ReplyError, RedisUnavailableError) as failed:
            raise self._eval_error(failed) from failed

    def _eval_error(self, exc: ReplyError | RedisUnavailableError) -> StoreError:
        """What a script's failure is to the API: outcome unknown, unavailable, or refused."""
        if isinstance(exc, RedisReplyLostError):
            return self._outcome_unknown(exc)
        if isinstance(exc, RedisUnavailableError):
            return self._unavailable(exc)
        return StoreError(f"{self._description}: {exc.message}")

    # -- the interface ----------------------------------------------------------------------

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        # Every read goes to the primary, so `strong` needs nothing more here.
        rkey = self._key(key)
        try:
            reply = await self._router.execute(rkey, b"HMGET", rkey, *_FIELDS)
        except RedisUnavailableError as exc:
            raise self._unavailable(exc) from exc
        except ReplyError as exc:
            raise StoreError(f"{self._description}: key {key!r}: {exc.message}") from exc
        item = self._item(reply)
        if isinstance(item, _AskTTL):
            (item,) = await self._read_with_pttl((key,), (rkey,))
        return item

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        rkeys = [self._key(k) for k in keys]
        try:
            replies = await self._router.pipeline(rkeys, [(b"HMGET", k, *_FIELDS) for k in rkeys])
        except RedisUnavailableError as exc:
            raise self._unavailable(exc) from exc
        items: list[StoredItem | None] = []
        again: list[int] = []  # the keys whose own TTL must be read
        for index, (key, reply) in enumerate(zip(keys, replies, strict=True)):
            if isinstance(reply, ReplyError):
                raise StoreError(f"{self._description}: key {key!r}: {reply.message}")
            item = self._item(reply)
            if isinstance(item, _AskTTL):
                again.append(index)
                item = None
            items.append(item)
        if again:
            reread = await self._read_with_pttl([keys[i] for i in again], [rkeys[i] for i in again])
            for index, found in zip(again, reread, strict=True):
                items[index] = found
        return items

    async def set(self, op: SetOp) -> None:
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        rkey = self._key(op.key)
        etag, first_write, ttl = op.etag or "", b"1" if op.first_write else b"0", _ttl_ms(op)
        if op.strong:
            reply = await self._eval(SAVE, (rkey,), (etag, first_write, op.value, ttl), True)
        else:
            # `_eval`, inline: the hot write's EVALSHA is built once and awaited one coroutine
            # closer (bench/app_cpu.py --mode save).
            value, raw_key, raw_etag = op.value, rkey.encode(), etag.encode()
            packed = _SAVE_FRAME % (
                len(raw_key),
                raw_key,
                len(raw_etag),
                raw_etag,
                1,
                first_write,
                len(value),
                value,
                len(ttl),
                ttl,
            )
            command = (b"EVALSHA", SAVE.sha1, 1, rkey, etag, first_write, value, ttl)
            try:
                reply = await self._router.execute_packed(rkey, packed, command, _SCRIPTS)
            except (ReplyError, RedisUnavailableError) as exc:
                reply = await self._eval_again(exc, rkey, command)
        if reply != 1:  # refused: the reply is the current version, b"" for none
            etags.check_write(op.key, reply.decode() or None, op.etag, first_write=op.first_write)
            raise ETagMismatchError(
                op.key, f"key {op.key!r} changed concurrently"
            )  # pragma: no cover -- the script and check_write agree

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(ops)
        commands: list[tuple[Any, ...]] = []
        rkeys: list[str] = []
        positions: list[int] = []
        for index, op in enumerate(ops):
            if op.etag:
                try:
                    etags.validate_etag(op.key, op.etag)
                except StoreError as exc:
                    results[index] = exc
                    continue
            rkeys.append(self._key(op.key))
            commands.append(
                SAVE.command(
                    (rkeys[-1],),
                    (op.etag or "", "1" if op.first_write else "0", op.value, _ttl_ms(op)),
                )
            )
            positions.append(index)
        if not commands:
            return results
        strong = any(op.strong for op in ops)
        try:
            if strong and self._router.is_cluster:
                # Each key's write and WAIT on its own primary: one dedicated connection each.
                replies = list(
                    await asyncio.gather(
                        *(self._strong(k, c, SAVE) for k, c in zip(rkeys, commands, strict=True))
                    )
                )
            elif strong:
                node = await self._router.node(rkeys[0])
                async with node.dedicated() as conn:
                    try:
                        await conn.execute(*SAVE.load_command())
                    except RedisReplyLostError as exc:
                        raise RedisUnavailableError(str(exc)) from None  # no write sent yet
                    replies = await self._run_strong(node, conn, commands, [SAVE])
            else:
                replies = await self._router.pipeline(rkeys, commands, _SCRIPTS)
                if any(isinstance(r, ReplyError) and r.code == "NOSCRIPT" for r in replies):
                    # Re-send only the items that did not run: the others must not run twice.
                    try:
                        await self._load_scripts()
                    except RedisReplyLostError as exc:
                        raise RedisUnavailableError(str(exc)) from None  # no write sent yet
                    again = [
                        i
                        for i, r in enumerate(replies)
                        if isinstance(r, ReplyError) and r.code == "NOSCRIPT"
                    ]
                    retried = await self._router.pipeline(
                        [rkeys[i] for i in again], [commands[i] for i in again]
                    )
                    for i, reply in zip(again, retried, strict=True):
                        replies[i] = reply
        except RedisReplyLostError as exc:
            unknown = self._outcome_unknown(exc)
            return [r if r is not None else unknown for r in results]
        except RedisUnavailableError as exc:
            error = self._unavailable(exc)
            return [r if r is not None else error for r in results]
        except ConsistencyError as exc:
            return [r if r is not None else exc for r in results]
        for index, reply in zip(positions, replies, strict=True):
            op = ops[index]
            if isinstance(reply, ReplyError):
                results[index] = StoreError(f"{self._description}: key {op.key!r}: {reply.message}")
            elif reply != 1:  # refused: the reply is the current version, b"" for none
                try:
                    etags.check_write(
                        op.key, reply.decode() or None, op.etag, first_write=op.first_write
                    )
                except StoreError as exc:
                    results[index] = exc
        return results

    async def delete(self, op: DeleteOp) -> None:
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        reply = await self._eval(
            DELETE,
            (self._key(op.key),),
            (op.etag or "", "1" if op.first_write else "0"),
            op.strong,
        )
        if reply != 1:  # refused: the reply is the current version, b"" for none
            etags.check_delete(op.key, reply.decode() or None, op.etag, first_write=op.first_write)
            raise ETagMismatchError(
                op.key, f"key {op.key!r} changed concurrently"
            )  # pragma: no cover -- the script and check_delete agree

    async def transact(self, ops: Sequence[Operation]) -> None:
        if not ops:
            return  # nothing to check or apply (and no key to route by)
        keys: list[str] = []
        flags = bytearray()
        args: list[Any] = [b""]  # TRANSACT's layout: the flag letters, then what each op has
        for index, op in enumerate(ops):
            if op.etag:
                try:
                    etags.validate_etag(op.key, op.etag)
                except StoreError as exc:
                    raise TransactionError(index, op.key, exc) from exc
            keys.append(self._key(op.key))
            flag = 0
            if isinstance(op, SetOp):
                args.append(op.value)
            else:
                flag = 1
            if op.etag:
                flag += 2
                args.append(op.etag)
            if op.first_write:
                flag += 4
            if isinstance(op, SetOp) and op.ttl:
                flag += 8
                args.append(_ttl_ms(op))
            flags.append(65 + flag)  # "A" + flags
        args[0] = bytes(flags)
        if self._router.is_cluster:
            from statecar_sidecar.stores.redis.slots import slot_spread  # loaded with the cluster

            spread = slot_spread(keys)
            if len(spread) > 1:
                raise CrossSlotError(spread)
        reply = await self._eval(TRANSACT, keys, args, any(op.strong for op in ops))
        if reply != 1:  # refused: [failing op's 1-based index, its current version or b""]
            index = int(reply[0]) - 1
            op = ops[index]
            current = reply[1].decode() or None
            if current == "pending":
                current = "(written earlier in this transaction)"
            try:
                etags.check_write(op.key, current, op.etag, first_write=op.first_write)
            except StoreError as exc:
                raise TransactionError(index, op.key, exc) from exc
            raise TransactionError(
                index, op.key, ETagMismatchError(op.key, "refused")
            )  # pragma: no cover

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        # The engine is imported by the first query: ~15 ms a cold start need not pay.
        from statecar_sidecar.stores.query import QueryRun, collector_paused

        # Redis has no secondary index without RediSearch: scan this app's keys, one SCAN batch
        # at a time: fetch its values in one pipeline, then filter them in the engine's bounded
        # slices, so neither the replies nor the evaluation stall the event loop for long. On a
        # cluster every primary holds some of the keys: each is scanned in turn.
        prefix = self._key(key_prefix + "x")[:-1] if key_prefix else ""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        cut = len(prefix)
        run = QueryRun(query)
        seen: set[bytes] = set()  # SCAN may return a key more than once
        with collector_paused():
            try:
                for node in await self._router.primaries():
                    cursor = b"0"
                    while True:
                        cursor, batch = await node.execute(
                            b"SCAN", cursor, b"MATCH", pattern, b"COUNT", QUERY_SCAN_COUNT
                        )
                        fresh = [k for k in batch if k not in seen]
                        seen.update(fresh)
                        if fresh:
                            replies = await self._router.pipeline(
                                fresh, [(b"HMGET", k, *_VALUE_FIELDS) for k in fresh]
                            )
                            await run.feed_async(self._query_rows(fresh, replies, cut))
                        if cursor == b"0":
                            break
            except RedisUnavailableError as exc:
                raise self._unavailable(exc) from exc
            finally:
                await run.discard_async(seen)
            return await run.finish_async()

    def _query_rows(
        self, keys: Sequence[bytes], replies: Sequence[Any], cut: int
    ) -> Iterator[tuple[str, bytes, str]]:
        for key, reply in zip(keys, replies, strict=True):
            if isinstance(reply, ReplyError):
                continue  # not one of ours (another type under the same prefix)
            data, version = reply
            if data is None or version is None:
                continue
            try:
                name = key.decode()
            except UnicodeDecodeError:
                continue  # not a key the state API can write or name in a response
            yield name[cut:], data, version.decode()

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._ping_primaries(), self._router.endpoint.command_timeout)
            if not self._scripts_loaded:
                await self._load_scripts()
                self._scripts_loaded = True
        except (RedisUnavailableError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ReplyError as exc:
            raise StoreUnavailableError(f"{self._description} refused PING: {exc.message}") from exc

    async def _ping_primaries(self) -> None:
        if self._router.is_cluster:
            await self._router.refresh()  # health follows the topology: a failover shows here
        for node in await self._router.primaries():
            await node.ping()

    async def close(self) -> None:
        await self._router.close()


def _redirected(reply: object) -> bool:
    return isinstance(reply, ReplyError) and reply.code in ("MOVED", "ASK")


class CrossSlotError(RequestRefusedError):
    """A transaction over keys of several Redis Cluster slots: Redis cannot run it atomically."""

    def __init__(self, spread: Mapping[int, Sequence[str]]) -> None:
        self.spread = dict(spread)
        listed = "; ".join(
            f"slot {slot}: " + ", ".join(repr(k) for k in keys) for slot, keys in spread.items()
        )
        super().__init__(
            f"a transaction on a Redis Cluster must keep all its keys in one hash slot, and these"
            f" keys hash to {len(spread)} slots ({listed}); nothing was applied. Set the"
            " component's keyPrefixHashTag: true to keep each app's keys in one slot, or split"
            " the transaction by slot"
        )
