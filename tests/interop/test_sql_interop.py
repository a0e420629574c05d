"""
Interop tier, SQL: one database, written by a real daprd v1.18.1 and by statecar, both ways,
over daprd's PostgreSQL v1 and v2 layouts and its SQLite layout.

Both programs read the SAME Dapr `Component` file (so the layout statecar picks is the one a
Dapr user's components folder implies) under the same app id, so keys are `appid||key` for
both. What is proven, per layout:

* daprd writes, statecar reads: the same bytes daprd itself returns (JSON from HTTP, binary
  from gRPC), daprd's ETags work for statecar's conditional writes (and a stale one is refused),
  the TTL daprd set is there with its expiry.
* statecar writes, daprd reads: byte-exact values (compact JSON, which PostgreSQL's jsonb would
  re-render, included), statecar's ETags work for daprd's conditional writes, TTLs, deletes,
  and a transaction.
* daprd starts on a database statecar created (schema and migration level as daprd leaves them),
  and statecar on one daprd created.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from tests.support import pg_server
from tests.support.daprd import DaprdProcess, running_daprd
from tests.support.sidecar import running_sidecar

from statecar_contract.components import parse_component, resolve
from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from statecar_sidecar.stores.base import SetOp
from statecar_sidecar.stores.errors import StoreError
from statecar_sidecar.stores.postgresql import PostgreSQLStore
from statecar_sidecar.stores.registry import open_store
from statecar_sidecar.stores.sqlite import SQLiteStore

APP_ID = "interop-sql"
STORE = "store"
LAYOUTS = ("postgresql-v1", "postgresql-v2", "sqlite")


@pytest.fixture(params=LAYOUTS)
def components(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A folder holding one Dapr Component on a fresh table (or file), as daprd reads it."""
    layout = str(request.param)
    fresh = "i" + uuid.uuid4().hex[:10]
    if layout == "sqlite":
        spec = {
            "type": "state.sqlite",
            "version": "v1",
            "metadata": {"connectionString": str(tmp_path / "state.db")},
        }
    else:
        postgres: pg_server.PgServer = request.getfixturevalue("postgres")
        table = {"tableName": fresh} if layout == "postgresql-v1" else {"tablePrefix": fresh + "_"}
        spec = {
            "type": "state.postgresql",
            "version": "v2" if layout == "postgresql-v2" else "v1",
            "metadata": {
                "connectionString": postgres.dsn,
                "metadataTableName": fresh + "_meta",
                **table,
            },
        }
    document = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": STORE},
        "spec": {
            **spec,
            "metadata": [{"name": k, "value": v} for k, v in spec["metadata"].items()],  # type: ignore[attr-defined]  # the dict above
        },
    }
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "store.yaml").write_text(yaml.safe_dump(document))
    return folder


def _get(base: str, key: str) -> httpx.Response:
    return httpx.get(f"{base}/v1.0/state/{STORE}/{key}", timeout=10)


def _save(base: str, items: list[dict[str, object]]) -> httpx.Response:
    return httpx.post(f"{base}/v1.0/state/{STORE}", json=items, timeout=10)


def _save_raw(base: str, body: bytes) -> httpx.Response:
    """A save whose value bytes are exactly as written in `body` (no re-encoding)."""
    return httpx.post(
        f"{base}/v1.0/state/{STORE}",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )


