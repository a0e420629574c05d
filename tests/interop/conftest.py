"""
The interop tier's world: a real daprd v1.18.1 and a real statecar over the same database.

Both sidecars run with the same app id, so they address the same stored keys
(`interop||<key>`), and each test has one write through one sidecar and a read through the
other. What "the same data" means is asserted byte for byte: values, ETags, TTLs.

A backend is one row of `BACKENDS`: a function that takes the session's server (a fixture) and
returns a `Backend`, the component (type, `spec.version`) and metadata each sidecar gets for the
same database (usually the same mapping) and a way to read a stored value's bytes directly,
from daprd's own columns (to check the encrypted format). The rows: Redis, PostgreSQL v1
(jsonb `value` + `isbinary`), PostgreSQL v2 (`spec.version: v2`, bytea `value`) and SQLite
(TEXT `value` + `is_binary`), each on its own table (file) for the session. Every test of the
tier that takes the `backend` fixture runs once per row. Encryption adds a
`secretstores.local.file` secret store and `primaryEncryptionKey`/`secondaryEncryptionKey`
secretKeyRefs to both documents, identically.

statecar runs either as `statecar sidecar --components-path` (`STATECAR_SIDECAR`) or as
`statecar daprd` given exactly the command line daprd was given (`STATECAR_DAPRD`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncpg
import pytest
import redis
import yaml
from tests.interop.sides import STORE, Side
from tests.support import pg_server, redis_server
from tests.support.daprd import DaprdProcess, running_daprd
from tests.support.sidecar import running_sidecar

APP_ID = "interop"
SECRET_STORE = "localsecrets"
#: AES keys in hex, as `openssl rand -hex 32` prints them; the secrets' names are the
#: names daprd tags values with. Test keys, not secrets.
KEYS: Mapping[str, str] = {
    "key-a": "6b3c0e9f3a5d4e1b2c7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796",
    "key-b": "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210",
    # AES-128: daprd takes 16-, 24- and 32-byte keys alike.
    "key-c": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}
StatecarLauncher = Literal["sidecar", "daprd"]
STATECAR_SIDECAR: StatecarLauncher = "sidecar"
STATECAR_DAPRD: StatecarLauncher = "daprd"


@dataclass(frozen=True)
class Backend:
    """One database both sidecars are given, as each one's component metadata names it."""

    name: str
    type: str
    daprd_metadata: Mapping[str, str]
    statecar_metadata: Mapping[str, str]
    #: The bytes the database holds as the value of a stored key (`interop||k`), or None.
    raw_value: Callable[[str], bytes | None]
    #: Whether daprd's store reports `ttlExpireTime` on a read (its Redis store does not:
    #: components-contrib state/redis/redis.go Get returns no metadata).
    daprd_reports_ttl: bool = True
    #: The Component's `spec.version` (`v2` picks daprd's second PostgreSQL layout).
    version: str = "v1"
    #: Whether daprd's store implements `state.Querier` (Redis and PostgreSQL v1 do; v2 and
    #: SQLite do not, components-contrib state/postgresql/v2, state/sqlite). daprd checks that
    #: before encryption (dapr pkg/api/universal/state_query.go). statecar runs queries on every
    #: SQL layout itself.
    daprd_queries: bool = True
    #: Whether daprd stores JSON values as PostgreSQL jsonb, so that what it reads back is
    #: jsonb's rendering (`{"a": 1}`: spaces, keys by length) rather than Go's `json.Marshal`
    #: (PostgreSQL v1, common/component/postgresql/v1/postgresql.go).
    daprd_jsonb: bool = False
    #: Whether daprd can save an empty value over gRPC. PostgreSQL v2 binds the empty (nil)
    #: []byte as NULL into its NOT NULL bytea column and fails the save
    #: (state/postgresql/v2/postgresql.go doSet).
    daprd_saves_empty: bool = True


