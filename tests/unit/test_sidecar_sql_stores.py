"""
The SQL backends (`stores.sqlite`, `stores.postgresql`) against the real engines: SQLite files in
a temporary directory, and throwaway PostgreSQL servers (`pg_server` for the shared one, plus one
this module stops, freezes and restarts).

Both backends must behave like the reference memory store: every row of contract.md's
concurrency table on every write path (single op, one-op transaction, multi-op transaction,
multi-item save), atomic ordered transactions, TTL, byte-exact values, bulk order, ETags that
never repeat, no lost update when two stores race on one key, and a differential property test
against `MemoryStore`. PostgreSQL also: queries compiled to SQL (and the fallback), synchronous
commit for strong writes, and a server that stops, hangs and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import pg_server
from tests.support.require import unavailable

from statecar_sidecar.stores import postgresql as postgresql_module
from statecar_sidecar.stores.base import DeleteOp, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ConsistencyError,
    ETagInvalidError,
    ETagMismatchError,
    StoreError,
    StoreUnavailableError,
    TransactionError,
)
from statecar_sidecar.stores.memory import MemoryStore
from statecar_sidecar.stores.postgresql import PostgreSQLStore
from statecar_sidecar.stores.query import parse_query
from statecar_sidecar.stores.sqlite import SQLiteStore

BACKENDS = ["sqlite", "postgresql"]
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


def _table() -> str:
    return "t_" + uuid.uuid4().hex[:12]


async def open_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **metadata: str
) -> StateStore:
    if kind == "sqlite":
        metadata.setdefault("connectionString", str(tmp_path / "state.db"))
        return await SQLiteStore.open(metadata)
    server: pg_server.PgServer = request.getfixturevalue("postgres")
    metadata.setdefault("connectionString", server.dsn)
    metadata.setdefault("tableName", _table())  # a fresh table per test
    return await PostgreSQLStore.open(metadata)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await open_backend(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def item_of(store: StateStore, key: str) -> StoredItem:
    item = await store.get(key)
    assert item is not None, f"{key!r} is missing"
    return item


async def etag_of(store: StateStore, key: str) -> str:
    return (await item_of(store, key)).etag


async def value_of(store: StateStore, key: str) -> bytes | None:
    item = await store.get(key)
    return None if item is None else item.value


# ---------------------------------------------------------------------------------------------
# The concurrency table (contract.md), every row, every write path.


@dataclass(frozen=True)
class Row:
    action: str  # "save" | "delete"
    etag: str  # "same" | "other" | "none"
    mode: str  # "first-write" | "last-write"
    state: str  # "absent" | "present"
    allowed: bool

    def __str__(self) -> str:
        return f"{self.action}-etag_{self.etag}-{self.mode}-{self.state}"


TABLE = [
    # save, ETag given (either mode): absent 409 | same: write | other: 409
    *(Row("save", "other", mode, "absent", False) for mode in ("first-write", "last-write")),
    *(Row("save", "same", mode, "present", True) for mode in ("first-write", "last-write")),
    *(Row("save", "other", mode, "present", False) for mode in ("first-write", "last-write")),
    # save, no ETag, last-write: write | write
    Row("save", "none", "last-write", "absent", True),
    Row("save", "none", "last-write", "present", True),
    # save, no ETag, first-write: write | 409
    Row("save", "none", "first-write", "absent", True),
    Row("save", "none", "first-write", "present", False),
    # delete, ETag given: absent 409 | same: delete | other: 409
    *(Row("delete", "other", mode, "absent", False) for mode in ("first-write", "last-write")),
    *(Row("delete", "same", mode, "present", True) for mode in ("first-write", "last-write")),
    *(Row("delete", "other", mode, "present", False) for mode in ("first-write", "last-write")),
    # delete, no ETag, last-write: 204 | delete
    Row("delete", "none", "last-write", "absent", True),
    Row("delete", "none", "last-write", "present", True),
    # delete, no ETag, first-write: 204 | 409
    Row("delete", "none", "first-write", "absent", True),
    Row("delete", "none", "first-write", "present", False),
]
PATHS = ["single", "transaction-of-one", "transaction-of-two", "multi-item-save"]


@pytest.mark.parametrize(
    ("row", "path"),
    [
        pytest.param(row, path, id=f"{row}-{path}")
        for row in TABLE
        for path in PATHS
        if not (path == "multi-item-save" and row.action == "delete")  # saves only
    ],
)
async def test_concurrency_table(store: StateStore, row: Row, path: str) -> None:
    key, bystander = f"k-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    before = None
    if row.state == "present":
        await store.set(SetOp(key, b'"old"'))
        before = await store.get(key)
    given = {
        "none": None,
        "same": before.etag if before else None,
        # A well-formed ETag that is not the key's (when absent: any well-formed one).
        "other": str(int(before.etag) + 7) if before else "1234567",
    }[row.etag]
    first_write = row.mode == "first-write"
    op: Operation
    if row.action == "save":
        op = SetOp(key, b'"new"', etag=given, first_write=first_write)
    else:
        op = DeleteOp(key, etag=given, first_write=first_write)
    other = SetOp(bystander, b'"bystander"')

    error: Exception | None = None
    if path == "single":
        try:
            await (store.set(op) if isinstance(op, SetOp) else store.delete(op))
        except ETagMismatchError as exc:
            error = exc
    elif path == "multi-item-save":
        assert isinstance(op, SetOp)
        results = await store.set_many([other, op])
        assert results[0] is None
        error = results[1]
        assert error is None or isinstance(error, ETagMismatchError)
    else:
        ops = [op] if path == "transaction-of-one" else [other, op]
        failed: TransactionError | None = None
        try:
            await store.transact(ops)
        except TransactionError as exc:
            failed = exc
        if failed is not None:
            assert (failed.index, failed.key) == (len(ops) - 1, key)
            assert isinstance(failed.cause, ETagMismatchError)
            error = failed.cause

    after = await store.get(key)
    if row.allowed:
        assert error is None
        if row.action == "save":
            assert after is not None
            assert after.value == b'"new"'
            assert before is None or int(after.etag) > int(before.etag)
        else:
            assert after is None
    else:
        assert error is not None
        assert str(error).startswith("possible etag mismatch")
        assert after == before  # value and ETag untouched
        if path == "transaction-of-two":
            assert await store.get(bystander) is None  # the transaction applied nothing


@pytest.mark.parametrize("etag", ["abc", "0", "01", "-1", "1.5", " 1", "1" * 20])
async def test_invalid_etag_is_refused_before_anything_changes(
    store: StateStore, etag: str
) -> None:
    await store.set(SetOp("k", b"1"))
    before = await store.get("k")
    with pytest.raises(ETagInvalidError):
        await store.set(SetOp("k", b"2", etag=etag))
    with pytest.raises(ETagInvalidError):
        await store.delete(DeleteOp("k", etag=etag))
    results = await store.set_many([SetOp("k", b"2", etag=etag), SetOp("j", b"3")])
    assert isinstance(results[0], ETagInvalidError)
    assert results[1] is None
    with pytest.raises(TransactionError) as caught:
        await store.transact([SetOp("x", b"1"), DeleteOp("k", etag=etag)])
    assert caught.value.index == 1
    assert isinstance(caught.value.cause, ETagInvalidError)
    assert await store.get("k") == before
    assert await store.get("x") is None


async def test_empty_etag_means_none_and_huge_etag_mismatches(store: StateStore) -> None:
    await store.set(SetOp("k", b"1", etag=""))
    await store.set(SetOp("k", b"2", etag=""))  # last-write without ETag
    with pytest.raises(ETagMismatchError):
        await store.set(SetOp("k", b"3", etag="9" * 19))  # valid text, beyond bigint
    await store.delete(DeleteOp("k", etag=""))
    assert await store.get("k") is None


# ---------------------------------------------------------------------------------------------
# Transactions.


async def test_transaction_create_then_update_by_etag_fails(store: StateStore) -> None:
    # The created key's new ETag is unknowable inside the transaction (as in the memory store),
    # even when the client guesses the next number.
    await store.set(SetOp("probe", b"0"))
    guess = str(int(await etag_of(store, "probe")) + 1)
    with pytest.raises(TransactionError) as caught:
        await store.transact([SetOp("k", b"1"), SetOp("k", b"2", etag=guess)])
    assert (caught.value.index, caught.value.key) == (1, "k")
    assert isinstance(caught.value.cause, ETagMismatchError)
    assert await store.get("k") is None


async def test_transaction_applies_in_order(store: StateStore) -> None:
    await store.set(SetOp("k1", b"1"))
    await store.transact([DeleteOp("k1"), SetOp("k2", b"2"), DeleteOp("k2"), SetOp("k3", b"3")])
    assert await store.bulk_get(["k1", "k2", "k3"]) == [None, None, await store.get("k3")]
    assert await value_of(store, "k3") == b"3"

    await store.transact([SetOp("k", b"1"), SetOp("k", b"2"), SetOp("k", b"3")])
    assert await value_of(store, "k") == b"3"
    # Each op is judged against what the ops before it left: the key now exists.
    with pytest.raises(TransactionError) as caught:
        await store.transact([DeleteOp("k"), SetOp("k", b"4"), SetOp("k", b"5", first_write=True)])
    assert caught.value.index == 2
    assert await value_of(store, "k") == b"3"


async def test_transaction_is_all_or_nothing(store: StateStore) -> None:
    await store.set(SetOp("a", b'"a0"'))
    await store.set(SetOp("b", b'"b0"'))
    a, b = await store.get("a"), await store.get("b")
    assert a is not None
    assert b is not None
    with pytest.raises(TransactionError) as caught:
        await store.transact(
            [
                SetOp("a", b'"a1"', etag=a.etag),
                DeleteOp("b"),
                SetOp("c", b'"c1"'),
                SetOp("a", b'"a2"', etag=a.etag),  # stale: op 0 changed it
                SetOp("d", b'"d1"'),
            ]
        )
    assert (caught.value.index, caught.value.key) == (3, "a")
    assert "nothing was applied" in str(caught.value)
    assert await store.bulk_get(["a", "b", "c", "d"]) == [a, b, None, None]


async def test_transaction_reports_the_first_failing_op(store: StateStore) -> None:
    await store.set(SetOp("a", b"1"))
    # A mismatch at 1 comes before the invalid ETag at 2 ...
    with pytest.raises(TransactionError) as caught:
        await store.transact(
            [SetOp("x", b"1"), SetOp("a", b"2", etag="12345"), SetOp("y", b"1", etag="bad")]
        )
    assert caught.value.index == 1
    assert isinstance(caught.value.cause, ETagMismatchError)
    # ... and the invalid ETag is reported when everything before it passes.
    with pytest.raises(TransactionError) as caught:
        await store.transact([SetOp("x", b"1"), SetOp("a", b"2"), SetOp("y", b"1", etag="bad")])
    assert caught.value.index == 2
    assert isinstance(caught.value.cause, ETagInvalidError)
    assert await store.bulk_get(["x", "y"]) == [None, None]
    assert await value_of(store, "a") == b"1"


async def test_multi_item_save_is_not_atomic(store: StateStore) -> None:
    await store.set(SetOp("a", b"1"))
    results = await store.set_many(
        [
            SetOp("a", b"2", etag="777"),  # mismatch: skipped
            SetOp("b", b"1"),
            SetOp("b", b"2", first_write=True),  # b exists by now: refused
            SetOp("c", b"1", first_write=True),
        ]
    )
    assert [type(r).__name__ if r else None for r in results] == [
        "ETagMismatchError",
        None,
        "ETagMismatchError",
        None,
    ]
    values = [item.value if item else None for item in await store.bulk_get(["a", "b", "c"])]
    assert values == [b"1", b"1", b"1"]


# ---------------------------------------------------------------------------------------------
# TTL.


async def test_ttl_expires_and_a_resave_clears_it(store: StateStore) -> None:
    start = time.time()
    await store.set(SetOp("short", b"1", ttl=1))
    await store.set(SetOp("kept", b"1", ttl=1))
    await store.set(SetOp("kept", b"2"))  # no TTL: clears the expiry
    await store.set(SetOp("zero", b"1", ttl=1))
    await store.set(SetOp("zero", b"2", ttl=0))  # 0 and -1 mean "no expiry" too
    await store.set(SetOp("minus", b"1", ttl=-1))
    item = await store.get("short")
    assert item is not None
    assert item.expire_at is not None
    assert start + 0.5 <= item.expire_at <= time.time() + 1.5
    for key in ("kept", "zero", "minus"):
        assert (await item_of(store, key)).expire_at is None
    await asyncio.sleep(1.3)
    assert await store.get("short") is None
    assert (await store.bulk_get(["short", "kept"]))[0] is None
    page = await store.query(parse_query({}), key_prefix="")
    assert [r.key for r in page.results] == ["kept", "minus", "zero"]
    # An expired key is absent for the concurrency rule too.
    with pytest.raises(ETagMismatchError):
        await store.set(SetOp("short", b"2", etag="1"))
    await store.set(SetOp("short", b"3", first_write=True))
    assert await value_of(store, "short") == b"3"


async def test_expired_rows_are_swept(store: StateStore) -> None:
    for i in range(5):
        await store.set(SetOp(f"gone{i}", b"1", ttl=1))
    await store.set(SetOp("stays", b"1"))
    await asyncio.sleep(1.2)
    if isinstance(store, SQLiteStore):
        removed = await store._call(store._sweep)
    else:
        assert isinstance(store, PostgreSQLStore)
        removed = await store._sweep()
    assert removed == 5
    assert (await store.get("stays")) is not None


async def test_ttl_in_a_transaction(store: StateStore) -> None:
    await store.transact([SetOp("t", b"1", ttl=1), SetOp("u", b"1")])
    assert (await item_of(store, "t")).expire_at is not None
    await asyncio.sleep(1.2)
    assert await store.bulk_get(["t"]) == [None]
    assert await store.get("u") is not None


# ---------------------------------------------------------------------------------------------
# Values, keys, bulk.

VALUES = [
    b'{"f":1.0000000000000002,"g":1e400,"n":12345678901234567890123}',
    b'{"z":1,"a":2,"m":{"y":1,"b":2}}',  # key order kept
    '{"text":"héllo 😀 \\u00e9 <b>&amp;</b>"}'.encode(),
    b'"aGVsbG8gd29ybGQ="',  # binary as a base64 JSON string
    b"  [1, 2 ,3]\n",  # whitespace kept
    b'{"nul":"\\u0000"}',
    b"not json at all \x00\xff",
    b"",
]


@pytest.mark.parametrize("value", VALUES)
async def test_values_round_trip_byte_for_byte(store: StateStore, value: bytes) -> None:
    await store.set(SetOp("v", value))
    assert await value_of(store, "v") == value
    await store.transact([SetOp("w", value)])
    assert [item.value if item else None for item in await store.bulk_get(["v", "w"])] == [
        value,
        value,
    ]


async def test_large_value(store: StateStore) -> None:
    value = json.dumps({"blob": "x" * (1 << 20), "list": list(range(1000))}).encode()
    await store.set(SetOp("big", value))
    assert await value_of(store, "big") == value


@pytest.mark.parametrize(
    "key", ["a/b c", "ü-ключ-键-😀", "app||key", "x" * 2000, "'; DROP TABLE x;--"]
)
async def test_keys(store: StateStore, key: str) -> None:
    await store.set(SetOp(key, b"1"))
    assert await value_of(store, key) == b"1"
    await store.delete(DeleteOp(key, etag=await etag_of(store, key)))
    assert await store.get(key) is None


async def test_bulk_get_keeps_request_order(store: StateStore) -> None:
    await store.set_many([SetOp(f"k{i}", str(i).encode()) for i in range(50)])
    keys = ["k7", "missing", "k3", "k7", "k49", "k0", "nope"]
    items = await store.bulk_get(keys)
    assert [item.value if item else None for item in items] == [
        b"7",
        None,
        b"3",
        b"7",
        b"49",
        b"0",
        None,
    ]
    assert await store.bulk_get([]) == []


async def test_sqlite_bulk_get_beyond_the_parameter_limit(tmp_path: Path) -> None:
    store = await SQLiteStore.open({"connectionString": str(tmp_path / "s.db")})
    try:
        store._max_variables = 10  # force the split path
        await store.set_many([SetOp(f"k{i}", str(i).encode()) for i in range(40)])
        keys = [f"k{i}" for i in reversed(range(45))]
        items = await store.bulk_get(keys)
        assert [item.value if item else None for item in items] == [
            None if i >= 40 else str(i).encode() for i in reversed(range(45))
        ]
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------
# ETags.


async def test_etags_never_repeat_across_delete_and_recreate(store: StateStore) -> None:
    seen: list[str] = []
    for _ in range(30):
        await store.set(SetOp("k", b"1"))
        await store.set(SetOp("k", b"2"))
        seen.append(await etag_of(store, "k"))
        await store.delete(DeleteOp("k"))
    assert len(set(seen)) == len(seen)
    assert seen == sorted(seen, key=int)
    # A stale ETag (read before a delete) never matches the re-created key.
    await store.set(SetOp("k", b"3"))
    for stale in seen:
        with pytest.raises(ETagMismatchError):
            await store.set(SetOp("k", b"4", etag=stale))


async def test_etags_keep_growing_in_a_reopened_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    first = await SQLiteStore.open({"connectionString": path})
    await first.set(SetOp("k", b"1"))
    old = await etag_of(first, "k")
    await first.delete(DeleteOp("k"))
    await first.close()
    second = await SQLiteStore.open({"connectionString": path})
    try:
        await second.set(SetOp("k", b"1"))
        assert int(await etag_of(second, "k")) > int(old)
    finally:
        await second.close()


async def _cas_increments(stores: list[StateStore], key: str, workers: int, each: int) -> int:
    """Workers increment a counter by compare-and-swap on the ETag; returns conflicts seen."""
    conflicts = 0

    async def worker(store: StateStore) -> None:
        nonlocal conflicts
        done = 0
        while done < each:
            item = await store.get(key)
            assert item is not None
            try:
                await store.set(SetOp(key, str(int(item.value) + 1).encode(), etag=item.etag))
            except ETagMismatchError:
                conflicts += 1
            else:
                done += 1

    await asyncio.gather(*(worker(stores[i % len(stores)]) for i in range(workers)))
    return conflicts


async def test_two_sqlite_stores_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    stores = [await SQLiteStore.open({"connectionString": path}) for _ in range(2)]
    try:
        await stores[0].set(SetOp("counter", b"0"))
        conflicts = await _cas_increments(stores, "counter", workers=8, each=25)
        assert await value_of(stores[1], "counter") == b"200"
        assert conflicts > 0  # they did race
    finally:
        for store in stores:
            await store.close()


_CAS_PROCESS = """
import asyncio, sys
from statecar_sidecar.stores.sqlite import SQLiteStore
from statecar_sidecar.stores.base import SetOp
from statecar_sidecar.stores.errors import ETagMismatchError

