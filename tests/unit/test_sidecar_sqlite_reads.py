"""
SQLite reads on the event loop (`stores.sqlite.store`, `stores.sqlite.inline`), on real files.

A GET of a WAL file runs on the loop, on a read-only connection that never waits for a lock.
What must hold: it is served without the worker thread; it never returns a value a committed
write has replaced, nor half of a transaction, nor an expired item; while another process holds
the write lock, or the database in exclusive mode, reads neither block the loop nor see
uncommitted data; a read that had to wait on the disk sends the next ones to the worker thread;
in-memory and rollback-journal files read on the worker thread. Both layouts (statecar's and
daprd's) are read the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from statecar_sidecar.stores.base import SetOp
from statecar_sidecar.stores.errors import StoreUnavailableError
from statecar_sidecar.stores.sqlite import SQLiteStore
from statecar_sidecar.stores.sqlite.inline import InlineGate, blocks_read

T = TypeVar("T")
LAYOUTS = ["statecar", "dapr"]


# ---------------------------------------------------------------------------------------------
# The gate, as a pure decision.


def test_fast_reads_and_preempted_reads_keep_the_gate_open() -> None:
    gate = InlineGate(slow=0.001, stall=0.05, first_pause=1.0, longest_pause=8.0)
    assert not gate.took(0.0005, 10.0, disk=True)  # a fast read from the disk: cheap enough
    assert not gate.took(0.01, 10.0, disk=False)  # slow, but the thread only lost the CPU
    assert gate.open(10.0)
    assert gate.pause == 0.0


def test_a_slow_read_from_the_disk_closes_the_gate_and_the_pause_doubles_while_cold() -> None:
    gate = InlineGate(slow=0.001, stall=0.05, first_pause=1.0, longest_pause=4.0)
    assert gate.took(0.002, 10.0, disk=True)
    assert not gate.open(10.5)
    assert gate.open(11.0)
    # Still cold right after reopening: 2 s, then 4 s, and never more than longest_pause.
    pauses = []
    now = 11.0
    for _ in range(3):
        gate.took(0.002, now + 0.1, disk=True)
        pauses.append(gate.pause)
        now = gate.closed_until
    assert pauses == [2.0, 4.0, 4.0]
    # Warm for longer than the last pause: the next slow read starts again from the first.
    assert gate.took(0.002, now + 10.0, disk=True)
    assert gate.pause == 1.0


def test_a_stall_closes_the_gate_without_evidence() -> None:
    gate = InlineGate(slow=0.001, stall=0.05)
    assert gate.took(0.06, 10.0, disk=False)
    assert not gate.open(10.0)


def test_blocks_read_counts_this_threads_reads_from_storage() -> None:
    assert blocks_read() >= 0


# ---------------------------------------------------------------------------------------------
# Helpers: a store per layout, a blocked worker thread, a loop-lag probe.


@pytest.fixture(params=LAYOUTS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(
        {"connectionString": str(tmp_path / "s.db"), "layout": request.param}
    )
    try:
        yield opened
    finally:
        await opened.close()


@contextlib.contextmanager
def worker_blocked(store: SQLiteStore) -> Iterator[None]:
    """The store's worker thread is busy (as during a long write) until the block ends."""
    release = threading.Event()
    started = threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    done = store._executor.submit(hold)
    assert started.wait(5)
    try:
        yield
    finally:
        release.set()
        done.result(5)


async def within(seconds: float, call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, seconds)