def _redis_backend(request: pytest.FixtureRequest) -> Backend:
    server: redis_server.RedisProcess = request.getfixturevalue("interop_redis")
    client: redis.Redis = request.getfixturevalue("interop_redis_client")
    metadata = {"redisHost": server.address}

    def raw_value(stored_key: str) -> bytes | None:
        # daprd's layout: one hash per key, the value in field `data`, the ETag in `version`.
        value = client.hget(stored_key, "data")
        assert value is None or isinstance(value, bytes)
        return value

    return Backend("redis", "state.redis", metadata, metadata, raw_value, daprd_reports_ttl=False)


def _postgres_raw(dsn: str, query: str, key: str) -> asyncpg.Record | None:
    async def fetch() -> asyncpg.Record | None:
        conn = await asyncpg.connect(dsn)
        try:
            row: asyncpg.Record | None = await conn.fetchrow(query, key)
            return row
        finally:
            await conn.close()

    return asyncio.run(fetch())


def _postgres_v1_backend(request: pytest.FixtureRequest) -> Backend:
    server: pg_server.PgServer = request.getfixturevalue("postgres")
    table = "interop_v1_" + uuid.uuid4().hex[:8]
    metadata = {
        "connectionString": server.dsn,
        "tableName": table,
        "metadataTableName": table + "_meta",
    }

    def raw_value(stored_key: str) -> bytes | None:
        # daprd's v1 layout (components-contrib common/component/postgresql/v1/postgresql.go):
        # a JSON value is the jsonb itself; any other value is a jsonb string holding its
        # base64, with `isbinary` set.
        query = f"SELECT value #>> '{{}}', value::text, isbinary FROM {table} WHERE key = $1"
        row = _postgres_raw(server.dsn, query, stored_key)
        if row is None:
            return None
        if row[2]:
            return base64.b64decode(row[0], validate=True)
        return str(row[1]).encode()

    return Backend(
        "postgresql-v1", "state.postgresql", metadata, metadata, raw_value, daprd_jsonb=True
    )


def _postgres_v2_backend(request: pytest.FixtureRequest) -> Backend:
    server: pg_server.PgServer = request.getfixturevalue("postgres")
    prefix = "interop_v2_" + uuid.uuid4().hex[:8] + "_"
    metadata = {
        "connectionString": server.dsn,
        "tablePrefix": prefix,
        "metadataTableName": prefix + "meta",
    }

    def raw_value(stored_key: str) -> bytes | None:
        # daprd's v2 layout (components-contrib state/postgresql/v2/postgresql.go): bytea.
        query = f"SELECT value FROM {prefix}state WHERE key = $1"
        row = _postgres_raw(server.dsn, query, stored_key)
        return None if row is None else bytes(row[0])

    return Backend(
        "postgresql-v2",
        "state.postgresql",
        metadata,
        metadata,
        raw_value,
        version="v2",
        daprd_queries=False,
        daprd_saves_empty=False,
    )


def _sqlite_backend(request: pytest.FixtureRequest) -> Backend:
    folder: Path = request.getfixturevalue("tmp_path_factory").mktemp("interop-sqlite")
    path = folder / "state.db"
    metadata = {"connectionString": str(path)}

    def raw_value(stored_key: str) -> bytes | None:
        # daprd's layout (components-contrib state/sqlite/sqlite_dbaccess.go): TEXT `value`,
        # base64 with `is_binary` set for a value that is not JSON. The table is daprd's
        # default, `state`.
        with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
            row = db.execute(
                "SELECT CAST(value AS BLOB), is_binary FROM state WHERE key = ?", (stored_key,)
            ).fetchone()
        if row is None:
            return None
        value = bytes(row[0])
        return base64.b64decode(value, validate=True) if row[1] else value

    return Backend("sqlite", "state.sqlite", metadata, metadata, raw_value, daprd_queries=False)


#: The tier's backends. Adding one is adding a row (and its server fixture).
BACKENDS: Mapping[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "redis": _redis_backend,
    "postgresql-v1": _postgres_v1_backend,
    "postgresql-v2": _postgres_v2_backend,
    "sqlite": _sqlite_backend,
}


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PgServer]:
    """One PostgreSQL server for the tier (each backend row and SQL test has its own tables)."""
    with pg_server.required_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def interop_redis() -> Iterator[redis_server.RedisProcess]:
    with redis_server.running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def interop_redis_client(interop_redis: redis_server.RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=interop_redis.port)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session", params=list(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param](request)