async def main(path, n):
    store = await SQLiteStore.open({"connectionString": path, "busyTimeout": "10s"})
    done = 0
    while done < n:
        item = await store.get("counter")
        try:
            await store.set(SetOp("counter", str(int(item.value) + 1).encode(), etag=item.etag))
        except ETagMismatchError:
            continue
        done += 1
    await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_two_sqlite_processes_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.db")
    store = await SQLiteStore.open({"connectionString": path})
    try:
        await store.set(SetOp("counter", b"0"))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO / "sidecar"), str(REPO / "contract")]),
        }
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _CAS_PROCESS, path, "150", env=env
            )
            for _ in range(2)
        ]
        assert [await proc.wait() for proc in procs] == [0, 0]
        assert await value_of(store, "counter") == b"300"
    finally:
        await store.close()


async def test_two_postgresql_stores_lose_no_update(postgres: pg_server.PgServer) -> None:
    table = _table()
    stores = [
        await PostgreSQLStore.open({"connectionString": postgres.dsn, "tableName": table})
        for _ in range(2)
    ]
    try:
        await stores[0].set(SetOp("counter", b"0"))
        conflicts = await _cas_increments(stores, "counter", workers=8, each=25)
        assert await value_of(stores[1], "counter") == b"200"
        assert conflicts > 0
    finally:
        for store in stores:
            await store.close()


