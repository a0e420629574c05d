"""
`state.sqlite`: state in one SQLite file (or in memory), statecar's embedded default store.

This module owns how the concurrency rule of `etags` is made atomic on SQLite (the layout and
its SQL are in `statements`), for one sidecar and for several processes sharing the file (two
sidecars, or a sidecar and `statecar run`). It speaks daprd's component metadata, read by
`statecar_contract.settings.SQLiteSettings` (names, aliases, defaults; docs/components.md):
`connectionString` (a file path, `:memory:` or a `file:` URI), `tableName`, `busyTimeout`,
`timeout`, `disableWAL` and `cleanupInterval`.

Concurrency: one writing connection per store, used only by one dedicated worker thread, so
the writes of one store run one at a time and never block the event loop. Every write is a
`BEGIN IMMEDIATE` transaction: it takes the database's write lock before reading the current
ETag, so the check-then-write is atomic against other connections and other processes too
(a deferred transaction could read, then fail to upgrade with SQLITE_BUSY_SNAPSHOT:
https://www.sqlite.org/lang_transaction.html, https://www.sqlite.org/wal.html#sometimes_queries_return_sqlite_busy_in_wal_mode).
A writer waits up to `busyTimeout` for another process's write lock, then fails as unavailable.

Reads (a GET, a bulk of up to `_INLINE_KEYS` keys) of a file in WAL mode run on the event loop,
on a second, read-only connection, because handing a point read to the worker thread and back
costs ten times the read itself (bench/sqlite_get.py). WAL makes that safe: a reader never waits
for a writer and sees exactly the last committed state, each statement in its own read
transaction, so it never sees half of a transaction nor an older value than one already
committed (https://www.sqlite.org/wal.html#concurrency, https://www.sqlite.org/isolation.html).
The read connection never waits at all (busy_timeout 0): on SQLITE_BUSY (a checkpoint or a
recovery in another process), or any other error, the read goes to the worker thread, which
waits and reports errors as before. A read that took long (the disk, not the cache) sends the
following reads to the worker thread for a while (`inline.InlineGate`). In-memory databases
and rollback-journal files (`disableWAL`, where readers and writers do block each other) read
on the worker thread only.

ETags: `max(current + 1, now in µs, highest issued in this file + 1)` (the rule of `etags`),
with the high-water mark kept in the file under the write lock, so an ETag never repeats in
the file, across delete and re-create, across processes, restarts and clock steps.

Consistency: SQLite has no replicas, so the two modes differ in durability only. WAL mode with
`synchronous=NORMAL` (eventual) never corrupts the database and loses nothing when a process
crashes, but a power loss or OS crash may roll back the last commits; `synchronous=FULL`
(strong) syncs the WAL on every commit, so an acknowledged write survives that too
(https://www.sqlite.org/pragma.html#pragma_synchronous, https://www.sqlite.org/wal.html).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final, TypeVar

from statecar_contract.settings import SQLiteSettings
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ETagInvalidError,
    ETagMismatchError,
    StoreError,
    StoreUnavailableError,
    TransactionError,
    read_settings,
)
from statecar_sidecar.stores.sql_common import Sweeper, check_layout, prefix_successor
from statecar_sidecar.stores.sqlite.inline import InlineGate, blocks_read
from statecar_sidecar.stores.sqlite.statements import (
    EXPECTED_COLUMNS,
    SCHEMA,
    SQL,
    render,
)

if TYPE_CHECKING:
    from statecar_sidecar.stores.query import Query, QueryPage

__all__ = ["SQLiteStore"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SQLITE_BUSY: Final = 5  # result code (low byte) for "database is locked"
_SQLITE_LOCKED: Final = 6
#: The largest bulk read on the event loop: a bounded number of index lookups.
_INLINE_KEYS: Final = 16


class SQLiteStore(StateStore):
    """One SQLite database file: writes on one connection on one worker thread, reads of a WAL
    file on a read-only connection on the event loop."""

    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})
    #: The table layout this class reads and writes: its name in errors, and its columns.
    _layout: ClassVar[str] = "statecar"
    _expected_columns: ClassVar[Mapping[str, str]] = EXPECTED_COLUMNS

    def __init__(self, settings: SQLiteSettings) -> None:
        target = settings.target
        table = settings.table_name
        self._target = target
        self._table = table
        self._busy_timeout = settings.busy_timeout
        self._timeout = settings.timeout
        self._wal = not settings.disable_wal
        # One thread: every operation of this store is serialized on it, and the sqlite3
        # connection is only ever touched by the thread that created it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statecar-sqlite")
        self._conn: sqlite3.Connection | None = None
        # The read-only connection the event loop reads with, when the file is in WAL mode:
        # opened on the worker thread, then only used on the loop (until close takes it away).
        self._reader: sqlite3.Connection | None = None
        self._gate = InlineGate()
        # The loop thread's disk reads so far (`inline`): opened on the loop, which reads.
        self._blocks_seen = blocks_read()
        self._full_sync = False
        self._max_variables = 999
        self._closed = False
        self._sweeper = Sweeper(
            lambda: self._call(self._sweep),
            interval=settings.cleanup_interval,
            where=f"SQLite {target.label}",
            log=_log,
        )
        self._sql = {name: render(template, table) for name, template in SQL.items()}
        self._sql_schema = tuple(render(template, table) for template in SCHEMA)

    @classmethod
    async def open(cls, metadata: Mapping[str, str]) -> SQLiteStore:
        """Open (creating if missing) the database and table named by daprd's metadata.

        `layout: dapr` opens daprd's table instead (`dapr_store`).
        """
        settings = read_settings(SQLiteSettings, metadata)
        store: SQLiteStore
        if settings.layout == "statecar":
            store = cls(settings)
        else:
            # Imported here: dapr_store subclasses this class, so it imports this module.
            from statecar_sidecar.stores.sqlite.dapr_store import DaprSQLiteStore

            store = DaprSQLiteStore(settings)
        try:
            await store._call(store._connect)
        except BaseException:
            await store.close()
            raise
        store._sweeper.start(name=f"statecar-sqlite-cleanup-{settings.table_name}")
        return store

    # -----------------------------------------------------------------------------------------
    # Plumbing: every call below `_call` runs on the worker thread.

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._closed:
            raise StoreUnavailableError(f"SQLite store {self._target.label} is closed")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                # If the caller gives up while the call still waits for the worker, asyncio
                # cancels the queued call, so it never runs; a call already running completes.
                return await loop.run_in_executor(self._executor, fn, *args)
        except TimeoutError:
            raise StoreUnavailableError(
                f"SQLite database {self._target.label} did not answer within {self._timeout:g}s"
            ) from None
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        except UnicodeEncodeError as exc:
            # A lone surrogate (only reachable from Python callers: JSON and URL decoding never
            # produce one) has no UTF-8 form, so SQLite cannot hold it.
            raise StoreError(f"cannot store text that is not valid Unicode: {exc.reason}") from exc

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreUnavailableError(
                f"SQLite database {self._target.label} stayed locked by another writer for longer"
                f" than busyTimeout ({self._busy_timeout:g}s)"
            )
        return StoreError(f"SQLite database {self._target.label}: {exc}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailableError(f"SQLite store {self._target.label} is closed")
        return self._conn

    def _connect(self) -> None:
        target = self._target
        if not target.uri and not target.in_memory:
            Path(target.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            target.database,
            uri=target.uri,
            timeout=self._busy_timeout,
            # None: the sqlite3 module never opens transactions by itself; we issue BEGIN.
            isolation_level=None,
            cached_statements=256,
        )
        self._conn = conn
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        for name, value in target.pragmas:
            conn.execute(f"PRAGMA {name} = {value}")  # both checked by _PRAGMA_ITEM
        if not target.in_memory and not target.read_only:
            mode = "WAL" if self._wal else "DELETE"
            got = conn.execute(f"PRAGMA journal_mode = {mode}").fetchone()[0]
            if str(got).upper() != mode:
                _log.warning("SQLite %s: journal_mode is %s, not %s", target.label, got, mode)
        conn.execute("PRAGMA synchronous = NORMAL")
        self._full_sync = False
        self._max_variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._prepare_schema(conn)
        self._reader = self._open_reader()

    def _open_reader(self) -> sqlite3.Connection | None:
        """The event loop's read connection, or None when reads must stay on the worker."""
        target = self._target
        if target.in_memory:
            return None  # another connection to ':memory:' would open another, empty database
        reader = sqlite3.connect(
            target.database,
            uri=target.uri,
            timeout=0,  # never wait for a lock on the loop: SQLITE_BUSY sends the read on
            isolation_level=None,  # autocommit: each SELECT is its own read transaction
            check_same_thread=False,  # opened here on the worker, used on the loop
            cached_statements=32,
        )
        try:
            reader.execute("PRAGMA query_only = 1")
            for name, value in target.pragmas:
                # The writer applied them to the file already; a pragma that writes (user_version,
                # application_id) fails here under query_only and needs not apply twice.
                with contextlib.suppress(sqlite3.Error):
                    reader.execute(f"PRAGMA {name} = {value}")  # both checked by _PRAGMA_ITEM
            mode = str(reader.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        except sqlite3.Error as exc:
            _log.debug("SQLite %s: reads stay on the worker thread: %s", target.label, exc)
            reader.close()
            return None
        if mode != "wal":
            reader.close()  # a rollback journal: readers and writers block each other
            return None
        return reader

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        """Create the table (and what goes with it) when missing; refuse one not ours."""
        if self._target.read_only:
            self._check_layout(conn)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            create_table, *rest = self._sql_schema
            conn.execute(create_table)
            self._check_layout(conn)  # before indexing a table that may not be ours
            for statement in rest:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _check_layout(self, conn: sqlite3.Connection) -> None:
        columns = {str(row[1]): str(row[2]).upper() for row in conn.execute(self._sql["columns"])}
        if not columns:
            raise StoreError(f"SQLite database {self._target.label} has no table {self._table!r}")
        check_layout(
            columns,
            self._expected_columns,
            table=repr(self._table),
            location=f"in {self._target.label}",
            engine="SQLite",
            layout=self._layout,
        )

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            # A failed ROLLBACK (the connection is broken) must not hide the original error.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _synchronous(self, conn: sqlite3.Connection, *, full: bool) -> None:
        # A per-connection setting, changed outside a transaction and only when it differs.
        if full != self._full_sync:
            conn.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            self._full_sync = full

    # -----------------------------------------------------------------------------------------
    # Reads.

    def _read(self, conn: sqlite3.Connection, keys: Sequence[str]) -> list[StoredItem | None]:
        """The live items of `keys` (None: missing or expired), in one statement per chunk."""
        now = time.time()
        if len(keys) == 1:
            row = conn.execute(self._sql["get"], (keys[0], now)).fetchone()
            return [None if row is None else StoredItem(row[0], str(row[1]), row[2])]
        found: dict[str, StoredItem] = {}
        unique = list(dict.fromkeys(keys))
        # One statement per bulk; only a bulk beyond SQLite's bound on parameters is split.
        step = max(1, self._max_variables - 1)
        for start in range(0, len(unique), step):
            chunk = unique[start : start + step]
            sql = self._sql["get_many"].format(marks=", ".join("?" * len(chunk)))
            for key, value, etag, expire_at in conn.execute(sql, (*chunk, now)):
                found[key] = StoredItem(value, str(etag), expire_at)
        return [found.get(key) for key in keys]

    def _read_on_worker(self, keys: Sequence[str]) -> list[StoredItem | None]:
        return self._read(self._connection(), keys)

    def _read_inline(
        self, reader: sqlite3.Connection, keys: Sequence[str]
    ) -> list[StoredItem | None] | None:
        """Read on the event loop; None: the worker thread must read instead."""
        gate = self._gate
        started = time.monotonic()
        if started < gate.closed_until:
            return None
        try:
            items: list[StoredItem | None] | None = self._read(reader, keys)
        except (sqlite3.Error, UnicodeEncodeError, StoreError):
            # SQLITE_BUSY (this connection never waits), or an error the worker reports as
            # every other call's: the worker reads, waiting for locks as writes do.
            items = None
        ended = time.monotonic()
        if ended - started >= gate.slow:
            self._slow_read(ended - started, ended)
        return items

    def _slow_read(self, seconds: float, now: float) -> None:
        blocks = blocks_read()
        disk, self._blocks_seen = blocks > self._blocks_seen, blocks
        if self._gate.took(seconds, now, disk=disk):
            _log.debug(
                "SQLite %s: a read took %.1f ms (the disk, or a stall); reads go to the worker"
                " thread for %g s",
                self._target.label,
                seconds * 1000,
                self._gate.pause,
            )

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        # No replicas: every read is of the one database, so `strong` changes nothing.
        reader = self._reader
        if reader is not None:
            items = self._read_inline(reader, (key,))
            if items is not None:
                return items[0]
        return (await self._call(self._read_on_worker, (key,)))[0]

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        if not keys:
            return []
        reader = self._reader
        if reader is not None and len(keys) <= _INLINE_KEYS:
            items = self._read_inline(reader, keys)
            if items is not None:
                return items
        return await self._call(self._read_on_worker, list(keys))

    # -----------------------------------------------------------------------------------------
    # Writes.

    def _write(self, ops: Sequence[Operation], *, atomic: bool) -> list[Exception | None]:
        """Check and apply `ops` in order in one IMMEDIATE transaction.

        `atomic`: the first failed check raises TransactionError and nothing is written.
        Otherwise each op stands alone, as daprd's multi-item save: a failed op is reported in
        the result and skipped, the others are committed together (which is the same outcome
        as one transaction each, since the write lock is held throughout).
        """
        conn = self._connection()
        self._synchronous(conn, full=any(op.strong for op in ops))
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = self._apply(conn, ops, atomic=atomic)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        return results

    def _apply(
        self, conn: sqlite3.Connection, ops: Sequence[Operation], *, atomic: bool
    ) -> list[Exception | None]:
        now_us = time.time_ns() // 1000
        now = now_us / 1e6
        issued = int(conn.execute(self._sql["hwm"]).fetchone()[0])
        hwm = issued
        # Keys an earlier op of this transaction wrote: like the memory store's placeholder,
        # their new ETag is unknown to the client, so no given ETag can match them.
        written: set[str] = set()
        results: list[Exception | None] = []
        for index, op in enumerate(ops):
            try:
                if op.etag:
                    etags.validate_etag(op.key, op.etag)
                row = conn.execute(self._sql["current"], (op.key,)).fetchone()
                live = row is not None and (row[1] is None or row[1] > now)
                current = str(row[0]) if live and row is not None else None
                if op.etag and op.key in written:
                    raise ETagMismatchError(
                        op.key,
                        f"key {op.key!r} was written by an earlier operation of this transaction,"
                        f" so etag {op.etag} cannot match",
                    )
                if isinstance(op, SetOp):
                    etags.check_write(op.key, current, op.etag, first_write=op.first_write)
                    floor = int(row[0]) + 1 if row is not None else 0
                    new = max(floor, now_us, issued + 1)
                    expire_at = now + op.ttl if op.ttl is not None and op.ttl > 0 else None
                    conn.execute(self._sql["upsert"], (op.key, op.value, new, expire_at))
                    issued = new
                    if atomic:
                        written.add(op.key)
                else:
                    etags.check_delete(op.key, current, op.etag, first_write=op.first_write)
                    if row is not None:
                        conn.execute(self._sql["delete"], (op.key,))
                    written.discard(op.key)
            except (ETagMismatchError, ETagInvalidError) as exc:
                if atomic:
                    raise TransactionError(index, op.key, exc) from exc
                results.append(exc)
            else:
                results.append(None)
        if issued != hwm:
            conn.execute(self._sql["set_hwm"], (issued, issued))
        return results

    async def set(self, op: SetOp) -> None:
        (error,) = await self._call(lambda: self._write([op], atomic=False))
        if error is not None:
            raise error

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        if not ops:
            return []
        return await self._call(lambda: self._write(ops, atomic=False))

    async def delete(self, op: DeleteOp) -> None:
        (error,) = await self._call(lambda: self._write([op], atomic=False))
        if error is not None:
            raise error

    async def transact(self, ops: Sequence[Operation]) -> None:
        if ops:
            await self._call(lambda: self._write(ops, atomic=True))

    # -----------------------------------------------------------------------------------------
    # Query, TTL sweep (run by the Sweeper), health.

    def _query_rows(self, key_prefix: str) -> list[tuple[str, bytes, str]]:
        conn = self._connection()
        now = time.time()
        upper = prefix_successor(key_prefix)
        if upper is None:
            cursor = conn.execute(self._sql["from"], (key_prefix, now))
        else:
            cursor = conn.execute(self._sql["range"], (key_prefix, upper, now))
        cut = len(key_prefix)
        return [(key[cut:], value, str(etag)) for key, value, etag in cursor]

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        # The engine is imported by the first query: ~15 ms a cold start need not pay.
        from statecar_sidecar.stores.query import collector_paused, run_query_async

        # The rows are read on the worker; filtering and sorting run on the event loop in bounded
        # slices (on the worker they would hold the GIL through each sort and stall the loop).
        with collector_paused():  # reading every row would set off a full collection
            rows = await self._call(self._query_rows, key_prefix)
            return await run_query_async(query, rows)

    def _sweep(self) -> int:
        conn = self._connection()
        return conn.execute(self._sql["sweep"], (time.time(),)).rowcount

    def _ping(self) -> None:
        self._connection().execute(self._sql["ping"]).fetchall()

    async def ping(self) -> None:
        await self._call(self._ping)

    def _close_connection(self, reader: sqlite3.Connection | None) -> None:
        conn, self._conn = self._conn, None
        try:
            if reader is not None:
                reader.close()  # first: the writer, closing last, checkpoints the WAL
        finally:
            if conn is not None:
                conn.close()

    async def close(self) -> None:
        if self._closed:
            return
        await self._sweeper.stop()
        self._closed = True
        # Taken from the loop first, so no read starts on it while the worker closes it.
        reader, self._reader = self._reader, None
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close_connection, reader)
        except sqlite3.Error as exc:
            _log.warning("SQLite %s: close failed: %s", self._target.label, exc)
        finally:
            self._executor.shutdown(wait=False)