class LoopLag:
    """The longest the event loop went without running a 2 ms ticker, while it ran."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.002)
            now = time.monotonic()
            self.worst = max(self.worst, now - last)
            last = now

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=10)


# ---------------------------------------------------------------------------------------------
# Served on the loop, and never stale.


async def test_gets_are_served_without_the_worker_thread(store: SQLiteStore) -> None:
    await store.set(SetOp("k", b'{"n":1}'))
    await store.set_many([SetOp(f"b{i}", str(i).encode()) for i in range(16)])
    with worker_blocked(store):
        item = await within(1, store.get("k"))
        assert item is not None
        assert item.value == b'{"n":1}'
        assert await within(1, store.get("missing")) is None
        items = await within(1, store.bulk_get([f"b{i}" for i in range(15)] + ["b3"]))
        assert [i.value if i else None for i in items] == [str(i).encode() for i in range(15)] + [
            b"3"
        ]
        # A bigger bulk is a longer read: it waits for the worker.
        with pytest.raises(TimeoutError):
            await within(0.3, store.bulk_get([f"b{i}" for i in range(17)]))


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_an_inline_read_never_returns_a_replaced_value(tmp_path: Path, layout: str) -> None:
    """Each value another sidecar committed (and acknowledged) is what the next GET returns,
    and reads racing its writes only ever move forward."""
    path = str(tmp_path / "s.db")
    mine = await SQLiteStore.open({"connectionString": path, "layout": layout})
    other = await SQLiteStore.open({"connectionString": path, "layout": layout})
    try:
        for i in range(150):
            await other.set(SetOp("k", str(i).encode()))
            with worker_blocked(mine):
                item = await within(1, mine.get("k"))
            assert item is not None
            assert item.value == str(i).encode()
            theirs = await other.get("k")
            assert theirs is not None
            assert item.etag == theirs.etag
        # Its own writes, then reads (the writer's connection is not the reader's).
        for i in range(50):
            await mine.set(SetOp("k", f"m{i}".encode()))
            item = await mine.get("k")
            assert item is not None
            assert item.value == f"m{i}".encode()

        # Concurrently: the other store's worker thread commits while the loop reads.
        await other.set(SetOp("n", b"0"))
        acknowledged = 0
        stop = False

        async def write() -> None:
            nonlocal acknowledged, stop
            for i in range(1, 300):
                await other.set(SetOp("n", str(i).encode()))
                acknowledged = i
            stop = True

        async def read() -> None:
            seen = 0
            while not stop:
                floor = acknowledged
                item = await mine.get("n")
                assert item is not None
                value = int(item.value)
                assert value >= floor, f"read {value} after {floor} was acknowledged"
                assert value >= seen, f"read {value} after {seen}"
                seen = value
                await asyncio.sleep(0)

        await asyncio.gather(write(), read())
    finally:
        await mine.close()
        await other.close()


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_an_inline_read_never_sees_half_a_transaction(tmp_path: Path, layout: str) -> None:
    path = str(tmp_path / "s.db")
    mine = await SQLiteStore.open({"connectionString": path, "layout": layout})
    other = await SQLiteStore.open({"connectionString": path, "layout": layout})
    try:
        await other.transact([SetOp("a", b"0"), SetOp("b", b"0")])
        stop = False

        async def write() -> None:
            nonlocal stop
            for i in range(1, 200):
                value = str(i).encode()
                await other.transact([SetOp("a", value), SetOp("b", value)])
            stop = True

        async def read() -> int:
            reads = 0
            while not stop:
                a, b = await mine.bulk_get(["a", "b"])
                assert a is not None
                assert b is not None
                assert a.value == b.value, "a read saw half of a transaction"
                reads += 1
                await asyncio.sleep(0)
            return reads

        _, reads = await asyncio.gather(write(), read())
        assert reads > 10
    finally:
        await mine.close()
        await other.close()


async def test_an_inline_read_never_returns_an_expired_item(store: SQLiteStore) -> None:
    await store.set(SetOp("short", b"1", ttl=1))
    item = await store.get("short")
    assert item is not None
    assert item.expire_at is not None
    await asyncio.sleep(max(0.0, item.expire_at - time.time()) + 0.05)
    with worker_blocked(store):
        assert await within(1, store.get("short")) is None
        assert await within(1, store.bulk_get(["short"])) == [None]


# ---------------------------------------------------------------------------------------------
# Locks: reads never wait for them on the loop.


async def test_a_write_lock_held_elsewhere_neither_blocks_nor_shows_through(
    store: SQLiteStore, tmp_path: Path
) -> None:
    """Another process in the middle of a long write transaction: GETs on the loop return the
    committed value at once, while this store's own write waits on its worker thread."""
    await store.set(SetOp("k", b'"committed"'))
    holder = _connect(tmp_path / "s.db")
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE state SET value = '\"uncommitted\"' WHERE key = 'k'")
        writing = asyncio.create_task(store.set(SetOp("k", b'"mine"')))  # waits busyTimeout
        async with LoopLag() as lag:
            for _ in range(100):
                item = await within(1, store.get("k"))
                assert item is not None
                assert item.value == b'"committed"'
            assert not writing.done()  # the reads did not queue behind the blocked write
        assert lag.worst < 0.5
        holder.execute("ROLLBACK")
        await within(5, writing)
        item = await store.get("k")
        assert item is not None
        assert item.value == b'"mine"'
    finally:
        holder.close()


