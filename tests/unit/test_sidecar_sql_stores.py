"""
What only the SQL backends (`stores.sqlite`, `stores.postgresql`) have, against the real engines:
SQLite files in a temporary directory, and throwaway PostgreSQL servers (`pg_server` for the
shared one, plus one this module stops, freezes and restarts).

The TTL sweep, ETags that keep growing in a reopened file, no lost update when two stores (or
two processes) race on one key, connection strings and metadata, refusing daprd's tables, and
for PostgreSQL synchronous commit for strong writes and a server that stops, hangs and comes
back. What every backend must do alike is tests/conformance/test_store_interface.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tests.support import pg_server
from tests.support.require import unavailable

from statecar_contract.settings import PostgreSQLSettings
from statecar_sidecar.stores.base import DeleteOp, SetOp, StateStore
from statecar_sidecar.stores.errors import (
    ConsistencyError,
    ETagMismatchError,
    StoreError,
    StoreUnavailableError,
)
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


async def etag_of(store: StateStore, key: str) -> str:
    item = await store.get(key)
    assert item is not None, f"{key!r} is missing"
    return item.etag


async def value_of(store: StateStore, key: str) -> bytes | None:
    item = await store.get(key)
    return None if item is None else item.value


# ---------------------------------------------------------------------------------------------
# Both SQL backends: the TTL sweep; SQLite's parameter bound and reopened file; racing stores.


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


async def _cas_increments(stores: Sequence[StateStore], key: str, workers: int, each: int) -> int:
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
        ({"connectionString": ""}, "connectionString: state.sqlite needs it"),
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
    # The store connects with what PostgreSQLSettings parses: `connection.to_url()` plus its
    # server settings, and `maxConns` defaulting to the DSN's pool_max_conns.
    settings = PostgreSQLSettings.from_metadata(
        {
            "connectionString": r"host=db.example port=6543 user=app password='p w\'x'"
            " dbname=orders options='-c search_path=s1' pool_max_conns=3"
        }
    )
    target = settings.connection
    assert target.label == "db.example:6543/orders"
    assert target.password == "p w'x"
    assert settings.max_conns == 3
    assert target.server_settings == {"search_path": "s1"}
    assert "password=p%20w%27x" in target.to_url()
    url = PostgreSQLSettings.from_metadata(
        {"connectionString": "postgres://u:s%40cret@[::1]:7000/db?sslmode=require&pool_min_conns=1"}
    ).connection
    assert (url.label, url.password) == ("[::1]:7000/db", "s@cret")
    assert "pool_min_conns" not in url.to_url()


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