def _expiry(answer: httpx.Response) -> datetime:
    text = answer.headers["metadata.ttlexpiretime"]
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _grpc_save_bytes(daprd: DaprdProcess, key: str, value: bytes) -> None:
    with grpc.insecure_channel(daprd.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        stub.SaveState(
            state_pb2.SaveStateRequest(
                store_name=STORE, states=[common_pb2.StateItem(key=key, value=value)]
            ),
            timeout=10,
        )


def test_daprd_writes_statecar_reads_and_writes_back(components: Path) -> None:
    binary = bytes(range(256)) + b"\x00\xff"
    with running_daprd(components, app_id=APP_ID) as daprd:  # daprd creates the schema
        assert _save_raw(
            daprd.url,
            b'[{"key": "doc", "value": {"b": 1, "a": [1, 2.5, "x"]}},'
            b' {"key": "text", "value": "h\\u00e9llo"},'
            b' {"key": "ttl", "value": 7, "metadata": {"ttlInSeconds": "600"}},'
            b' {"key": "gone", "value": 1}]',
        ).is_success
        _grpc_save_bytes(daprd, "bin", binary)
        assert httpx.delete(f"{daprd.url}/v1.0/state/{STORE}/gone", timeout=10).is_success
        from_daprd = {key: _get(daprd.url, key) for key in ("doc", "text", "ttl", "bin")}
        assert from_daprd["bin"].content == binary
    with running_sidecar(components_path=components, app_id=APP_ID) as statecar:
        for key, theirs in from_daprd.items():
            ours = _get(statecar.url, key)
            assert ours.status_code == 200, (key, ours.text)
            assert ours.content == theirs.content, key  # byte for byte what daprd returns
            assert ours.headers["etag"] == theirs.headers["etag"], key
        assert _get(statecar.url, "gone").status_code == 204
        # The TTL daprd set: the same expiry (daprd reports whole seconds).
        remaining = _expiry(_get(statecar.url, "ttl")) - _expiry(from_daprd["ttl"])
        assert abs(remaining.total_seconds()) < 1.0
        assert _expiry(from_daprd["ttl"]) > datetime.now(UTC)
        # daprd's ETag is good for a conditional write; then it is stale.
        etag = from_daprd["doc"].headers["etag"]
        assert _save(statecar.url, [{"key": "doc", "value": {"v": 2}, "etag": etag}]).is_success
        refused = _save(statecar.url, [{"key": "doc", "value": {"v": 3}, "etag": etag}])
        assert refused.status_code == 409, refused.text
        after = _get(statecar.url, "doc")
        assert after.content == b'{"v": 2}' or after.content == b'{"v":2}'
        # ... and daprd, on the same data again, judges ETags the same way.
        with running_daprd(components, app_id=APP_ID) as daprd:
            assert _get(daprd.url, "doc").content == after.content
            assert _get(daprd.url, "doc").headers["etag"] == after.headers["etag"]
            stale = _save(daprd.url, [{"key": "doc", "value": 4, "etag": etag}])
            assert stale.status_code == 409, stale.text
            fresh = _save(daprd.url, [{"key": "doc", "value": 5, "etag": after.headers["etag"]}])
            assert fresh.is_success, fresh.text
            assert _get(statecar.url, "doc").content == b"5"


def test_statecar_writes_daprd_reads(components: Path) -> None:
    compact = b'{"z":1,"a":{"k":[true,null,1.50]}}'  # jsonb would re-render this
    binary = b"\x00\x01not json\xfe\xff"
    with running_sidecar(components_path=components, app_id=APP_ID) as statecar:
        # statecar creates the schema; daprd has never seen this database.
        body = (
            b'[{"key": "compact", "value": ' + compact + b"},"
            b' {"key": "spaced", "value": {"a": 1, "b": [2]}},'
            b' {"key": "ttl", "value": "t", "metadata": {"ttlInSeconds": "600"}},'
            b' {"key": "gone", "value": 0}]'
        )
        assert _save_raw(statecar.url, body).is_success
        with grpc.insecure_channel(statecar.grpc_address) as channel:
            dapr_pb2_grpc.DaprStub(channel).SaveState(
                state_pb2.SaveStateRequest(
                    store_name=STORE, states=[common_pb2.StateItem(key="bin", value=binary)]
                ),
                timeout=10,
            )
        transaction = httpx.post(
            f"{statecar.url}/v1.0/state/{STORE}/transaction",
            json={
                "operations": [
                    {"operation": "upsert", "request": {"key": "tx1", "value": [1]}},
                    {"operation": "delete", "request": {"key": "gone"}},
                ]
            },
            timeout=10,
        )
        assert transaction.is_success, transaction.text
        ours = {key: _get(statecar.url, key) for key in ("compact", "spaced", "ttl", "bin", "tx1")}
        assert ours["compact"].content == compact
        assert ours["bin"].content == binary
    # daprd starts on the database statecar created and migrated, and reads it all.
    with running_daprd(components, app_id=APP_ID) as daprd:
        for key, answer in ours.items():
            theirs = _get(daprd.url, key)
            assert theirs.status_code == 200, (key, theirs.text)
            assert theirs.content == answer.content, key
            assert theirs.headers["etag"] == answer.headers["etag"], key
        assert _get(daprd.url, "gone").status_code == 204
        assert abs((_expiry(_get(daprd.url, "ttl")) - _expiry(ours["ttl"])).total_seconds()) < 1
        assert "metadata.ttlexpiretime" not in _get(daprd.url, "compact").headers
        # statecar's ETag is good for daprd's conditional write.
        etag = ours["compact"].headers["etag"]
        assert _save(daprd.url, [{"key": "compact", "value": 1, "etag": etag}]).is_success
        assert _save(daprd.url, [{"key": "compact", "value": 2, "etag": etag}]).status_code == 409
        # Both programs at once on one database.
        with running_sidecar(components_path=components, app_id=APP_ID) as statecar:
            assert _get(statecar.url, "compact").content == b"1"
            assert _save(statecar.url, [{"key": "both", "value": {"n": 1}}]).is_success
            assert (
                _get(daprd.url, "both").headers["etag"]
                == _get(statecar.url, "both").headers["etag"]
            )


async def test_statecars_own_layout_refuses_a_daprd_table_unchanged(components: Path) -> None:
    # A database daprd wrote, opened with statecar's own layout (a StateStoreComponent, or
    # `layout: statecar`), is refused with the fix, never half-read or altered.
    with running_daprd(components, app_id=APP_ID) as daprd:  # daprd creates its table
        assert _save(daprd.url, [{"key": "k", "value": 1}]).is_success
    spec = yaml.safe_load((components / "store.yaml").read_text())["spec"]
    metadata = {m["name"]: m["value"] for m in spec["metadata"]}
    metadata.pop("metadataTableName", None)
    prefix = metadata.pop("tablePrefix", None)
    if prefix is not None:
        metadata["tableName"] = prefix + "state"
    with pytest.raises(StoreError, match="set the layout setting to daprd's"):
        await open_store(spec["type"], {**metadata, "layout": "statecar"})
    with running_daprd(components, app_id=APP_ID) as daprd:
        assert _get(daprd.url, "k").content == b"1"


async def test_daprds_layout_refuses_a_statecar_table_unchanged(components: Path) -> None:
    # The reverse: a table in statecar's own layout is never migrated into daprd's.
    spec = yaml.safe_load((components / "store.yaml").read_text())["spec"]
    metadata = {m["name"]: m["value"] for m in spec["metadata"]}
    ours = {k: v for k, v in metadata.items() if k not in ("metadataTableName", "tablePrefix")}
    if "tablePrefix" in metadata:
        ours["tableName"] = metadata["tablePrefix"] + "state"
    store = await open_store(spec["type"], {**ours, "layout": "statecar"})
    try:
        await store.set(SetOp("interop-sql||k", b'{"a":1}'))
    finally:
        await store.close()
    layout = {"v1": "dapr-v1", "v2": "dapr-v2"}[spec["version"]]
    if spec["type"] == "state.sqlite":
        layout = "dapr"
    with pytest.raises(StoreError, match="does not have daprd's layout"):
        await open_store(spec["type"], {**metadata, "layout": layout})
    store = await open_store(spec["type"], {**ours, "layout": "statecar"})
    try:
        item = await store.get("interop-sql||k")
        assert item is not None
        assert item.value == b'{"a":1}'
    finally:
        await store.close()


async def test_expired_rows_are_swept_in_turns_with_daprd(components: Path) -> None:
    # daprd's cleanup (common/component/sql/cleanup.go) claims its turn through a row of the
    # metadata table; statecar's sweep claims the same row, so the programs sweep in turns.
    with running_daprd(components, app_id=APP_ID) as daprd:
        items: list[dict[str, object]] = [
            {"key": "short", "value": 1, "metadata": {"ttlInSeconds": "1"}},
            {"key": "kept", "value": 2},
        ]
        assert _save(daprd.url, items).is_success
    time.sleep(2.1)  # past the expiry, in whole seconds on SQLite
    # Opened as the sidecar opens the component file: its layout comes from the Dapr Component.
    component = resolve(
        parse_component(yaml.safe_load((components / "store.yaml").read_text())), {}
    )
    store = await open_store(component.type, {**component.metadata, "cleanupInterval": "1h"})
    try:
        assert await store.get(f"{APP_ID}||short") is None  # expired: already invisible
        assert isinstance(store, PostgreSQLStore | SQLiteStore)
        sweep = store._sweeper._sweep  # what the background task runs, once per interval
        assert await sweep() == 1  # the expired row, and only it, is deleted
        await store.set(SetOp(f"{APP_ID}||short", b"3", ttl=1))
        await asyncio.sleep(2.1)
        assert await store.get(f"{APP_ID}||short") is None
        assert await sweep() == 0  # expired, but not our turn again within the interval
        item = await store.get(f"{APP_ID}||kept")
        assert item is not None
        assert item.value == b"2"
    finally:
        await store.close()
    with running_daprd(components, app_id=APP_ID) as daprd:  # and daprd still starts on it
        assert _get(daprd.url, "kept").content == b"2"