async def test_concurrent_first_writes_have_one_winner(store: StateStore) -> None:
    async def create(n: int) -> bool:
        try:
            await store.set(SetOp("once", str(n).encode(), first_write=True))
        except ETagMismatchError:
            return False
        return True

    wins = await asyncio.gather(*(create(n) for n in range(10)))
    assert sum(wins) == 1
    assert await value_of(store, "once") == str(wins.index(True)).encode()


# ---------------------------------------------------------------------------------------------
# Query.

DOCS: dict[str, object] = {
    "a": {"n": 1, "s": "x", "tags": {"t": True}},
    "b": {"n": 2.5, "s": "y"},
    "c": {"n": 10, "s": "é"},
    "d": {"n": "10", "s": None},
    "e": {"other": 1},
    "f": [1, 2],
    "g": {"n": 1.0000000000000002, "s": "x"},
}
QUERIES: list[dict[str, Any]] = [
    {},
    {"filter": {"EQ": {"s": "x"}}},
    {"filter": {"NEQ": {"s": "x"}}, "sort": [{"key": "n", "order": "DESC"}]},
    {"filter": {"OR": [{"GT": {"n": 1}}, {"IN": {"s": ["y", "é"]}}]}, "sort": [{"key": "n"}]},
    {"filter": {"AND": [{"GTE": {"n": 1}}, {"LT": {"n": 10}}]}},
    {"filter": {"EQ": {"tags.t": True}}},
    {"sort": [{"key": "s"}], "page": {"limit": 2}},
    {"sort": [{"key": "s"}], "page": {"limit": 2, "token": "2"}},
    {"filter": {"EQ": {"s": "nul\u0000char"}}},  # PostgreSQL cannot compare it: evaluated here
]


