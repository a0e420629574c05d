"""
`state.postgresql`: the store, one table on one PostgreSQL server shared by every sidecar that
names it.

This module owns how each request becomes statements (`statements`: the layout and the SQL),
runs them on the pool (`pool`), maps consistency onto `synchronous_commit`, and reports an
unreachable server. It reads daprd's component metadata (components-contrib `state/postgresql`)
through `statecar_contract.settings.PostgreSQLSettings` (names, aliases, defaults:
docs/components.md): `connectionString` (a libpq URL or key=value DSN, parsed by
`statecar_contract.settings.libpq` and handed to asyncpg as `to_url()` plus its server
settings), `tableName`, `timeoutInSeconds`, `maxConns`, `connectionMaxIdleTime` and
`cleanupInterval`.

Consistency: connections run with `synchronous_commit = local` (eventual: acknowledged once
flushed on the primary; never weaker, whatever the server's default). A strong write sets
`remote_apply` for its own transaction, so its commit also waits until the synchronous standbys
named by `synchronous_standby_names`, if any, have applied it
(https://www.postgresql.org/docs/current/runtime-config-wal.html#GUC-SYNCHRONOUS-COMMIT);
a standby that does not confirm in time fails the request with ConsistencyError. Reads always
go to the server of the connection string, the primary.

Failures: a server that refuses connections, drops them or does not answer within the timeout
raises StoreUnavailableError naming host:port (never the password), except for a write that was
already sent: it may have been applied, and raises OutcomeUnknownError. Dead connections are
replaced on next use, so the store recovers by itself when the server is back. A deadlock or
serialization failure is retried within the timeout, then raised as WriteConflictError (a
conflict, as an ETag mismatch).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from statecar_contract.settings import PostgreSQLSettings
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ConsistencyError,
    ETagMismatchError,
    OutcomeUnknownError,
    StoreError,
    StoreUnavailableError,
    TransactionError,
    WriteConflictError,
    read_settings,
)
from statecar_sidecar.stores.postgresql.pool import UNAVAILABLE, Pool
from statecar_sidecar.stores.postgresql.query_sql import compile_postgres
from statecar_sidecar.stores.postgresql.statements import (
    CHECK_FAILED,
    CLEANUP_BATCH,
    EXPECTED_COLUMNS,
    FUNCTION_DDL,
    STATEMENTS,
    SYNC_EVENTUAL,
    SYNC_STRONG,
    TABLE_DDL,
    Names,
    Refused,
    etag_number,
    refused_error,
    render,
    ttl_of,
    unstorable,
    write_args,
)
from statecar_sidecar.stores.query import (
    Query,
    QueryError,
    QueryPage,
    QueryResult,
    collector_paused,
    cut_page,
    run_query_async,
)
from statecar_sidecar.stores.sql_common import Sweeper, check_layout, prefix_successor

__all__ = ["PostgreSQLStore"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

# A request rolled back by a deadlock or serialization failure is tried again after a random
# pause of about _ROLLBACK_PAUSE x attempt (at most _ROLLBACK_PAUSE_MAX), while at least
# _ROLLBACK_MARGIN of the timeout remains for the next attempt.
_ROLLBACK_PAUSE: Final = 0.005
_ROLLBACK_PAUSE_MAX: Final = 0.1
_ROLLBACK_MARGIN: Final = 0.05
_MAX_PARAMETERS: Final = 32767  # bind parameters in one statement (the protocol's int16 count)
# What a write that was sent may have died of after the server applied it: no answer in time,
# or the connection gone (asyncpg's "connection was closed in the middle of operation").
_AMBIGUOUS: Final = (
    TimeoutError,
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
)


class PostgreSQLStore(StateStore):
    """One table on one PostgreSQL server."""

    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})

    def __init__(self, settings: PostgreSQLSettings) -> None:
        self._target = settings.connection
        self._url = settings.connection.to_url()
        self._names = Names.of(settings.table_name)
        self._timeout = settings.timeout
        self._pool = Pool(
            self._connect,
            max_size=settings.max_conns,
            idle_lifetime=settings.connection_max_idle_time,
            grace=settings.timeout,
        )
        self._closed = False
        self._sweeper = Sweeper(
            self._sweep,
            interval=settings.cleanup_interval,
            where=f"PostgreSQL {self._target.label}",
            log=_log,
        )
        self._sql_in_postgres = True  # False when the database is not UTF8: queries run here
        self._sql = {name: render(template, self._names) for name, template in STATEMENTS.items()}

    @classmethod
    async def open(cls, metadata: Mapping[str, str]) -> PostgreSQLStore:
        """Connect, create the table, sequence and function if missing, check the layout.

        `layout: dapr-v1` / `dapr-v2` open daprd's tables instead (`dapr_store`).
        """
        settings = read_settings(PostgreSQLSettings, metadata)
        store: PostgreSQLStore
        if settings.layout == "statecar":
            store = cls(settings)
        else:
            # Imported here: dapr_store subclasses this class, so it imports this module.
            from statecar_sidecar.stores.postgresql.dapr_store import (
                DaprPostgreSQLStore,
            )

            store = DaprPostgreSQLStore(settings)
        timeout = settings.timeout
        try:
            # Connecting, then a few DDL round trips (which may wait for another sidecar's).
            async with asyncio.timeout(timeout * 3), store._pool.connection() as conn:
                await store._prepare_schema(conn)
        except UNAVAILABLE as exc:
            await store.close()
            raise store._unavailable(exc) from exc
        except asyncpg.PostgresError as exc:
            await store.close()
            raise store._failed(exc) from exc
        except BaseException:
            await store.close()
            raise
        store._sweeper.start(name=f"statecar-postgresql-cleanup-{store._names.bare}")
        return store

    async def _connect(self) -> Any:
        settings = dict(self._target.server_settings)
        settings.setdefault("application_name", "statecar")
        # Eventual means "flushed on the primary": never weaker, even on a server running with
        # synchronous_commit=off; strong raises it per transaction.
        settings["synchronous_commit"] = SYNC_EVENTUAL
        return await asyncpg.connect(
            self._url,
            timeout=self._target.connect_timeout or self._timeout,
            command_timeout=self._timeout,
            server_settings=settings,
        )

    async def _prepare_schema(self, conn: Any) -> None:
        names = self._names
        async with conn.transaction():
            # Sidecars starting together would otherwise race on the catalogs (CREATE ... IF
            # NOT EXISTS is not safe against a concurrent CREATE of the same name).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", names.lock_key)
            encoding = str(await conn.fetchval("SHOW server_encoding")).upper()
            # compile_postgres needs UTF8 (its "C" collation then orders by code point).
            self._sql_in_postgres = encoding in ("UTF8", "UTF-8")
            # Create only what is missing: a role without CREATE can use tables made for it.
            if await conn.fetchval("SELECT to_regclass($1)", names.table) is None:
                for statement in TABLE_DDL:
                    await conn.execute(render(statement, names))
            await self._check_layout(conn)
            if await conn.fetchval("SELECT to_regclass($1)", names.sequence) is None:
                start = int(await conn.fetchval(self._sql["sequence_start"]))
                await conn.execute(
                    f"CREATE SEQUENCE IF NOT EXISTS {names.sequence} AS bigint"
                    f" START WITH {start} MINVALUE 1"
                )
            if await conn.fetchval("SELECT to_regprocedure($1)", self._sql["signature"]) is None:
                await conn.execute(render(FUNCTION_DDL, names))

    async def _check_layout(self, conn: Any) -> None:
        columns = {str(name): str(kind) for name, kind in await conn.fetch(self._sql["columns"])}
        check_layout(
            columns,
            EXPECTED_COLUMNS,
            table=self._names.table,
            location=f"at {self._target.label}",
            engine="PostgreSQL",
            layout="statecar",
        )

    # -----------------------------------------------------------------------------------------
    # Running statements.

    def _scrub(self, text: str) -> str:
        password = self._target.password
        return text.replace(password, "***") if password else text

    def _unavailable(self, exc: BaseException, *, strong_write: bool = False) -> StoreError:
        where = f"PostgreSQL at {self._target.label}"
        if isinstance(exc, TimeoutError):
            if strong_write:
                # remote_apply waits for the synchronous standbys; one that is down or lagging
                # looks exactly like this.
                return ConsistencyError(
                    f"{where} did not confirm the strong write within {self._timeout:g}s: the"
                    " synchronous standbys did not apply it in time (or the server is not"
                    " answering); it may be committed on the primary only"
                )
            return StoreUnavailableError(f"{where} did not answer within {self._timeout:g}s")
        if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
            return StoreUnavailableError(f"{where} is read-only (a standby?): {exc}")
        reason = self._scrub(str(exc)) or type(exc).__name__
        return StoreUnavailableError(f"{where} is unavailable: {reason}")

    def _failed(self, exc: BaseException) -> StoreError:
        return StoreError(f"PostgreSQL at {self._target.label}: {self._scrub(str(exc))}")

    async def _run(
        self,
        work: Callable[[Any], Awaitable[_T]],
        *,
        idempotent: bool = False,
        strong_write: bool = False,
        keys: Sequence[str] = (),
    ) -> _T:
        """`work(connection)` within the timeout; errors become StoreErrors.

        A read (`idempotent`) is retried once on a new connection when the pooled one turns
        out dead (after a server restart). A write is not: it may have been applied before
        the connection died, and running it again would be judged against its own result. So
        a write whose answer never came (timeout, connection lost) once it was sent raises
        OutcomeUnknownError; one that failed before it was sent (no connection) raises
        StoreUnavailableError.

        A deadlock or serialization failure rolled everything back, so it is retried, after a
        short random pause, for as long as the timeout allows; if it persists, it is a conflict
        (WriteConflictError, an ETag mismatch) naming `keys`, never "unavailable".
        """
        if self._closed:
            raise StoreUnavailableError(f"PostgreSQL store {self._target.label} is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout  # for all attempts
        attempt = 0
        while True:
            attempt += 1
            sent = False
            try:
                async with asyncio.timeout_at(deadline), self._pool.connection() as conn:
                    sent = True
                    return await work(conn)
            except Refused:
                raise
            except asyncpg.exceptions.TransactionRollbackError as exc:
                # Jitter, so that the requests that aborted each other do not meet again.
                jitter = random.uniform(0.5, 1.5)  # noqa: S311 -- not for security
                pause = min(_ROLLBACK_PAUSE * attempt, _ROLLBACK_PAUSE_MAX) * jitter
                if loop.time() + pause + _ROLLBACK_MARGIN >= deadline:
                    raise self._conflict(exc, keys, attempt) from exc
                await asyncio.sleep(pause)
            except asyncpg.exceptions.InterfaceError as exc:
                if sent and not conn.is_closed():
                    # Refused by asyncpg before anything was sent (too many parameters, a
                    # value it cannot encode): the request's fault, the connection is fine.
                    raise self._failed(exc) from exc
                self._pool.expire()
                if not idempotent or attempt > 1:
                    raise self._unavailable(exc) from exc
            except UNAVAILABLE as exc:
                self._pool.expire()
                if sent and not idempotent and isinstance(exc, _AMBIGUOUS):
                    raise self._outcome_unknown(exc, strong_write=strong_write) from exc
                if not idempotent or attempt > 1 or isinstance(exc, TimeoutError):
                    raise self._unavailable(exc, strong_write=strong_write) from exc
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) == CHECK_FAILED:
                    index, _, observed = str(getattr(exc, "detail", "") or "").partition(" ")
                    raise Refused(int(index) - 1, observed or None) from exc
                raise self._failed(exc) from exc

    def _outcome_unknown(self, exc: BaseException, *, strong_write: bool) -> StoreError:
        if strong_write and isinstance(exc, TimeoutError):
            return self._unavailable(exc, strong_write=True)  # ConsistencyError says it all
        where = f"PostgreSQL at {self._target.label}"
        if isinstance(exc, TimeoutError):
            detail = f"none within {self._timeout:g}s"
        else:
            detail = f"connection lost: {self._scrub(str(exc)) or type(exc).__name__}"
        return OutcomeUnknownError(where, detail)

    def _conflict(
        self, exc: asyncpg.exceptions.TransactionRollbackError, keys: Sequence[str], attempts: int
    ) -> WriteConflictError:
        named = ", ".join(repr(k) for k in list(dict.fromkeys(keys))[:5])
        more = "" if len(set(keys)) <= 5 else ", ..."
        return WriteConflictError(
            keys[0] if keys else "",
            f"keys {named}{more}: concurrent requests on the same keys kept aborting this one"
            f" ({self._scrub(str(exc))}, {attempts} attempts within {self._timeout:g}s);"
            " nothing was applied, retry it",
        )

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        async def work(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

        return await self._run(work, idempotent=True)

    # -----------------------------------------------------------------------------------------
    # Reads.

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        # Both modes read the server of the connection string, the primary.
        if unstorable(key):
            return None  # no such key can be stored
        rows = await self._fetch(self._sql["get"], key)
        if not rows:
            return None
        value, etag, expire_at = rows[0]
        return StoredItem(value=bytes(value), etag=str(etag), expire_at=expire_at)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        wanted = list(dict.fromkeys(key for key in keys if not unstorable(key)))
        if not wanted:
            return [None] * len(keys)
        rows = await self._fetch(self._sql["bulk_get"], wanted)
        found = {
            key: StoredItem(value=bytes(value), etag=str(etag), expire_at=expire_at)
            for key, value, etag, expire_at in rows
        }
        return [found.get(key) for key in keys]

    # -----------------------------------------------------------------------------------------
    # Writes.

    def _validate(self, op: Operation) -> None:
        """What is refused before touching the database."""
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        reason = unstorable(op.key)
        if reason:
            raise StoreError(f"PostgreSQL cannot store a key containing {reason}: {op.key!r}")

    async def _write_one(self, op: Operation) -> None:
        """One op, one statement: the ETag rule is its WHERE clause."""
        self._validate(op)
        mode = SYNC_STRONG if op.strong else SYNC_EVENTUAL
        given = etag_number(op.etag)
        args: tuple[object, ...]
        if isinstance(op, SetOp):
            if given is not None:
                kind, args = "save_if", (op.key, op.value, ttl_of(op), given, mode)
            else:
                kind, args = "save", (op.key, op.value, ttl_of(op), op.first_write, mode)
        elif given is not None:
            kind, args = "delete_if", (op.key, given, mode)
        elif op.first_write:
            kind, args = "observe", (op.key,)  # allowed only while the key is absent
        else:
            kind, args = "delete", (op.key, mode)
        sql = self._sql[kind]

        async def work(conn: Any) -> str | None:
            """None when done; else the live ETag ('' for absent) the op was refused against."""
            if kind == "delete":
                await conn.execute(sql, *args)
                return None
            row = await conn.fetchrow(sql, *args)
            if kind == "observe":
                return None if row is None else str(row[0])
            if row is not None:
                return None
            observed = await conn.fetchval(self._sql["observe"], op.key)
            return "" if observed is None else str(observed)

        outcome = await self._run(work, strong_write=op.strong, keys=(op.key,))
        if outcome is not None:
            raise refused_error(op, outcome or None)

    async def _write_many(self, ops: Sequence[Operation], *, atomic: bool) -> Any:
        """One call of the write function; returns its (r_ok, r_etag) row."""
        args = write_args(ops, atomic=atomic, strong=any(op.strong for op in ops))

        async def work(conn: Any) -> Any:
            return await conn.fetchrow(self._sql["write_many"], *args)

        return await self._run(
            work, strong_write=any(op.strong for op in ops), keys=[op.key for op in ops]
        )

    async def set(self, op: SetOp) -> None:
        await self._write_one(op)

    async def delete(self, op: DeleteOp) -> None:
        await self._write_one(op)

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        """Each item checked and written on its own, in order, all in one round trip."""
        if len(ops) <= 1:
            return await super().set_many(ops)
        results: list[Exception | None] = [None] * len(ops)
        sendable: list[int] = []
        for index, op in enumerate(ops):
            try:
                self._validate(op)
            except StoreError as exc:
                # Refused before the database; it writes nothing, so leaving it out does not
                # change what the items after it are judged against.
                results[index] = exc
            else:
                sendable.append(index)
        if sendable:
            row = await self._write_many([ops[i] for i in sendable], atomic=False)
            for index, ok, etag in zip(sendable, row[0], row[1], strict=True):
                if not ok:
                    results[index] = refused_error(ops[index], None if etag is None else str(etag))
        return results

    def _first_invalid(self, ops: Sequence[Operation]) -> tuple[int, StoreError] | None:
        """The first op refused before the database (an invalid ETag), with its error.

        Ops are judged in order: such an op fails the transaction only if every op before it
        passes, so the ops before it still run (as a dry run) to find an earlier refusal.
        """
        for index, op in enumerate(ops):
            try:
                self._validate(op)
            except StoreError as exc:
                return index, exc
        return None

    async def transact(self, ops: Sequence[Operation]) -> None:
        if not ops:
            return
        invalid = self._first_invalid(ops)
        try:
            if invalid is not None:
                if invalid[0] > 0:
                    await self._dry_run(ops[: invalid[0]])
            elif len(ops) == 1:
                await self._write_one(ops[0])
            else:
                await self._write_many(ops, atomic=True)
        except ETagMismatchError as exc:  # from the one-op path
            raise TransactionError(0, ops[0].key, exc) from exc
        except Refused as refused:
            op = ops[refused.index]
            mismatch = refused_error(op, refused.observed)
            raise TransactionError(refused.index, op.key, mismatch) from mismatch
        if invalid is not None:
            index, cause = invalid
            raise TransactionError(index, ops[index].key, cause) from cause

    async def _dry_run(self, ops: Sequence[Operation]) -> None:
        """Judge `ops` as a transaction and roll it back: raises Refused, or returns."""
        args = write_args(ops, atomic=True, strong=False)

        async def work(conn: Any) -> None:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.fetchrow(self._sql["write_many"], *args)
            finally:
                await transaction.rollback()

        await self._run(work, keys=[op.key for op in ops])

    # -----------------------------------------------------------------------------------------
    # Query.

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        upper = prefix_successor(key_prefix)
        cut = len(key_prefix)
        if self._sql_in_postgres:
            try:
                compiled = compile_postgres(
                    query, value_column="doc", key_column="key", first_param=3
                )
            except QueryError:
                compiled = None  # e.g. U+0000 in a filter string: evaluate it here instead
            if compiled is not None and compiled.next_param + 1 > _MAX_PARAMETERS:
                compiled = None  # more parameters than PostgreSQL binds: evaluate it here
            if compiled is not None:
                limit, offset = compiled.next_param, compiled.next_param + 1
                sql = "".join(
                    (
                        self._sql["query"],
                        compiled.where,
                        " ORDER BY ",
                        compiled.order_by,
                        f" LIMIT ${limit}::bigint OFFSET ${offset}::bigint",
                    )
                )
                try:
                    rows = await self._fetch(
                        sql, key_prefix, upper, *compiled.params, compiled.limit, compiled.offset
                    )
                except StoreError as exc:
                    # A stored value PostgreSQL cannot read as jsonb (not JSON, not UTF-8, a
                    # \u0000 escape) fails the whole statement, where run_query skips it.
                    if not isinstance(exc.__cause__, asyncpg.exceptions.DataError):
                        raise
                else:
                    results = [
                        QueryResult(key=key[cut:], data=bytes(value), etag=str(etag))
                        for key, value, etag in rows
                    ]
                    return cut_page(query.page, results)
        with collector_paused():  # reading every row would set off a full collection
            rows = await self._fetch(self._sql["rows"], key_prefix, upper)
            plain = ((key[cut:], bytes(value), str(etag)) for key, value, etag in rows)
            # Evaluated on the event loop in bounded slices (a thread would hold the GIL through
            # each sort), so other requests keep being served meanwhile.
            return await run_query_async(query, plain)

    # -----------------------------------------------------------------------------------------
    # TTL sweep (run by the Sweeper), health, shutdown.

    async def _sweep(self) -> int:
        async def work(conn: Any) -> int:
            status = await conn.execute(self._sql["sweep"])
            return int(str(status).rpartition(" ")[2] or 0)

        removed = 0
        while True:
            count = await self._run(work)
            removed += count
            if count < CLEANUP_BATCH:
                return removed

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._sweeper.stop()
        await self._pool.close(self._timeout)