async def test_the_loop_never_waits_for_a_lock_and_a_failed_read_goes_to_the_worker(
    store: SQLiteStore,
) -> None:
    """The read connection has no busy timeout: SQLITE_BUSY (a recovery or an exclusive lock
    in another process) fails the inline read at once, and any failed inline read is read
    again on the worker thread, which waits for locks and reports errors as writes do."""
    await store.set(SetOp("k", b"1"))
    reader = store._reader
    assert reader is not None
    assert reader.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    assert reader.execute("PRAGMA query_only").fetchone()[0] == 1
    reader.close()  # every inline read now fails
    item = await store.get("k")
    assert item is not None
    assert item.value == b"1"
    assert [i.value if i else None for i in await store.bulk_get(["k", "x"])] == [b"1", None]
    with worker_blocked(store), pytest.raises(TimeoutError):
        await within(0.3, store.get("k"))


@pytest.mark.parametrize(
    "metadata",
    [{"disableWAL": "true"}, {"connectionString": ":memory:"}],
    ids=["rollback-journal", "in-memory"],
)
async def test_files_without_wal_read_on_the_worker(
    tmp_path: Path, metadata: dict[str, str]
) -> None:
    store = await SQLiteStore.open({"connectionString": str(tmp_path / "s.db"), **metadata})
    try:
        await store.set(SetOp("k", b"1"))
        with worker_blocked(store), pytest.raises(TimeoutError):
            await within(0.3, store.get("k"))
        item = await store.get("k")
        assert item is not None
        assert item.value == b"1"
    finally:
        await store.close()


async def test_rollback_journal_reads_wait_on_the_worker_not_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await SQLiteStore.open(
        {"connectionString": str(path), "disableWAL": "true", "busyTimeout": "300ms"}
    )
    holder = _connect(path)
    try:
        await store.set(SetOp("k", b"1"))
        holder.execute("BEGIN EXCLUSIVE")  # readers of a rollback journal must wait
        async with LoopLag() as lag:
            with pytest.raises(StoreUnavailableError):
                await store.get("k")
        assert lag.worst < 0.2, f"the loop stalled {lag.worst:.3f}s"
        holder.execute("ROLLBACK")
        item = await store.get("k")
        assert item is not None
        assert item.value == b"1"
    finally:
        holder.close()
        await store.close()


# ---------------------------------------------------------------------------------------------
# The disk: a read whose pages were not in memory closes the gate.


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache (posix_fadvise), and check they are gone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(4096)], 8 * 4096, os.RWF_NOWAIT)
        except BlockingIOError:
            return  # not cached: the next read goes to the disk
        pytest.fail(f"{path}'s pages stayed cached: is {path.parent} on tmpfs?")
    finally:
        os.close(fd)


async def test_a_read_from_the_disk_sends_the_next_reads_to_the_worker(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await SQLiteStore.open({"connectionString": str(path)})
    try:
        await store.set_many([SetOp(f"k{i}", os.urandom(2000)) for i in range(2000)])
        await store._call(lambda: store._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        store._gate = InlineGate(slow=0.0)  # any read that went to the disk, however fast
        with worker_blocked(store):
            # Warm reads stay on the loop and keep the gate open.
            assert await within(1, store.get("k5")) is not None
            assert store._gate.open(time.monotonic())
        _evict(path)
        reader = store._reader
        assert reader is not None
        reader.execute("PRAGMA shrink_memory")  # and from SQLite's own page cache
        item = await store.get("k1777")
        assert item is not None
        assert len(item.value) == 2000
        assert not store._gate.open(time.monotonic()), "a read from the disk left the gate open"
        with worker_blocked(store), pytest.raises(TimeoutError):
            await within(0.3, store.get("k5"))  # now on the worker thread
        store._gate.closed_until = 0.0
        with worker_blocked(store):
            assert await within(1, store.get("k5")) is not None
    finally:
        await store.close()


async def test_closing_takes_the_reader_away(store: SQLiteStore) -> None:
    await store.set(SetOp("k", b"1"))
    assert store._reader is not None
    await store.close()
    assert store._reader is None
    with pytest.raises(StoreUnavailableError):
        await store.get("k")