async def _fill(store: StateStore, prefix: str, *, with_expired: bool = False) -> None:
    await store.set_many([SetOp(prefix + k, json.dumps(v).encode()) for k, v in DOCS.items()])
    await store.set(SetOp("other||a", b'{"s": "x"}'))  # another prefix: never returned
    if with_expired:
        await store.set(SetOp(prefix + "expired", b'{"s": "x"}', ttl=1))


@pytest.fixture(scope="module", params=BACKENDS)
async def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """A backend and the memory store holding the same documents (one of them expired)."""
    store = await open_backend(request.param, request, tmp_path_factory.mktemp("query"))
    reference = MemoryStore()
    try:
        for backend in (store, reference):
            await _fill(backend, "app||", with_expired=True)
        await asyncio.sleep(1.1)
        yield store, reference
    finally:
        await store.close()


@pytest.mark.parametrize("document", QUERIES, ids=json.dumps)
async def test_query_matches_the_memory_store(
    filled: tuple[StateStore, StateStore], document: dict[str, Any]
) -> None:
    store, reference = filled
    query = parse_query(document)
    got = await store.query(query, key_prefix="app||")
    want = await reference.query(query, key_prefix="app||")
    assert [(r.key, r.data, r.etag != "") for r in got.results] == [
        (r.key, r.data, True) for r in want.results
    ]
    assert got.token == want.token


