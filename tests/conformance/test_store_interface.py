"""
One behavioural suite over the `StateStore` interface, run against every backend: memory, SQLite,
a real Redis and a real PostgreSQL (the `store` fixture, opened through the registry as the
sidecar opens them), as components-contrib's `tests/conformance/state` does for daprd's stores.

Every backend must behave like the reference memory store: every row of docs/state-api.md's
concurrency table on every write path (single op, one-op transaction, multi-op transaction,
multi-item save), atomic ordered transactions, TTL, byte-exact values, bulk order, ETags that
never repeat, one winner among concurrent first writes, queries that answer as the memory store
does, and a differential property test against `MemoryStore`. Where a backend answers
differently at this interface, `QUIRKS` names it (contrib's tests.yml); nothing is skipped
silently. The same behaviour through HTTP is `test_state_api.py`; what only one backend has
(SQL sweeps, connection strings, a server that goes away) is in the backend's own tests.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conformance import conftest
from tests.support import pg_server
from tests.support.redis_server import RedisProcess

from statecar_sidecar.stores.base import DeleteOp, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ETagInvalidError,
    ETagMismatchError,
    StoreError,
    TransactionError,
)
from statecar_sidecar.stores.memory import MemoryStore
from statecar_sidecar.stores.postgresql import PostgreSQLStore
from statecar_sidecar.stores.postgresql import store as postgresql_module
from statecar_sidecar.stores.query import parse_query, run_query_async
from statecar_sidecar.stores.registry import open_store

pytestmark = pytest.mark.conformance

#: This tier calls stores with bare keys (no app prefix), so its multi-key transactions span
#: Redis Cluster slots: on a cluster they are refused by design (docs/state-api.md, "Redis
#: Cluster"). The cluster runs the HTTP tier with app-prefixed keys, and its own tests in
#: test_redis_cluster.py.
BACKENDS = tuple(b for b in conftest.BACKENDS if b != "redis-cluster")

#: The conformance tier's backend names -> the component type the registry opens.
COMPONENT_TYPES = {
    "memory": "state.in-memory",
    "sqlite": "state.sqlite",
    "redis": "state.redis",
    "postgres": "state.postgresql",
    "sqlite-dapr": "state.sqlite",
    "postgres-dapr-v1": "state.postgresql",
    "postgres-dapr-v2": "state.postgresql",
}
#: The metadata that picks daprd's layouts (a Dapr `Component` gets it from its spec.version).
LAYOUTS = {
    "sqlite-dapr": "dapr",
    "postgres-dapr-v1": "dapr-v1",
    "postgres-dapr-v2": "dapr-v2",
}
#: A SetOp with a negative ttl expires at once; on the SQL stores it means "no expiry", as 0 does.
#: The HTTP API turns ttlInSeconds -1 into None before a store sees it, so no client can tell.
NEGATIVE_TTL_EXPIRES = "negative-ttl-expires"
#: A transaction's ETags are all validated before any op is checked, so an invalid ETag is
#: reported (400) even when an earlier op's ETag mismatches (409). Nothing is written either way.
ETAGS_VALIDATED_FIRST = "etags-validated-first"
#: ETags have no order: daprd's layouts issue `xmin` (v1: shared by one transaction's keys,
#: wrapping at 2**32) or random UUIDs (v2, SQLite), not growing numbers (docs/state-api.md).
ETAGS_UNORDERED = "etags-unordered"
#: The form of a well-formed ETag on each backend (anything else is invalid, HTTP 400).
UUID_ETAGS = frozenset({"sqlite-dapr", "postgres-dapr-v2"})
#: What a backend does differently at this interface (contrib's tests.yml quirks): each is a gap
#: kept in sight, asserted as it is, never skipped.
QUIRKS: dict[str, frozenset[str]] = {
    "memory": frozenset({NEGATIVE_TTL_EXPIRES}),
    "sqlite": frozenset(),
    "redis": frozenset({NEGATIVE_TTL_EXPIRES, ETAGS_VALIDATED_FIRST}),
    "postgres": frozenset(),
    "sqlite-dapr": frozenset({ETAGS_UNORDERED}),
    "postgres-dapr-v1": frozenset({ETAGS_UNORDERED}),
    "postgres-dapr-v2": frozenset({ETAGS_UNORDERED}),
}
# The sidecar's components use db 0 of the same server; this suite keeps to its own.
REDIS_DB = 9  # emptied before each test
REDIS_QUERY_DB = 10  # the query documents, filled once per module


# ---------------------------------------------------------------------------------------------
# Fixtures.


def _table() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def _empty_redis_db(server: RedisProcess, db: int) -> None:
    with redis.Redis(host=server.host, port=server.port, db=db) as raw:
        raw.flushdb()


async def open_backend(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, **metadata: str
) -> StateStore:
    """A fresh store on backend `kind`: its own file, table or (emptied by the caller) db."""
    if kind in LAYOUTS:
        metadata.setdefault("layout", LAYOUTS[kind])
    if kind.startswith("sqlite"):
        metadata.setdefault("connectionString", str(tmp_path / "state.db"))
    elif kind == "redis":
        server: RedisProcess = request.getfixturevalue("redis_primary")
        metadata.setdefault("redisHost", server.address)
        metadata.setdefault("redisDB", str(REDIS_DB))
    elif kind.startswith("postgres"):
        postgres: pg_server.PgServer = request.getfixturevalue("postgres")
        metadata.setdefault("connectionString", postgres.dsn)
        if kind == "postgres-dapr-v2":
            # daprd's v2 names its table `<tablePrefix>state`.
            table = metadata.pop("tableName", None) or _table()
            metadata.setdefault("tablePrefix", table + "_")
        else:
            metadata.setdefault("tableName", _table())  # a fresh table per test
    return await open_store(COMPONENT_TYPES[kind], metadata)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """The store under test, once per backend (overrides conftest's `store`, a backend name)."""
    if request.param == "redis":
        _empty_redis_db(request.getfixturevalue("redis_primary"), REDIS_DB)
    opened = await open_backend(request.param, request, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


def quirk(request: pytest.FixtureRequest, name: str) -> bool:
    """Whether the backend the `store` fixture opened has the quirk `name` (see QUIRKS)."""
    return name in QUIRKS[request.node.callspec.params["store"]]


def well_formed(request: pytest.FixtureRequest, n: int) -> str:
    """A well-formed ETag of the backend under test, the same for the same `n` (below 2**32)."""
    if request.node.callspec.params["store"] in UUID_ETAGS:
        return str(uuid.UUID(int=n, version=4))
    return str(n)


def other_than(request: pytest.FixtureRequest, etag: str) -> str:
    """A well-formed ETag of the backend under test that is not `etag`."""
    if request.node.callspec.params["store"] in UUID_ETAGS:
        return str(uuid.uuid4())
    return str(int(etag) + 7)


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
# The concurrency table (docs/state-api.md, "Concurrency and ETags"), every row, every write path.


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
async def test_concurrency_table(
    store: StateStore, row: Row, path: str, request: pytest.FixtureRequest
) -> None:
    key, bystander = f"k-{uuid.uuid4().hex}", f"b-{uuid.uuid4().hex}"
    before = None
    if row.state == "present":
        await store.set(SetOp(key, b'"old"'))
        before = await store.get(key)
    given = {
        "none": None,
        "same": before.etag if before else None,
        # A well-formed ETag that is not the key's (when absent: any well-formed one).
        "other": other_than(request, before.etag) if before else well_formed(request, 1234567),
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
            assert before is None or after.etag != before.etag
            if before is not None and not quirk(request, ETAGS_UNORDERED):
                assert int(after.etag) > int(before.etag)
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


async def test_empty_etag_means_none_and_huge_etag_mismatches(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    await store.set(SetOp("k", b"1", etag=""))
    await store.set(SetOp("k", b"2", etag=""))  # last-write without ETag
    # The largest well-formed ETag: beyond bigint; daprd's v1 xmin is 32 bits; a UUID.
    largest = {"postgres-dapr-v1": str(2**32 - 1)}.get(
        request.node.callspec.params["store"], "9" * 19
    )
    if request.node.callspec.params["store"] in UUID_ETAGS:
        largest = "ffffffff-ffff-4fff-bfff-ffffffffffff"
    with pytest.raises(ETagMismatchError):
        await store.set(SetOp("k", b"3", etag=largest))
    await store.delete(DeleteOp("k", etag=""))
    assert await store.get("k") is None


# ---------------------------------------------------------------------------------------------
# Transactions.


async def test_transaction_create_then_update_by_etag_fails(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    # The created key's new ETag is unknowable inside the transaction (as in the memory store),
    # even when the client guesses the next number (or, with UUIDs, the probe's own ETag).
    await store.set(SetOp("probe", b"0"))
    probe = await etag_of(store, "probe")
    guess = probe if request.node.callspec.params["store"] in UUID_ETAGS else str(int(probe) + 1)
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


async def test_transaction_reports_the_first_failing_op(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    await store.set(SetOp("a", b"1"))
    # A mismatch at 1 comes before the invalid ETag at 2 ...
    with pytest.raises(TransactionError) as caught:
        await store.transact(
            [
                SetOp("x", b"1"),
                SetOp("a", b"2", etag=well_formed(request, 12345)),
                SetOp("y", b"1", etag="bad"),
            ]
        )
    if quirk(request, ETAGS_VALIDATED_FIRST):
        assert caught.value.index == 2
        assert isinstance(caught.value.cause, ETagInvalidError)
    else:
        assert caught.value.index == 1
        assert isinstance(caught.value.cause, ETagMismatchError)
    # ... and the invalid ETag is reported when everything before it passes.
    with pytest.raises(TransactionError) as caught:
        await store.transact([SetOp("x", b"1"), SetOp("a", b"2"), SetOp("y", b"1", etag="bad")])
    assert caught.value.index == 2
    assert isinstance(caught.value.cause, ETagInvalidError)
    assert await store.bulk_get(["x", "y"]) == [None, None]
    assert await value_of(store, "a") == b"1"


async def test_multi_item_save_is_not_atomic(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    await store.set(SetOp("a", b"1"))
    results = await store.set_many(
        [
            SetOp("a", b"2", etag=well_formed(request, 777)),  # mismatch: skipped
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


async def test_ttl_expires_and_a_resave_clears_it(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    negative_expires = quirk(request, NEGATIVE_TTL_EXPIRES)
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
    for key in ("kept", "zero") if negative_expires else ("kept", "zero", "minus"):
        assert (await item_of(store, key)).expire_at is None
    if negative_expires:
        assert await store.get("minus") is None
    await asyncio.sleep(1.3)
    assert await store.get("short") is None
    assert (await store.bulk_get(["short", "kept"]))[0] is None
    page = await store.query(parse_query({}), key_prefix="")
    expected = ["kept", "zero"] if negative_expires else ["kept", "minus", "zero"]
    assert [r.key for r in page.results] == expected
    # An expired key is absent for the concurrency rule too.
    with pytest.raises(ETagMismatchError):
        await store.set(SetOp("short", b"2", etag=well_formed(request, 1)))
    await store.set(SetOp("short", b"3", first_write=True))
    assert await value_of(store, "short") == b"3"


async def test_a_transaction_mixing_every_kind_of_op_applies_each_as_given(
    store: StateStore,
) -> None:
    # Each op carries a different subset of ETag, first-write and TTL, so a backend that packs
    # them positionally (Redis's TRANSACT passes only the fields an op has) must keep every op's
    # fields with that op: a shifted field would refuse a matching ETag or store the wrong value.
    await store.set(SetOp("etagged", b'"e0"'))
    await store.set(SetOp("gone", b'"g0"'))
    etagged, gone = await etag_of(store, "etagged"), await etag_of(store, "gone")
    await store.transact(
        [
            SetOp("expiring", b'"x1"', ttl=100),
            SetOp("etagged", b'"e1"', etag=etagged),
            DeleteOp("gone", etag=gone),
            SetOp("fresh", b'"f1"', first_write=True, ttl=200),
            DeleteOp("never-was"),
            SetOp("plain", b'"p1"'),
        ]
    )
    assert [await value_of(store, k) for k in ("expiring", "etagged", "fresh", "plain")] == [
        b'"x1"',
        b'"e1"',
        b'"f1"',
        b'"p1"',
    ]
    assert await store.bulk_get(["gone"]) == [None]
    assert (await item_of(store, "expiring")).expire_at is not None
    assert (await item_of(store, "fresh")).expire_at is not None
    assert (await item_of(store, "plain")).expire_at is None


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


# ---------------------------------------------------------------------------------------------
# ETags.


async def test_etags_never_repeat_across_delete_and_recreate(
    store: StateStore, request: pytest.FixtureRequest
) -> None:
    seen: list[str] = []
    for _ in range(30):
        await store.set(SetOp("k", b"1"))
        await store.set(SetOp("k", b"2"))
        seen.append(await etag_of(store, "k"))
        await store.delete(DeleteOp("k"))
    assert len(set(seen)) == len(seen)
    if not quirk(request, ETAGS_UNORDERED):
        assert seen == sorted(seen, key=int)
    # A stale ETag (read before a delete) never matches the re-created key.
    await store.set(SetOp("k", b"3"))
    for stale in seen:
        with pytest.raises(ETagMismatchError):
            await store.set(SetOp("k", b"4", etag=stale))


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
    metadata: dict[str, str] = {}
    if request.param == "redis":
        _empty_redis_db(request.getfixturevalue("redis_primary"), REDIS_QUERY_DB)
        metadata["redisDB"] = str(REDIS_QUERY_DB)
    store = await open_backend(request.param, request, tmp_path_factory.mktemp("query"), **metadata)
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


@pytest.mark.skipif("postgres" not in BACKENDS, reason="STATECAR_TEST_BACKENDS leaves it out")
async def test_postgresql_query_runs_in_sql_and_falls_back_for_unreadable_values(
    postgres: pg_server.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: its queries run as SQL (`postgresql.query_sql`), `run_query_async` the
    # fallback.
    store = await PostgreSQLStore.open({"connectionString": postgres.dsn, "tableName": _table()})
    try:
        await _fill(store, "app||")
        calls: list[int] = []
        real_run_query = run_query_async  # what postgresql_module imported

        async def counting_run_query(*args: Any) -> Any:
            calls.append(1)
            return await real_run_query(*args)

        monkeypatch.setattr(postgresql_module, "run_query_async", counting_run_query)
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

    def __init__(self, store: StateStore, namespace: str, *, unknown: str = "42") -> None:
        self.store = store
        self.namespace = namespace
        self.unknown = unknown  # well-formed, never issued
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
            "unknown": self.unknown,
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


def _validated_first(step: tuple[str, Any], outcome: object) -> object:
    """The memory store's `outcome` as a store with ETAGS_VALIDATED_FIRST reports it."""
    how, payload = step
    kinds = [spec[2] for spec in payload] if how == "transaction" else []
    if "invalid" in kinds:  # "invalid" is the only kind whose ETag is malformed
        return ("TransactionError", kinds.index("invalid"), "ETagInvalidError")
    return outcome


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
        # Only the SQL backends have a table (the others refuse the setting, as parse_component).
        sql = kind.startswith(("sqlite", "postgres"))
        # One table per layout: each layout refuses a table in another's.
        name = "differential" + ("_" + kind.replace("-", "_") if kind in LAYOUTS else "")
        table = {"tableName": name} if sql else {}
        store = await open_backend(kind, request, tmp_path, **table)
        try:
            unknown = str(uuid.UUID(int=42, version=4)) if kind in UUID_ETAGS else "42"
            ours = _Tracked(store, namespace, unknown=unknown)
            reference = _Tracked(MemoryStore(), namespace)
            for n, step in enumerate(steps):
                want = await reference.run(step, n)
                got = await ours.run(step, n)
                if ETAGS_VALIDATED_FIRST in QUIRKS[kind]:
                    want = _validated_first(step, want)
                assert got == want, f"step {n}: {step}"
                assert await ours.state() == await reference.state(), f"after step {n}: {step}"
        finally:
            await store.close()

    asyncio.run(check())
