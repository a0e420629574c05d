"""
`state.postgresql` on daprd's own tables (`layout: dapr-v1` / `dapr-v2`): the same store as
`store.PostgreSQLStore` (connections, timeouts, failures, consistency), with every statement
replaced by one on daprd's layout (`dapr_layout`), so daprd and statecar share one database.

Schema: at open, daprd's migrations are run as daprd runs them, under the row lock daprd takes
on the metadata table's `lock` row, and the migration level is recorded where daprd reads it;
so a database statecar created or migrated is one daprd starts on. A table that exists but is
not daprd's (statecar's own layout, say) is refused before anything is changed. A level higher
than statecar knows (a newer daprd) is left alone if the columns statecar uses are there.

Concurrency: the rule of `etags` is each statement's WHERE clause, as in statecar's layout;
several ops run in one transaction, after advisory locks on their keys in one order (so two
statecar sidecars never deadlock; a deadlock with daprd, which locks rows in request order,
is broken by PostgreSQL and retried here). Expired rows are swept in turns with daprd (the
`last-cleanup` row of the metadata table).

What these layouts cannot promise (docs/state-api.md, "daprd's table layouts"):
* ETags do not grow and may repeat. v1's ETag is `xmin`, a 32-bit transaction id: it wraps
  after about 4 billion transactions, every key written by one transaction shares one, and a
  key deleted and re-created may in principle get an ETag it had before. v2's is a random UUID:
  repeats are only as likely as a UUID collision, but ETags have no order.
* Queries run in statecar, over the rows of the app's keys (not compiled to SQL): the values
  v1 stores as base64 are only readable there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from statecar_contract.settings import PostgreSQLSettings
from statecar_sidecar.stores.base import DeleteOp, Operation, SetOp
from statecar_sidecar.stores.errors import StoreError, TransactionError
from statecar_sidecar.stores.postgresql.dapr_layout import (
    CLAIM_CLEANUP,
    GET_LEVEL,
    LOCK_KEYS,
    LOCK_ROW,
    METADATA_DDL,
    SET_LEVEL,
    TAKE_LOCK,
    base64_text,
    etag_given,
    layout_of,
)
from statecar_sidecar.stores.postgresql.statements import (
    SYNC_STRONG,
    WRITTEN,
    Names,
    Refused,
    refused_error,
    ttl_of,
    unstorable,
)
from statecar_sidecar.stores.postgresql.store import PostgreSQLStore
from statecar_sidecar.stores.sql_common import check_layout, json_text

__all__ = ["DaprPostgreSQLStore"]


class _Judged(Exception):
    """Rolls back a transaction that was only run to judge its ops."""


# daprd retries creating its metadata table 3 times on a concurrent creation (23505).
_CREATE_ATTEMPTS: Final = 3


class DaprPostgreSQLStore(PostgreSQLStore):
    """One of daprd's `state.postgresql` tables on one PostgreSQL server."""

    def __init__(self, settings: PostgreSQLSettings) -> None:
        super().__init__(settings)
        self._layout = layout_of(
            settings.layout,
            table=settings.table_name,
            metadata_table=settings.metadata_table_name,
            prefix=settings.table_prefix,
        )
        self._cleanup_ms = max(0, int(settings.cleanup_interval * 1000) - 100)
        self._sql_in_postgres = False  # queries run here: v1 values may be base64
        self._sql = dict(self._layout.sql)
        meta = settings.metadata_table_name
        self._meta_sql = {
            name: template.format(m=meta)
            for name, template in (
                ("ddl", METADATA_DDL),
                ("lock_row", LOCK_ROW),
                ("take_lock", TAKE_LOCK),
                ("get_level", GET_LEVEL),
                ("set_level", SET_LEVEL),
                ("claim", CLAIM_CLEANUP),
            )
        }
        self._lock_keys = LOCK_KEYS.format(lock_class=Names.of(settings.table_name).lock_class)

    # -----------------------------------------------------------------------------------------
    # Schema: daprd's migrations, under daprd's lock.

    async def _prepare_schema(self, conn: Any) -> None:
        layout = self._layout
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                await conn.execute(self._meta_sql["ddl"])
                break
            except asyncpg.exceptions.UniqueViolationError:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.05)
        await conn.execute(self._meta_sql["lock_row"])
        async with conn.transaction():
            await conn.execute(self._meta_sql["take_lock"])
            exists = await conn.fetchval("SELECT to_regclass($1)", layout.table) is not None
            if exists:
                await self._check_layout(conn, before_migrations=True)
            raw = await conn.fetchval(self._meta_sql["get_level"], layout.migrations_key)
            try:
                level = 0 if raw is None else int(raw)
            except ValueError:
                level = -1
            if level < 0:
                raise StoreError(
                    f"{layout.metadata_table} at {self._target.label} records migration level"
                    f" {raw!r} for {layout.migrations_key}, which is not a number; daprd would"
                    " refuse it too"
                )
            # v1 records its level under one key whatever the table: a second v1 table in the
            # same database finds the level already set (daprd would then use a table it never
            # created). A missing table is created from migration 0, the level never lowered.
            start = level if exists else 0
            for number in range(start, len(layout.migrations)):
                for statement in layout.migrations[number]:
                    await conn.execute(statement)
                if number + 1 > level:
                    await conn.execute(
                        self._meta_sql["set_level"], layout.migrations_key, str(number + 1)
                    )
            await self._check_layout(conn, before_migrations=False)

    async def _check_layout(self, conn: Any, *, before_migrations: bool = False) -> None:
        rows = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
            self._layout.table,
        )
        columns = {str(name): str(kind) for name, kind in rows}
        expected = self._layout.expected_columns
        if before_migrations:
            # Before daprd's migrations ran, v1 tables may lack expiredate (migration 1).
            expected = {k: v for k, v in expected.items() if k != "expiredate"}
        check_layout(
            columns,
            expected,
            table=self._layout.table,
            location=f"at {self._target.label}",
            engine="PostgreSQL",
            layout=self._layout.version,
        )

    # -----------------------------------------------------------------------------------------
    # Writes.

    def _validate(self, op: Operation) -> None:
        if op.etag:
            etag_given(self._layout.version, op.key, op.etag)
        reason = unstorable(op.key)
        if reason:
            raise StoreError(f"PostgreSQL cannot store a key containing {reason}: {op.key!r}")

    def _args(self, op: Operation) -> tuple[str, tuple[object, ...]]:
        """The statement for `op` and its arguments (see `dapr_layout.DaprLayout`)."""
        version = self._layout.version
        given = etag_given(version, op.key, op.etag) if op.etag else None
        if isinstance(op, SetOp):
            if version == "dapr-v1":
                value: tuple[object, ...] = (json_text(op.value, for_jsonb=True),)
                tail: tuple[object, ...] = (base64_text(op.value),)
            else:
                value, tail = (op.value,), ()
            if given is not None:
                return "save_if", (op.key, *value, ttl_of(op), given, *tail)
            return "save", (op.key, *value, ttl_of(op), op.first_write, *tail)
        if given is not None:
            return "delete_if", (op.key, given)
        if op.first_write:
            return "observe", (op.key,)
        return "delete", (op.key,)

    async def _apply(self, conn: Any, op: Operation) -> str | None:
        """Run `op`: None when done, else the live ETag ('' for absent) it was refused against."""
        kind, args = self._args(op)
        sql = self._sql[kind]
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

    async def _write(
        self, ops: Sequence[Operation], *, atomic: bool, commit: bool = True
    ) -> list[Exception | None]:
        """Check and apply `ops` in order; `atomic`: the first refusal raises Refused and the
        transaction rolls back. Otherwise each op's refusal is its result. `commit=False`
        judges the ops as a transaction and rolls it back."""
        strong = any(op.strong for op in ops)

        async def work(conn: Any) -> list[Exception | None]:
            if len(ops) == 1 and not strong and commit:
                refused = await self._apply(conn, ops[0])
                if refused is None:
                    return [None]
                if atomic:
                    raise Refused(0, refused or None)
                return [refused_error(ops[0], refused or None)]
            results: list[Exception | None] = []
            try:
                async with conn.transaction():
                    if strong and commit:
                        await conn.execute(f"SET LOCAL synchronous_commit = {SYNC_STRONG}")
                    if len(ops) > 1:
                        await conn.execute(self._lock_keys, [op.key for op in ops])
                    written: set[str] = set()
                    for index, op in enumerate(ops):
                        if atomic and op.etag and op.key in written:
                            raise Refused(index, WRITTEN)
                        refused = await self._apply(conn, op)
                        if refused is None:
                            results.append(None)
                            if isinstance(op, DeleteOp):
                                written.discard(op.key)
                            elif atomic:
                                written.add(op.key)
                        elif atomic:
                            raise Refused(index, refused or None)
                        else:
                            results.append(refused_error(op, refused or None))
                    if not commit:
                        raise _Judged
            except _Judged:
                pass
            return results

        return await self._run(work, strong_write=strong, keys=[op.key for op in ops])

    async def _write_one(self, op: Operation) -> None:
        self._validate(op)
        (error,) = await self._write([op], atomic=False)
        if error is not None:
            raise error

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(ops)
        sendable: list[int] = []
        for index, op in enumerate(ops):
            try:
                self._validate(op)
            except StoreError as exc:
                results[index] = exc
            else:
                sendable.append(index)
        if sendable:
            written = await self._write([ops[i] for i in sendable], atomic=False)
            for index, outcome in zip(sendable, written, strict=True):
                results[index] = outcome
        return results

    async def transact(self, ops: Sequence[Operation]) -> None:
        if not ops:
            return
        invalid = self._first_invalid(ops)
        judged = ops if invalid is None else ops[: invalid[0]]
        try:
            if judged:
                await self._write(judged, atomic=True, commit=invalid is None)
        except Refused as refused:
            op = ops[refused.index]
            mismatch = refused_error(op, refused.observed)
            raise TransactionError(refused.index, op.key, mismatch) from mismatch
        if invalid is not None:
            index, cause = invalid
            raise TransactionError(index, ops[index].key, cause) from cause

    # -----------------------------------------------------------------------------------------
    # TTL sweep: in turns with daprd.

    async def _sweep(self) -> int:
        async def work(conn: Any) -> int:
            claimed = await conn.execute(
                self._meta_sql["claim"], self._layout.cleanup_key, self._cleanup_ms
            )
            if str(claimed).rpartition(" ")[2] == "0":
                return 0  # another process swept within the interval
            status = await conn.execute(self._sql["sweep"])
            return int(str(status).rpartition(" ")[2] or 0)

        return await self._run(work)