async def test_postgresql_query_runs_in_sql_and_falls_back_for_unreadable_values(
    postgres: pg_server.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await PostgreSQLStore.open({"connectionString": postgres.dsn, "tableName": _table()})
    try:
        await _fill(store, "app||")
        calls: list[int] = []
        real_run_query = postgresql_module.run_query

        def counting_run_query(*args: Any) -> Any:
            calls.append(1)
            return real_run_query(*args)

        monkeypatch.setattr(postgresql_module, "run_query", counting_run_query)
        query = parse_query({"filter": {"EQ": {"s": "x"}}, "sort": [{"key": "n"}]})
        page = await store.query(query, key_prefix="app||")
        assert [r.key for r in page.results] == ["a", "g"]
        assert calls == []  # filtered, sorted and paged by PostgreSQL
        # A value jsonb cannot read (a \u0000 escape, which JSON allows) fails the statement;
        # the store then evaluates the query itself, skipping nothing run_query would keep.
        await store.set(SetOp("app||z", b'{"s": "x", "t": "\\u0000"}'))
        page = await store.query(query, key_prefix="app||")
        assert [r.key for r in page.results] == ["a", "g", "z"]
        assert calls == [1]
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------
# Differential property test: the same op sequence on the memory store and on each backend
# gives the same outcomes and the same final state.

KEYS = ["a", "b", "c"]
ETAG_KINDS = ["none", "current", "stale", "unknown", "invalid"]

op_spec = st.tuples(
    st.sampled_from(["set", "delete"]),
    st.sampled_from(KEYS),
    st.sampled_from(ETAG_KINDS),
    st.booleans(),  # first-write
)
step_spec = st.one_of(
    st.tuples(st.just("single"), op_spec),
    st.tuples(st.sampled_from(["transaction", "save-many"]), st.lists(op_spec, max_size=4)),
)


class _Tracked:
    """A store plus the ETags it has issued per key, to turn ETag kinds into its ETags."""

    def __init__(self, store: StateStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace
        self.issued: dict[str, list[str]] = {key: [] for key in KEYS}

    async def note(self) -> None:
        for key in KEYS:
            item = await self.store.get(self.namespace + key)
            if item is not None and item.etag not in self.issued[key]:
                self.issued[key].append(item.etag)

    async def op(self, spec: tuple[str, str, str, bool], n: int) -> Operation:
        action, key, kind, first_write = spec
        current = await self.store.get(self.namespace + key)
        stale = [e for e in self.issued[key] if current is None or e != current.etag]
        etag = {
            "none": None,
            "current": current.etag if current else None,
            "stale": stale[0] if stale else None,
            "unknown": "42",
            "invalid": "not-an-etag",
        }[kind]
        if action == "set":
            return SetOp(self.namespace + key, f'{{"n": {n}}}'.encode(), etag, first_write)
        return DeleteOp(self.namespace + key, etag, first_write)

    async def run(self, step: tuple[str, Any], n: int) -> object:
        how, payload = step
        try:
            if how == "single":
                op = await self.op(payload, n)
                await (self.store.set(op) if isinstance(op, SetOp) else self.store.delete(op))
                outcome: object = "ok"
            elif how == "transaction":
                await self.store.transact([await self.op(spec, n) for spec in payload])
                outcome = "ok"
            else:
                ops = [await self.op(spec, n) for spec in payload if spec[0] == "set"]
                results = await self.store.set_many([op for op in ops if isinstance(op, SetOp)])
                outcome = [type(r).__name__ if r else None for r in results]
        except TransactionError as exc:
            outcome = ("TransactionError", exc.index, type(exc.cause).__name__)
        except StoreError as exc:
            outcome = type(exc).__name__
        await self.note()
        return outcome

    async def state(self) -> list[bytes | None]:
        items = await self.store.bulk_get([self.namespace + key for key in KEYS])
        return [item.value if item else None for item in items]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step_spec, min_size=1, max_size=6))