@dataclass(frozen=True)
class Encryption:
    """Which secrets (names of `KEYS`) are the primary and the secondary key."""

    primary: str
    secondary: str | None = None


def component_documents(
    backend_type: str,
    metadata: Mapping[str, str],
    encryption: Encryption | None,
    secrets_file: Path,
    version: str = "v1",
) -> list[dict[str, object]]:
    """The resources folder's documents: the state store (and its secret store when encrypted)."""
    items: list[object] = [{"name": k, "value": v} for k, v in metadata.items()]
    store: dict[str, object] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": STORE},
        "spec": {"type": backend_type, "version": version, "metadata": items},
    }
    if encryption is None:
        return [store]
    for setting, secret in (
        ("primaryEncryptionKey", encryption.primary),
        ("secondaryEncryptionKey", encryption.secondary),
    ):
        if secret is not None:
            items.append({"name": setting, "secretKeyRef": {"name": secret, "key": secret}})
    store["auth"] = {"secretStore": SECRET_STORE}
    secrets: dict[str, object] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": SECRET_STORE},
        "spec": {
            "type": "secretstores.local.file",
            "version": "v1",
            "metadata": [{"name": "secretsFile", "value": str(secrets_file)}],
        },
    }
    return [secrets, store]


@dataclass
class Pair:
    daprd: Side
    statecar: Side
    daprd_process: DaprdProcess


class Interop:
    """Starts daprd and statecar over one backend, each with its own resources folder."""

    def __init__(self, backend: Backend, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.secrets_file = workdir / "secrets.json"
        self.secrets_file.write_text(json.dumps(dict(KEYS)))
        self._starts = 0

    def _folder(self, metadata: Mapping[str, str], encryption: Encryption | None) -> Path:
        self._starts += 1
        folder = self.workdir / f"resources-{self._starts}"
        folder.mkdir()
        documents = component_documents(
            self.backend.type, metadata, encryption, self.secrets_file, self.backend.version
        )
        (folder / "components.yaml").write_text(yaml.safe_dump_all(documents))
        return folder

    @contextlib.contextmanager
    def start(
        self, encryption: Encryption | None = None, statecar: StatecarLauncher = STATECAR_SIDECAR
    ) -> Iterator[Pair]:
        daprd_folder = self._folder(self.backend.daprd_metadata, encryption)
        statecar_folder = self._folder(self.backend.statecar_metadata, encryption)
        with contextlib.ExitStack() as stack:
            daprd = stack.enter_context(running_daprd(daprd_folder, app_id=APP_ID))
            if statecar == STATECAR_DAPRD:
                ours = DaprdProcess(statecar_folder, app_id=APP_ID)
                # Exactly daprd's command line, with statecar in place of the binary.
                ours.command[:1] = [sys.executable, "-m", "statecar_cli.main", "daprd"]
                stack.callback(ours.stop)
                ours.start()
                url, grpc_address = ours.url, ours.grpc_address
            else:
                sidecar = stack.enter_context(
                    running_sidecar(components_path=statecar_folder, app_id=APP_ID)
                )
                url, grpc_address = sidecar.url, sidecar.grpc_address
            yield Pair(
                stack.enter_context(Side("daprd", daprd.url, daprd.grpc_address)),
                stack.enter_context(Side(f"statecar {statecar}", url, grpc_address)),
                daprd,
            )


@pytest.fixture
def interop(backend: Backend, tmp_path: Path) -> Interop:
    return Interop(backend, tmp_path)


@pytest.fixture
def key() -> Callable[[str], str]:
    """Fresh keys per test: the database is shared by the whole session."""
    run = uuid.uuid4().hex[:8]
    return lambda name: f"{name}-{run}"


def stored(key: str) -> str:
    """The key as both sidecars store it (Dapr's default `appid` prefix)."""
    return f"{APP_ID}||{key}"
