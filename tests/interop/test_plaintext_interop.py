"""
daprd's data is statecar's data, plaintext, in both directions (issue 10.2), against daprd v1.18.1.

Each test writes through one sidecar and reads through the other, over the same database, and
compares what an app sees: the value bytes (JSON and non-JSON), the ETag, the TTL. It runs for
every backend row of `conftest.BACKENDS`: Redis, PostgreSQL v1 and v2, SQLite.

Where the two differ on the same data, the test asserts both behaviours and says which
(docs/state-api.md, "daprd and statecar on the same database"): daprd's HTTP save decodes and
re-encodes a JSON value (spacing dropped, `1.10` becomes `1.1`; on PostgreSQL v1 then
re-rendered by jsonb), so what statecar reads back is daprd's re-encoding; statecar stores the
client's bytes as sent, and daprd reads those unchanged. Where daprd itself fails on a backend
(an empty gRPC value on PostgreSQL v2), the test asserts that, and that statecar's write of
the same value is one daprd reads. A bulk get's order is daprd's database's on the SQL
backends; statecar answers in request order, and the items are compared key by key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from tests.interop.conftest import Backend, Interop, Pair
from tests.interop.sides import Side

#: JSON as a client might send it: spacing, key order and a number spelling daprd would change.
ODD_JSON = b'{"z": 1, "price": 1.10, "html": "<&>", "a": [true, null]}'
#: Not JSON, not UTF-8: only gRPC can carry it.
BINARY = b'\x00\xff{"price": 1.10}\n\x80'


@pytest.fixture
def pair(interop: Interop) -> Iterator[Pair]:
    with interop.start() as started:
        yield started


def _directions(pair: Pair) -> list[tuple[Side, Side]]:
    return [(pair.daprd, pair.statecar), (pair.statecar, pair.daprd)]


def _save_one(side: Side, key: str, body: bytes, **metadata: str) -> None:
    meta = (
        b',"metadata":' + json.dumps(metadata).encode() if metadata else b""
    )  # the value's bytes as given, not re-encoded by the test
    reply = side.save_raw(b'[{"key":"' + key.encode() + b'","value":' + body + meta + b"}]")
    assert reply.status_code == 204, f"{side}: {reply.status_code} {reply.text}"


def test_json_values_read_back_as_the_writer_stored_them(
    pair: Pair, backend: Backend, key: Callable[[str], str]
) -> None:
    # daprd → statecar: daprd re-encodes the JSON before storing it; statecar returns exactly
    # what daprd stored, which is also what daprd itself returns.
    _save_one(pair.daprd, key("from-daprd"), ODD_JSON)
    by_daprd = pair.daprd.get(key("from-daprd"))
    by_statecar = pair.statecar.get(key("from-daprd"))
    assert by_statecar == by_daprd
    assert by_statecar.data is not None
    assert json.loads(by_statecar.data) == json.loads(ODD_JSON)
    # daprd decodes the value into a Go map and encodes it again: no spacing, `1.10` as `1.1`,
    # and the keys in an order that changes from one save to the next. PostgreSQL v1 stores
    # that as jsonb, which renders it its own way, the same on every read.
    assert by_statecar.data != ODD_JSON
    if backend.daprd_jsonb:
        assert by_statecar.data == b'{"a": [true, null], "z": 1, "html": "<&>", "price": 1.1}'
    else:
        assert b" " not in by_statecar.data.replace(b"<&>", b"")
        assert b'"price":1.1,' in by_statecar.data or by_statecar.data.endswith(b'"price":1.1}')

    # statecar → daprd: statecar keeps the client's bytes, and daprd reads them unchanged.
    _save_one(pair.statecar, key("from-statecar"), ODD_JSON)
    assert pair.statecar.get(key("from-statecar")).data == ODD_JSON
    assert pair.daprd.get(key("from-statecar")) == pair.statecar.get(key("from-statecar"))


@pytest.mark.parametrize("value", [BINARY, ODD_JSON, b""], ids=["binary", "json", "empty"])
def test_grpc_values_are_byte_exact_in_both_directions(
    pair: Pair, backend: Backend, key: Callable[[str], str], value: bytes
) -> None:
    for writer, reader in _directions(pair):
        k = key(f"grpc-{writer.name.split()[0]}")
        if writer is pair.daprd and not value and not backend.daprd_saves_empty:
            with pytest.raises(grpc.RpcError, match="violates not-null constraint"):
                writer.grpc_save(k, value)
            continue
        writer.grpc_save(k, value)
        written = writer.grpc_get(k)
        read = reader.grpc_get(k)
        assert read.data == written.data == value
        assert read.etag == written.etag
        if value:
            # Over HTTP too, each returns the stored bytes as they are.
            assert reader.get(k).data == value


def test_an_etag_from_either_sidecar_guards_a_write_through_the_other(
    pair: Pair, key: Callable[[str], str]
) -> None:
    for writer, other in _directions(pair):
        k = key(f"etag-{writer.name.split()[0]}")
        writer.save([{"key": k, "value": {"n": 1}}])
        etag = other.get(k).etag
        assert etag is not None
        assert etag == writer.get(k).etag
        # The other sidecar's ETag is accepted by the writer, and the new one by the other.
        writer.save([{"key": k, "value": {"n": 2}, "etag": etag}])
        newer = writer.get(k).etag
        assert newer is not None
        assert newer != etag
        assert other.get(k).etag == newer
        stale = other.save_raw(json.dumps([{"key": k, "value": {"n": 3}, "etag": etag}]).encode())
        assert stale.status_code == 409, f"{other}: {stale.status_code} {stale.text}"
        other.save([{"key": k, "value": {"n": 3}, "etag": newer}])
        assert json.loads(writer.get(k).data or b"") == {"n": 3}
        # Delete with the other's ETag: a stale one is refused, the current one deletes.
        current = other.get(k).etag
        assert current is not None
        assert writer.delete(k, etag).status_code == 409
        assert writer.delete(k, current).status_code == 204
        assert other.get(k).data is None


def _expiry(value: str | None) -> float:
    assert value is not None, "no ttlExpireTime"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def test_a_ttl_set_by_either_sidecar_is_reported_and_enforced_by_the_other(
    pair: Pair, backend: Backend, key: Callable[[str], str]
) -> None:
    for writer, reader in _directions(pair):
        long_key, short_key = key(f"ttl-{writer.name.split()[0]}"), key(f"gone-{writer.name[0]}")
        before = time.time()
        _save_one(writer, long_key, b'"x"', ttlInSeconds="100")
        _save_one(writer, short_key, b'"y"', ttlInSeconds="1")
        after = time.time()
        ours, theirs = pair.statecar.get(long_key), pair.daprd.get(long_key)
        assert ours.data == theirs.data == b'"x"'
        # statecar reports the remaining time whoever set it (RFC 3339, to the second)...
        assert before + 100 - 1 <= _expiry(ours.ttl_expire_time) <= after + 100 + 1
        assert pair.statecar.grpc_get(long_key).ttl_expire_time == ours.ttl_expire_time
        # ...and so does daprd, where its store reports TTLs at all (not on Redis).
        if backend.daprd_reports_ttl:
            assert abs(_expiry(theirs.ttl_expire_time) - _expiry(ours.ttl_expire_time)) <= 1
        else:
            assert theirs.ttl_expire_time is None
            assert pair.daprd.grpc_get(long_key).ttl_expire_time is None
        deadline = time.monotonic() + 5
        while reader.get(short_key).data is not None:  # bounded: expiry is the database's
            assert time.monotonic() < deadline, f"{short_key} did not expire for {reader}"
            time.sleep(0.1)
        assert writer.get(short_key).data is None


def test_a_transaction_through_either_sidecar_is_read_by_the_other(
    pair: Pair, key: Callable[[str], str]
) -> None:
    for writer, reader in _directions(pair):
        who = writer.name.split()[0]
        keep, drop = key(f"tx-keep-{who}"), key(f"tx-drop-{who}")
        writer.save([{"key": drop, "value": "old"}])
        reply = writer.transaction(
            [
                {"operation": "upsert", "request": {"key": keep, "value": {"n": 1}}},
                {"operation": "delete", "request": {"key": drop}},
            ]
        )
        assert reply.status_code == 204, f"{writer}: {reply.status_code} {reply.text}"
        assert reader.get(keep) == writer.get(keep)
        assert json.loads(reader.get(keep).data or b"") == {"n": 1}
        assert reader.get(drop).data is None


def test_bulk_writes_through_either_sidecar_match_a_bulk_get_through_the_other(
    pair: Pair, key: Callable[[str], str]
) -> None:
    for writer, reader in _directions(pair):
        who = writer.name.split()[0]
        keys = [key(f"bulk-{who}-{i}") for i in range(5)]
        writer.save([{"key": k, "value": {"i": i, "s": "é"}} for i, k in enumerate(keys)])
        absent = key(f"bulk-{who}-absent")
        # statecar answers in request order; daprd's SQL stores in the database's.
        assert [i["key"] for i in pair.statecar.bulk([*keys, absent])] == [*keys, absent]
        read = _by_key(reader.bulk([*keys, absent]))
        own = _by_key(writer.bulk([*keys, absent]))
        assert list(read) == list(own) == sorted([*keys, absent])
        assert [(i.get("data"), i.get("etag")) for i in read.values()] == [
            (i.get("data"), i.get("etag")) for i in own.values()
        ]
        assert [read[k].get("data") for k in keys] == [{"i": i, "s": "é"} for i in range(5)]
        assert read[absent].get("data") is None
        assert reader.grpc_bulk(keys) == writer.grpc_bulk(keys)


def _by_key(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A bulk answer's items by key, in key order (each key once)."""
    found = {item["key"]: item for item in items}
    assert len(found) == len(items), items
    return dict(sorted(found.items()))