@pytest.mark.parametrize("kind", BACKENDS)
def test_backends_agree_with_the_memory_store(
    kind: str, steps: list[tuple[str, Any]], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async def check() -> None:
        namespace = uuid.uuid4().hex + "/"
        store = await open_backend(kind, request, tmp_path, tableName="differential")
        try:
            ours, reference = _Tracked(store, namespace), _Tracked(MemoryStore(), namespace)
            for n, step in enumerate(steps):
                want = await reference.run(step, n)
                got = await ours.run(step, n)
                assert got == want, f"step {n}: {step}"
                assert await ours.state() == await reference.state(), f"after step {n}: {step}"
        finally:
            await store.close()

    asyncio.run(check())


# ---------------------------------------------------------------------------------------------
# SQLite specifics.


async def test_sqlite_connection_strings(tmp_path: Path) -> None:
    uri = f"file:{tmp_path / 'u.db'}?mode=rwc&_txlock=immediate&_pragma=cache_size(-4000)"
    for metadata in (
        {"connectionString": uri, "busyTimeout": "500ms", "timeout": "5s"},
        {"connectionString": ":memory:", "tableName": "custom_1"},
        {"connectionString": str(tmp_path / "sub" / "dir" / "x.db"), "disableWAL": "true"},
    ):
        store = await SQLiteStore.open(metadata)
        try:
            await store.set(SetOp("k", b"1"))
            assert await value_of(store, "k") == b"1"
            await store.ping()
        finally:
            await store.close()
    assert (tmp_path / "u.db").exists()
    assert (tmp_path / "sub" / "dir" / "x.db").exists()


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"connectionString": ""}, "needs connectionString"),
        ({"connectionString": "file:x.db?_pragma=busy_timeout(10)"}, "busyTimeout"),
        ({"connectionString": "file:x.db?_pragma=journal_mode(WAL)"}, "disableWAL"),
        ({"connectionString": ":memory:", "tableName": "bad name"}, "tableName"),
        ({"connectionString": ":memory:", "busyTimeout": "soon"}, "busyTimeout"),
        ({"connectionString": ":memory:", "timeout": "0.5s"}, "at least 1s"),
    ],
)
async def test_sqlite_bad_metadata(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        await SQLiteStore.open(metadata)


async def test_sqlite_refuses_a_daprd_table(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "dapr.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT, is_binary BOOLEAN,"
            " etag TEXT, expiration_time TIMESTAMP, update_time TIMESTAMP)"
        )
    with pytest.raises(StoreError, match="not created by statecar"):
        await SQLiteStore.open({"connectionString": str(path)})


async def test_sqlite_strong_writes_sync_the_wal(tmp_path: Path) -> None:
    store = await SQLiteStore.open({"connectionString": str(tmp_path / "s.db")})

    def synchronous() -> int:
        conn = store._conn
        assert conn is not None
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])

    try:
        assert await store._call(synchronous) == 1  # NORMAL
        await store.set(SetOp("k", b"1", strong=True))
        assert await store._call(synchronous) == 2  # FULL
        await store.transact([SetOp("k", b"2")])
        assert await store._call(synchronous) == 1

        def journal_mode() -> str:
            conn = store._conn
            assert conn is not None
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])

        assert await store._call(journal_mode) == "wal"
    finally:
        await store.close()


async def test_sqlite_locked_past_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "s.db"
    store = await SQLiteStore.open({"connectionString": str(path), "busyTimeout": "200ms"})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="busyTimeout"):
            await store.set(SetOp("k", b"1"))
        assert time.monotonic() - started < 2
        assert await store.get("k") is None  # reads still work (WAL)
        holder.execute("ROLLBACK")
        await store.set(SetOp("k", b"1"))
    finally:
        holder.close()
        await store.close()


async def test_sqlite_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = await SQLiteStore.open({"connectionString": str(tmp_path / "s.db")})
    await store.close()
    await store.close()
    with pytest.raises(StoreUnavailableError):
        await store.get("k")


async def test_sqlite_keys_with_nul_and_prefix_ranges(tmp_path: Path) -> None:
    store = await SQLiteStore.open({"connectionString": str(tmp_path / "s.db")})
    try:
        for key in ["p\x00q", "p\U0010ffffz", "p\ud7ffz", "p\ue000", "q"]:
            await store.set(SetOp(key, b"1"))
        assert await value_of(store, "p\x00q") == b"1"
        page = await store.query(parse_query({}), key_prefix="p")
        assert [r.key for r in page.results] == ["\x00q", "\ud7ffz", "\ue000", "\U0010ffffz"]
    finally:
        await store.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL specifics.


