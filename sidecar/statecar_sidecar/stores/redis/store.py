"""
`state.redis`: Dapr's state semantics on Redis, with docs/state-api.md's single rule set.

Layout is daprd's (components-contrib `state/redis`): one HASH per key with `data` (the value
bytes) and `version` (the ETag, a decimal integer), so daprd and statecar read each other's data;
statecar adds `exp` (expiry, epoch ms) so a GET reports `ttlExpireTime` in the same round trip;
a key daprd gave a TTL (a bare `EXPIRE`, no `exp`) reports the key's `PTTL`, pipelined with the
read.

Round trips (bench S4): GET = 1 (`HMGET` + `PTTL`, pipelined); save = 1 `EVALSHA`; bulk get of
N = N `HMGET`s and `PTTL`s in one pipelined write; a transaction of N = 1 `EVALSHA` of a script that checks every op against the
state the earlier ops leave, then applies all of them — atomic, unlike daprd's MULTI/EXEC, which
keeps the ops that passed when another failed. Strong consistency adds `WAIT` on a dedicated
connection and FAILS the request when not every connected replica confirmed (daprd ignores the
count WAIT returns).

Failures: a write that never reached Redis (no connection could be had) raises
StoreUnavailableError; one that was sent and then lost its reply (the primary stalled past
`readTimeout`, the connection dropped) raises OutcomeUnknownError, since Redis may have applied
it. Reads only ever raise StoreUnavailableError.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from statecar_contract.settings import RedisSettings
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ConsistencyError,
    ETagMismatchError,
    OutcomeUnknownError,
    StoreError,
    StoreUnavailableError,
    TransactionError,
    read_settings,
)
from statecar_sidecar.stores.query import Query, QueryPage, QueryRun, collector_paused
from statecar_sidecar.stores.redis.client import Client, SentinelConfig
from statecar_sidecar.stores.redis.resp import (
    Connection,
    RedisEndpoint,
    RedisReplyLostError,
    RedisUnavailableError,
    ReplyError,
    Script,
)
from statecar_sidecar.stores.redis.scripts import DELETE, SAVE, TRANSACT

STRONG_TIMEOUT_MS: Final = 1000  # daprd waits 1 s for replicas (components-contrib state/redis)
REPLICA_COUNT_TTL: Final = 1.0  # seconds a measured replica count is reused
QUERY_SCAN_COUNT: Final = 500  # keys per SCAN of a query, fetched with one pipeline each


def _ttl_ms(op: SetOp) -> str:
    return str(op.ttl * 1000) if op.ttl else "0"


class RedisStore(StateStore):
    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})

    def __init__(self, client: Client, description: str) -> None:
        self._client = client
        self._description = description
        self._replicas: tuple[float, int] = (0.0, 0)
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
        return cls(Client(endpoint, sentinel=sentinel), description)

    async def _load_scripts(self) -> None:
        # Loaded up front so the first save or transaction is one EVALSHA, not a NOSCRIPT retry.
        replies = await self._client.pipeline([s.load_command() for s in (SAVE, DELETE, TRANSACT)])
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise StoreError(f"{self._description} refused SCRIPT LOAD: {reply.message}")

    # -- helpers ----------------------------------------------------------------------------

    def _unavailable(self, exc: Exception) -> StoreUnavailableError:
        return StoreUnavailableError(f"{self._description} is unavailable: {exc}")

    def _outcome_unknown(self, exc: RedisReplyLostError) -> OutcomeUnknownError:
        """A write's command was sent, then its reply lost: Redis may have applied it."""
        return OutcomeUnknownError(self._description, str(exc))

    @staticmethod
    def _read(key: str) -> list[tuple[bytes | str, ...]]:
        """A key's hash fields, and its remaining TTL: one round trip, pipelined."""
        return [(b"HMGET", key, b"data", b"version", b"exp"), (b"PTTL", key)]

    @staticmethod
    def _item(reply: Sequence[Any], pttl: object) -> StoredItem | None:
        data, version, expire_ms = reply
        if data is None or version is None:
            return None
        expire_at = int(expire_ms) / 1000 if expire_ms is not None else None
        if expire_at is None and isinstance(pttl, int) and pttl > 0:
            # daprd sets a TTL with a bare EXPIRE and no `exp` field (components-contrib
            # state/redis/redis.go Set): the key's own TTL is its expiry.
            expire_at = time.time() + pttl / 1000
        return StoredItem(value=data, etag=version.decode(), expire_at=expire_at)

    async def _replica_count(self) -> int:
        measured_at, count = self._replicas
        if time.monotonic() - measured_at < REPLICA_COUNT_TTL:
            return count
        try:
            info = await self._client.execute(b"INFO", b"replication")
        except RedisReplyLostError as exc:
            raise RedisUnavailableError(str(exc)) from None  # a read: no write was sent yet
        match = re.search(rb"connected_slaves:(\d+)", info)
        count = int(match.group(1)) if match else 0
        self._replicas = (time.monotonic(), count)
        return count

    async def _run_strong(
        self, conn: Connection, commands: list[tuple[Any, ...]], scripts: Sequence[Script]
    ) -> list[Any]:
        """Run `commands` then WAIT for every connected replica, on one dedicated connection."""
        replicas = await self._replica_count()
        if replicas == 0:
            return await conn.pipeline_with_scripts(commands, scripts)
        replies = await conn.pipeline_with_scripts(
            [*commands, (b"WAIT", replicas, STRONG_TIMEOUT_MS)], scripts
        )
        confirmed = replies[-1]
        if isinstance(confirmed, int) and confirmed < replicas:
            raise ConsistencyError(
                f"strong write not confirmed: {confirmed} of {replicas} connected replicas "
                f"acknowledged within {STRONG_TIMEOUT_MS} ms. The primary has applied it; read "
                "the key back before retrying"
            )
        return replies[:-1]

    async def _eval(
        self, script: Script, keys: Sequence[Any], args: Sequence[Any], strong: bool
    ) -> Any:
        try:
            if not strong:
                command = script.command(keys, args)
                try:
                    return await self._client.execute(*command)
                except ReplyError as exc:
                    if exc.code != "NOSCRIPT":
                        raise
                # Redis lost its script cache (restart, failover): reload all of ours at once.
                # NOSCRIPT means the write did not run: a failure here is before sending it.
                try:
                    await self._load_scripts()
                except RedisReplyLostError as exc:
                    raise RedisUnavailableError(str(exc)) from None
                return await self._client.execute(*command)
            async with self._client.dedicated() as conn:
                (reply,) = await self._run_strong(conn, [script.command(keys, args)], [script])
            if isinstance(reply, ReplyError):
                raise reply
            return reply
        except RedisReplyLostError as exc:
            raise self._outcome_unknown(exc) from exc
        except RedisUnavailableError as exc:
            raise self._unavailable(exc) from exc
        except ReplyError as exc:
            raise StoreError(f"{self._description}: {exc.message}") from exc

    # -- the interface ----------------------------------------------------------------------

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        # Every read goes to the primary, so `strong` needs nothing more here.
        try:
            reply, pttl = await self._client.pipeline(self._read(key))
        except RedisUnavailableError as exc:
            raise self._unavailable(exc) from exc
        if isinstance(reply, ReplyError):
            raise StoreError(f"{self._description}: key {key!r}: {reply.message}")
        return self._item(reply, pttl)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        try:
            replies = await self._client.pipeline([c for k in keys for c in self._read(k)])
        except RedisUnavailableError as exc:
            raise self._unavailable(exc) from exc
        items: list[StoredItem | None] = []
        for index, key in enumerate(keys):
            reply, pttl = replies[2 * index], replies[2 * index + 1]
            if isinstance(reply, ReplyError):
                raise StoreError(f"{self._description}: key {key!r}: {reply.message}")
            items.append(self._item(reply, pttl))
        return items

    async def set(self, op: SetOp) -> None:
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        reply = await self._eval(
            SAVE,
            (op.key,),
            (op.etag or "", "1" if op.first_write else "0", op.value, _ttl_ms(op)),
            op.strong,
        )
        if reply[0] != 1:
            etags.check_write(
                op.key, reply[1].decode() or None, op.etag, first_write=op.first_write
            )
            raise ETagMismatchError(
                op.key, f"key {op.key!r} changed concurrently"
            )  # pragma: no cover -- the script and check_write agree

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(ops)
        commands: list[tuple[Any, ...]] = []
        positions: list[int] = []
        for index, op in enumerate(ops):
            if op.etag:
                try:
                    etags.validate_etag(op.key, op.etag)
                except StoreError as exc:
                    results[index] = exc
                    continue
            commands.append(
                SAVE.command(
                    (op.key,),
                    (op.etag or "", "1" if op.first_write else "0", op.value, _ttl_ms(op)),
                )
            )
            positions.append(index)
        if not commands:
            return results
        strong = any(op.strong for op in ops)
        try:
            if strong:
                async with self._client.dedicated() as conn:
                    try:
                        await conn.execute(*SAVE.load_command())
                    except RedisReplyLostError as exc:
                        raise RedisUnavailableError(str(exc)) from None  # no write sent yet
                    replies = await self._run_strong(conn, commands, [SAVE])
            else:
                replies = await self._client.pipeline(commands)
                if any(isinstance(r, ReplyError) and r.code == "NOSCRIPT" for r in replies):
                    # Re-send only the items that did not run: the others must not run twice.
                    await self._client.execute(*SAVE.load_command())
                    again = [
                        i
                        for i, r in enumerate(replies)
                        if isinstance(r, ReplyError) and r.code == "NOSCRIPT"
                    ]
                    retried = await self._client.pipeline([commands[i] for i in again])
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
            elif reply[0] != 1:
                try:
                    etags.check_write(
                        op.key, reply[1].decode() or None, op.etag, first_write=op.first_write
                    )
                except StoreError as exc:
                    results[index] = exc
        return results

    async def delete(self, op: DeleteOp) -> None:
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        reply = await self._eval(
            DELETE, (op.key,), (op.etag or "", "1" if op.first_write else "0"), op.strong
        )
        if reply[0] != 1:
            etags.check_delete(
                op.key, reply[1].decode() or None, op.etag, first_write=op.first_write
            )
            raise ETagMismatchError(
                op.key, f"key {op.key!r} changed concurrently"
            )  # pragma: no cover -- the script and check_delete agree

    async def transact(self, ops: Sequence[Operation]) -> None:
        keys: list[str] = []
        args: list[Any] = []
        for index, op in enumerate(ops):
            if op.etag:
                try:
                    etags.validate_etag(op.key, op.etag)
                except StoreError as exc:
                    raise TransactionError(index, op.key, exc) from exc
            keys.append(op.key)
            if isinstance(op, SetOp):
                args += ["s", op.etag or "", "1" if op.first_write else "0", op.value, _ttl_ms(op)]
            else:
                args += ["d", op.etag or "", "1" if op.first_write else "0", "", "0"]
        reply = await self._eval(TRANSACT, keys, args, any(op.strong for op in ops))
        if reply[0] != 1:
            index = int(reply[1]) - 1
            op = ops[index]
            current = reply[2].decode() or None
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
        # Redis has no secondary index without RediSearch: scan this app's keys, one SCAN batch
        # at a time: fetch its values in one pipeline, then filter them in the engine's bounded
        # slices, so neither the replies nor the evaluation stall the event loop for long.
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", key_prefix) + "*"
        cut = len(key_prefix)
        run = QueryRun(query)
        seen: set[bytes] = set()  # SCAN may return a key more than once
        cursor = b"0"
        with collector_paused():
            try:
                while True:
                    cursor, batch = await self._client.execute(
                        b"SCAN", cursor, b"MATCH", pattern, b"COUNT", QUERY_SCAN_COUNT
                    )
                    fresh = [k for k in batch if k not in seen]
                    seen.update(fresh)
                    if fresh:
                        replies = await self._client.pipeline(
                            [(b"HMGET", k, b"data", b"version", b"exp") for k in fresh]
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
            item = self._item(reply, None)  # a query reports no TTL
            if item is None:
                continue
            try:
                name = key.decode()
            except UnicodeDecodeError:
                continue  # not a key the state API can write or name in a response
            yield name[cut:], item.value, item.etag

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self._client.ping(), self._client.endpoint.command_timeout)
            if not self._scripts_loaded:
                await self._load_scripts()
                self._scripts_loaded = True
        except (RedisUnavailableError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ReplyError as exc:
            raise StoreUnavailableError(f"{self._description} refused PING: {exc.message}") from exc

    async def close(self) -> None:
        await self._client.close()