async def test_postgresql_connection_string_forms(postgres: pg_server.PgServer) -> None:
    forms = [
        f"{postgres.dsn}?sslmode=disable&connect_timeout=3&pool_max_conns=2"
        "&application_name=orders",
        f"host={postgres.host} port={postgres.port} user={postgres.user}"
        f" dbname={postgres.database} connect_timeout=3 application_name='my app'",
    ]
    for dsn in forms:
        store = await PostgreSQLStore.open({"connectionString": dsn, "tableName": _table()})
        try:
            await store.set(SetOp("k", b"1"))
            rows = await store._fetch(
                "SELECT current_setting('application_name'), current_setting('synchronous_commit')"
            )
            # The test server runs with synchronous_commit=off: eventual must not be weaker
            # than a local flush.
            assert rows[0][1] == "local"
            assert rows[0][0] in ("orders", "my app")
        finally:
            await store.close()


def test_postgresql_keyword_value_parsing() -> None:
    target = postgresql_module._parse_connection_string(
        r"host=db.example port=6543 user=app password='p w\'x' dbname=orders"
        " options='-c search_path=s1' pool_max_conns=3"
    )
    assert target.label == "db.example:6543/orders"
    assert target.password == "p w'x"
    assert target.max_size == 3
    assert target.server_settings == {"search_path": "s1"}
    assert "password=p%20w%27x" in target.dsn
    url = postgresql_module._parse_connection_string(
        "postgres://u:s%40cret@[::1]:7000/db?sslmode=require&pool_min_conns=1"
    )
    assert (url.label, url.password) == ("[::1]:7000/db", "s@cret")
    assert "pool_min_conns" not in url.dsn


async def test_postgresql_unreachable_names_host_port_without_password() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        await PostgreSQLStore.open(
            {
                "connectionString": f"postgresql://app:hunter2secret@127.0.0.1:{port}/db",
                "timeoutInSeconds": "2",
            }
        )
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


async def test_postgresql_refuses_a_daprd_table(postgres: pg_server.PgServer) -> None:
    table = _table()
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute(
            f"CREATE TABLE {table} (key text PRIMARY KEY, value jsonb, isbinary boolean,"
            " insertdate timestamptz, updatedate timestamptz, etag xid)"
        )
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="not created by statecar"):
        await PostgreSQLStore.open({"connectionString": postgres.dsn, "tableName": table})


async def test_postgresql_sidecars_starting_together(postgres: pg_server.PgServer) -> None:
    table = "together_" + uuid.uuid4().hex[:8]
    stores = await asyncio.gather(
        *(
            PostgreSQLStore.open({"connectionString": postgres.dsn, "tableName": f"public.{table}"})
            for _ in range(6)
        )
    )
    try:
        await stores[0].set(SetOp("k", b"1"))
        assert await value_of(stores[5], "k") == b"1"
    finally:
        for store in stores:
            await store.close()


async def test_postgresql_rejects_nul_in_keys_clearly(postgres: pg_server.PgServer) -> None:
    store = await PostgreSQLStore.open({"connectionString": postgres.dsn, "tableName": _table()})
    try:
        assert await store.get("a\x00b") is None
        assert await store.bulk_get(["a\x00b"]) == [None]
        with pytest.raises(StoreError, match="U\\+0000"):
            await store.set(SetOp("a\x00b", b"1"))
        assert await store.bulk_get(["\ud800", "a"]) == [None, None]
        with pytest.raises(StoreError, match="lone surrogate"):
            await store.transact([SetOp("ok", b"1"), SetOp("\ud800", b"1")])
        assert await store.get("ok") is None
    finally:
        await store.close()


async def test_postgresql_pool_is_bounded_and_retires_idle_connections(
    postgres: pg_server.PgServer,
) -> None:
    name = "reaper-" + uuid.uuid4().hex[:8]
    store = await PostgreSQLStore.open(
        {
            "connectionString": f"{postgres.dsn}?application_name={name}",
            "tableName": _table(),
            "maxConns": "3",
            "connectionMaxIdleTime": "1",
        }
    )
    admin = await asyncpg.connect(postgres.dsn)

    async def sessions() -> int:
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
        )
        return int(count)

    try:
        await store.set(SetOp("k", b"1"))
        await asyncio.gather(*(store.get("k") for _ in range(50)))
        assert await sessions() == 3  # never more than maxConns
        await asyncio.sleep(1.5)
        assert await sessions() == 1  # the others retired; one stays warm
        assert await value_of(store, "k") == b"1"
    finally:
        await admin.close()
        await store.close()


# A server this module owns: stopped, frozen and restarted by the tests below.


@dataclass
class OwnPostgres:
    bin_dir: Path
    root: Path
    port: int
    account: pwd.struct_passwd | None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://statecar@127.0.0.1:{self.port}/postgres"

    def _as_account(self) -> dict[str, Any]:
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid}

    def start(self) -> None:
        log = self.root / "postgres.log"
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    f"-D{self.root / 'data'}",
                    "--listen_addresses=127.0.0.1",
                    f"--port={self.port}",
                    f"--unix_socket_directories={self.root}",
                    "--fsync=off",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                **self._as_account(),
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            with log.open("rb") as read:
                read.seek(offset)
                if b"ready to accept connections" in read.read():
                    return
            time.sleep(0.05)
        raise RuntimeError(log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: clients are disconnected
            self.proc.wait(timeout=30)
        self.proc = None

    def _pids(self) -> list[int]:
        assert self.proc is not None
        pids = [self.proc.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) == self.proc.pid:
                    pids.append(int(stat.parent.name))
        return pids

    def signal_all(self, signum: int) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    bin_dir = pg_server.find_pg_bin()
    if bin_dir is None:
        unavailable("initdb/postgres not found")
    account = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        for name in ("postgres", "statecar-pg"):
            with contextlib.suppress(KeyError):
                account = pwd.getpwnam(name)
                break
        else:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "statecar-pg",
                ],
                check=True,
            )
            account = pwd.getpwnam("statecar-pg")
    root = Path(tempfile.mkdtemp(prefix="statecar-own-pg-"))
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = OwnPostgres(bin_dir, root, port, account)
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            f"--pgdata={root / 'data'}",
            "--username=statecar",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        cwd=root,
        **server._as_account(),
    )
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.signal_all(signal.SIGCONT)
        server.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


async def test_postgresql_down_then_back(own_postgres: OwnPostgres) -> None:
    store = await PostgreSQLStore.open(
        {"connectionString": own_postgres.dsn, "tableName": _table(), "timeoutInSeconds": "2"}
    )
    try:
        await store.set(SetOp("k", b"1"))
        await asyncio.to_thread(own_postgres.stop)
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get("k"),
            lambda: store.set(SetOp("k", b"2")),
            store.ping,
        ]
        for attempt in attempts:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as caught:
                await attempt()
            assert time.monotonic() - started < 2.5
            assert f"127.0.0.1:{own_postgres.port}" in str(caught.value)
        await asyncio.to_thread(own_postgres.start)
        # Recovered without reopening, on the first request.
        assert await value_of(store, "k") == b"1"
        await store.set(SetOp("k", b"3"))
        assert await value_of(store, "k") == b"3"
    finally:
        await store.close()


async def test_postgresql_restart_between_requests_is_invisible(own_postgres: OwnPostgres) -> None:
    store = await PostgreSQLStore.open(
        {"connectionString": own_postgres.dsn, "tableName": _table(), "timeoutInSeconds": "2"}
    )
    try:
        await store.set(SetOp("k", b"1"))
        # In threads, so the event loop runs meanwhile, as it does in a sidecar: the server's
        # goodbye to the idle pooled connection is read, and that connection is not reused.
        await asyncio.to_thread(own_postgres.stop)
        await asyncio.to_thread(own_postgres.start)
        await store.set(SetOp("k", b"2"))
        assert await value_of(store, "k") == b"2"
    finally:
        await store.close()


async def test_postgresql_hung_server_times_out_then_recovers(own_postgres: OwnPostgres) -> None:
    store = await PostgreSQLStore.open(
        {"connectionString": own_postgres.dsn, "tableName": _table(), "timeoutInSeconds": "1"}
    )
    try:
        await store.set(SetOp("k", b"1"))
        own_postgres.signal_all(signal.SIGSTOP)
        try:
            attempts: list[Callable[[], Awaitable[object]]] = [
                lambda: store.get("k"),
                lambda: store.set(SetOp("k", b"2")),
            ]
            for attempt in attempts:
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError, match="did not answer within 1s"):
                    await attempt()
                assert 0.9 < time.monotonic() - started < 2
        finally:
            own_postgres.signal_all(signal.SIGCONT)
        await store.set(SetOp("k", b"3"))
        assert await value_of(store, "k") == b"3"
    finally:
        await store.close()


async def test_postgresql_strong_writes_wait_for_synchronous_standbys(
    own_postgres: OwnPostgres,
) -> None:
    admin = await asyncpg.connect(own_postgres.dsn)
    store = await PostgreSQLStore.open(
        {"connectionString": own_postgres.dsn, "tableName": _table(), "timeoutInSeconds": "1"}
    )
    try:
        await store.set(SetOp("k", b"0"))
        # A standby that never connects: a commit under remote_apply waits for it forever.
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'ghost'")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await store.set(SetOp("e", b"1"))  # eventual: the primary's flush is enough
        await store.transact([SetOp("e", b"2"), SetOp("f", b"2")])
        assert time.monotonic() - started < 0.5
        strong_writes: list[Callable[[], Awaitable[None]]] = [
            lambda: store.set(SetOp("s", b"1", strong=True)),
            lambda: store.delete(DeleteOp("k", strong=True)),
            lambda: store.transact([SetOp("t", b"1"), SetOp("u", b"1", strong=True)]),
        ]
        for write in strong_writes:
            started = time.monotonic()
            with pytest.raises(ConsistencyError, match="synchronous standbys"):
                await write()
            assert time.monotonic() - started < 1.5
        # The abandoned commits were cancelled, not left holding their row locks.
        await store.set(SetOp("s", b"2"))
        assert await value_of(store, "s") == b"2"
    finally:
        await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        await store.close()
    # Without synchronous standbys a strong write is just a local commit.
    store = await PostgreSQLStore.open(
        {"connectionString": own_postgres.dsn, "tableName": _table()}
    )
    try:
        await store.set(SetOp("s", b"1", strong=True))
    finally:
        await store.close()
