"""
The conformance suite: Dapr's state scenarios and the rules of docs/state-api.md, over real
HTTP, on every backend (memory, SQLite, Redis, PostgreSQL). A ported scenario names its source in
components-contrib `tests/conformance/state/state.go` or dapr/dapr's integration tests.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import orjson
import pytest

pytestmark = pytest.mark.conformance


#: Backends whose ETags are UUIDs (daprd's SQLite and PostgreSQL v2 layouts).
UUID_ETAG_STORES = frozenset({"sqlite-dapr", "postgres-dapr-v2"})


def unknown_etag(store: str) -> str:
    """A well-formed ETag no key has: clock-based numbers are far above 1 (daprd's v1 `xmin` is
    never 1); on UUID backends, one that was never drawn."""
    return "00000000-0000-4000-8000-000000000001" if store in UUID_ETAG_STORES else "1"


def new_key(label: str = "k", *, tag: str = "") -> str:
    """A fresh key; keys given the same `tag` share a Redis Cluster hash tag (`{tag}`), so a
    transaction over them is atomic on a cluster too (docs/state-api.md, "Redis Cluster")."""
    return (f"{{{tag}}}" if tag else "") + f"{label}-{uuid.uuid4().hex[:12]}"


def save(
    api: httpx.Client, store: str, items: list[dict[str, object]] | bytes, **params: str
) -> httpx.Response:
    body = items if isinstance(items, bytes) else orjson.dumps(items)
    return api.post(f"/v1.0/state/{store}", content=body, params=params)


def save_raw(api: httpx.Client, store: str, key: str, value_json: bytes) -> httpx.Response:
    body = b'[{"key":' + orjson.dumps(key) + b',"value":' + value_json + b"}]"
    return api.post(f"/v1.0/state/{store}", content=body)


def get(api: httpx.Client, store: str, key: str, **params: str) -> httpx.Response:
    return api.get(f"/v1.0/state/{store}/{quote(key, safe='')}", params=params)


def etag_of(api: httpx.Client, store: str, key: str) -> str:
    answer = get(api, store, key)
    assert answer.status_code == 200, answer.text
    return answer.headers["etag"]


# -- basic save / get (state.go "set", "get") ---------------------------------------------------

SCENARIO_VALUES = [
    b"123",
    b"true",
    b'"AQ=="',  # bytes, base64 in JSON as an HTTP client sends them (dapr fuzz.go)
    b'"{\\"a\\":\\"b\\"}"',  # a string holding JSON
    b'"hello world"',
    b'""',
    b'{"message":"test<&>"}',
    b'{"product":{"value":15},"status":"ACTIVE"}',
    b"null",
]


@pytest.mark.parametrize("value", SCENARIO_VALUES)
def test_saved_value_reads_back_byte_for_byte(api: httpx.Client, store: str, value: bytes) -> None:
    key = new_key()
    assert save_raw(api, store, key, value).status_code == 204
    answer = get(api, store, key)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.content == value
    assert answer.headers["etag"]


BYTE_EXACT = [
    b"1.0000000000000002",
    b"1.10",
    b"1e400",  # beyond float64: kept as text, never rounded to inf
    b"123456789012345678901234567890",
    b'{"z":1,"a":2,"m":{"y":1,"b":2}}',  # key order kept
    b'"caf\\u00e9 <b>&amp;</b> \\ud83d\\ude00"',  # escapes kept as sent
    '"café ☃"'.encode(),
    b"[ 1 , 2 ,\n 3 ]",  # whitespace kept
]


@pytest.mark.parametrize("value", BYTE_EXACT)
def test_values_are_byte_exact(api: httpx.Client, store: str, value: bytes) -> None:
    key = new_key()
    assert save_raw(api, store, key, value).status_code == 204
    assert get(api, store, key).content == value
    bulk = api.post(f"/v1.0/state/{store}/bulk", json={"keys": [key]})
    assert value in bulk.content


def test_large_value_round_trips(api: httpx.Client, store: str) -> None:
    key = new_key()
    value = orjson.dumps(base64.b64encode(bytes(range(256)) * 3000).decode())  # ~1 MB
    assert save_raw(api, store, key, value).status_code == 204
    assert get(api, store, key).content == value


def test_missing_key_is_204_with_empty_body(api: httpx.Client, store: str) -> None:
    answer = get(api, store, new_key("never-written"))
    assert answer.status_code == 204
    assert answer.content == b""


def test_missing_value_is_stored_as_null(api: httpx.Client, store: str) -> None:
    key = new_key()
    assert save(api, store, [{"key": key, "vae": "typo"}]).status_code == 204
    assert get(api, store, key).content == b"null"


def test_put_saves_too_and_empty_array_is_204(api: httpx.Client, store: str) -> None:
    key = new_key()
    assert api.put(f"/v1.0/state/{store}", json=[{"key": key, "value": 1}]).status_code == 204
    assert get(api, store, key).content == b"1"
    answer = api.post(f"/v1.0/state/{store}", content=b"[]")
    assert (answer.status_code, answer.content) == (204, b"")


@pytest.mark.parametrize(
    "body", [b"", b"{}", b"foobar", b"[{}]", b'[{"key":"k","value":1},]', b'[{"ey":"k","value":1}]']
)
def test_malformed_save_bodies_are_400(api: httpx.Client, store: str, body: bytes) -> None:
    answer = save(api, store, body)
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "ERR_MALFORMED_REQUEST"


def test_numeric_etag_is_malformed(api: httpx.Client, store: str) -> None:
    answer = save(api, store, [{"key": new_key(), "value": 1, "etag": 123}])
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert "etag" in answer.json()["message"]


def test_a_bad_item_rejects_the_whole_save_before_writing(api: httpx.Client, store: str) -> None:
    key = new_key()
    answer = save(api, store, [{"key": key, "value": 1}, {"value": 2}])
    assert answer.status_code == 400
    assert '"key" is a required field' in answer.json()["message"]
    assert get(api, store, key).status_code == 204


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["a/b", "100%", "with space", "ünï ☃", "a+b?c#d", "..", "x&y=z"])
def test_unusual_keys_round_trip_when_percent_encoded(
    api: httpx.Client, store: str, suffix: str
) -> None:
    key = new_key() + suffix
    assert save(api, store, [{"key": key, "value": {"k": key}}]).status_code == 204
    answer = get(api, store, key)
    assert answer.status_code == 200
    assert orjson.loads(answer.content) == {"k": key}
    assert api.post(f"/v1.0/state/{store}/bulk", json={"keys": [key]}).json()[0]["key"] == key
    assert api.delete(f"/v1.0/state/{store}/{quote(key, safe='')}").status_code == 204
    assert get(api, store, key).status_code == 204


def test_key_with_separator_is_rejected_with_details(api: httpx.Client, store: str) -> None:
    answer = save(api, store, [{"key": "ke||y1", "value": "value1"}])
    assert answer.status_code == 400
    body = answer.json()
    assert body["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert "input key/keyPrefix 'ke||y1' can't contain '||'" in body["message"]
    reasons = [d.get("reason") for d in body["details"]]
    assert "DAPR_STATE_ILLEGAL_KEY" in reasons
    assert len(body["details"]) == 3
    assert get(api, store, "ke||y1").status_code == 400


def test_unknown_store_is_400_before_the_body_is_read(api: httpx.Client) -> None:
    answer = api.post("/v1.0/state/nope", content=b"")
    assert answer.status_code == 400
    body = answer.json()
    assert body["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    assert body["message"].startswith("state store nope is not found")
    assert body["details"][0]["reason"] == "DAPR_STATE_NOT_FOUND"


# -- the concurrency table (docs/state-api.md) -----------------------------------------------------


def _prepare(api: httpx.Client, store: str, state: str) -> tuple[str, str | None]:
    """A key that is 'absent' or 'present'; returns the key and its current ETag."""
    key = new_key()
    if state == "present":
        assert save(api, store, [{"key": key, "value": "old"}]).status_code == 204
        return key, etag_of(api, store, key)
    return key, None


SAVE_TABLE = [
    # (key state, etag given, mode, expected status)
    ("absent", "some", "first-write", 409),
    ("absent", "some", "last-write", 409),
    ("present", "same", "first-write", 204),
    ("present", "same", "last-write", 204),
    ("present", "other", "first-write", 409),
    ("present", "other", "last-write", 409),
    ("absent", None, "last-write", 204),
    ("present", None, "last-write", 204),
    ("absent", None, "first-write", 204),
    ("present", None, "first-write", 409),
]


@pytest.mark.parametrize(("state", "given", "mode", "status"), SAVE_TABLE)
def test_save_concurrency_table(
    api: httpx.Client, store: str, state: str, given: str | None, mode: str, status: int
) -> None:
    key, current = _prepare(api, store, state)
    item: dict[str, object] = {"key": key, "value": "new", "options": {"concurrency": mode}}
    if given == "same":
        item["etag"] = current
    elif given is not None:
        item["etag"] = unknown_etag(store)
    answer = save(api, store, [item])
    assert answer.status_code == status, answer.text
    after = get(api, store, key)
    if status == 204:
        assert after.content == b'"new"'
    else:
        assert answer.json()["errorCode"] == "ERR_STATE_SAVE"
        assert "etag mismatch" in answer.json()["message"]
        assert after.content == (b'"old"' if state == "present" else b"")


DELETE_TABLE = [
    ("absent", "some", "last-write", 409),
    ("present", "same", "last-write", 204),
    ("present", "same", "first-write", 204),
    ("present", "other", "first-write", 409),
    ("present", "other", "last-write", 409),
    ("absent", None, "last-write", 204),
    ("present", None, "last-write", 204),
    ("absent", None, "first-write", 204),
    ("present", None, "first-write", 409),
]


@pytest.mark.parametrize(("state", "given", "mode", "status"), DELETE_TABLE)
def test_delete_concurrency_table(
    api: httpx.Client, store: str, state: str, given: str | None, mode: str, status: int
) -> None:
    key, current = _prepare(api, store, state)
    headers = {}
    if given == "same":
        headers["If-Match"] = current or ""
    elif given is not None:
        headers["If-Match"] = unknown_etag(store)
    answer = api.delete(f"/v1.0/state/{store}/{key}", params={"concurrency": mode}, headers=headers)
    assert answer.status_code == status, answer.text
    if status == 409:
        assert answer.json()["errorCode"] == "ERR_STATE_DELETE"
        assert get(api, store, key).status_code == (200 if state == "present" else 204)
    else:
        assert get(api, store, key).status_code == 204


def test_empty_etag_means_no_etag(api: httpx.Client, store: str) -> None:
    key, _ = _prepare(api, store, "present")
    assert save(api, store, [{"key": key, "value": 2, "etag": ""}]).status_code == 204
    assert api.delete(f"/v1.0/state/{store}/{key}", headers={"If-Match": ""}).status_code == 204


def test_etag_the_store_cannot_have_issued_is_invalid_not_mismatch(
    api: httpx.Client, store: str
) -> None:
    key, _ = _prepare(api, store, "present")
    answer = save(api, store, [{"key": key, "value": 2, "etag": "not-an-etag"}])
    assert answer.status_code == 400
    assert answer.json()["errorCode"] == "ERR_STATE_SAVE"
    assert "invalid etag" in answer.json()["message"]
    answer = api.delete(f"/v1.0/state/{store}/{key}", headers={"If-Match": "nope"})
    assert (answer.status_code, answer.json()["errorCode"]) == (400, "ERR_STATE_DELETE")


def test_etag_changes_on_every_write_and_never_repeats_across_recreate(
    api: httpx.Client, store: str
) -> None:
    key, first = _prepare(api, store, "present")
    assert save(api, store, [{"key": key, "value": 2}]).status_code == 204
    second = etag_of(api, store, key)
    assert second != first
    assert api.delete(f"/v1.0/state/{store}/{key}").status_code == 204
    assert save(api, store, [{"key": key, "value": 3}]).status_code == 204
    third = etag_of(api, store, key)
    assert third not in (first, second)
    # No ABA: an ETag read before the delete never matches the re-created key.
    for stale in (first, second):
        assert save(api, store, [{"key": key, "value": 4, "etag": stale}]).status_code == 409


def test_multi_item_save_is_per_item_and_reports_the_mismatch(
    api: httpx.Client, store: str
) -> None:
    # state.go "etag" step 5: a bad ETag fails only its own item.
    k2, _ = _prepare(api, store, "present")
    k3, e3 = _prepare(api, store, "present")
    e2 = etag_of(api, store, k2)
    answer = save(
        api,
        store,
        [
            {"key": k2, "value": "x", "etag": unknown_etag(store)},
            {"key": k3, "value": "y", "etag": e3},
        ],
    )
    assert answer.status_code == 409
    assert etag_of(api, store, k2) == e2
    assert get(api, store, k3).content == b'"y"'


def test_component_concurrency_default_and_request_override(api: httpx.Client) -> None:
    for store in ("memory-fw", "redis-fw"):
        key = new_key()
        assert save(api, store, [{"key": key, "value": 1}]).status_code == 204
        assert (
            save(api, store, [{"key": key, "value": 2}]).status_code == 409
        )  # first-write default
        override = [{"key": key, "value": 3, "options": {"concurrency": "last-write"}}]
        assert save(api, store, override).status_code == 204
        assert get(api, store, key).content == b"3"


def test_enforced_component_rejects_a_request_that_asks_otherwise(api: httpx.Client) -> None:
    key = new_key()
    answer = save(
        api, "memory-enforced", [{"key": key, "value": 1, "options": {"concurrency": "last-write"}}]
    )
    assert answer.status_code == 400
    assert "enforces concurrency first-write" in answer.json()["message"]
    assert get(api, "memory-enforced", key).status_code == 204


def test_invalid_option_values_name_the_field(api: httpx.Client, store: str) -> None:
    answer = save(api, store, [{"key": new_key(), "value": 1, "options": {"concurrency": "first"}}])
    assert answer.status_code == 400
    assert "options.concurrency" in answer.json()["message"]


# -- bulk get ------------------------------------------------------------------------------------


def test_bulk_get_returns_items_in_request_order_with_missing_keys(
    api: httpx.Client, store: str
) -> None:
    keys = [new_key() for _ in range(5)]
    assert (
        save(api, store, [{"key": k, "value": {"i": i}} for i, k in enumerate(keys)]).status_code
        == 204
    )
    requested = [keys[3], "does-not-exist", keys[0], keys[4]]
    answer = api.post(f"/v1.0/state/{store}/bulk", json={"keys": requested, "parallelism": 3})
    assert answer.status_code == 200
    items = answer.json()
    assert [i["key"] for i in items] == requested
    assert items[1] == {"key": "does-not-exist"}
    assert items[0]["data"] == {"i": 3}
    assert items[0]["etag"] == etag_of(api, store, keys[3])
    empty: Mapping[str, Sequence[str]]
    for empty in ({}, {"keys": []}):
        assert api.put(f"/v1.0/state/{store}/bulk", json=empty).json() == []


# -- transactions ★ atomic ----------------------------------------------------------------------


def transact(
    api: httpx.Client, store: str, operations: Sequence[Mapping[str, object]]
) -> httpx.Response:
    return api.post(f"/v1.0/state/{store}/transaction", json={"operations": operations})


def test_transaction_applies_in_order(api: httpx.Client, store: str) -> None:
    # state.go "transaction-order"
    tag = uuid.uuid4().hex
    k1, k2, k3 = new_key(tag=tag), new_key(tag=tag), new_key(tag=tag)
    assert save(api, store, [{"key": k1, "value": "value1"}]).status_code == 204
    ops = [
        {"operation": "delete", "request": {"key": k1}},
        {"operation": "upsert", "request": {"key": k2, "value": "value2"}},
        {"operation": "delete", "request": {"key": k2}},
        {"operation": "upsert", "request": {"key": k3, "value": "value3"}},
    ]
    assert transact(api, store, ops).status_code == 204
    assert get(api, store, k1).status_code == 204
    assert get(api, store, k2).status_code == 204
    assert get(api, store, k3).content == b'"value3"'


def test_transaction_is_all_or_nothing(api: httpx.Client, store: str) -> None:
    tag = uuid.uuid4().hex
    existing, fresh = new_key(tag=tag), new_key(tag=tag)
    assert save(api, store, [{"key": existing, "value": "old"}]).status_code == 204
    etag = etag_of(api, store, existing)
    ops = [
        {"operation": "upsert", "request": {"key": fresh, "value": "written?"}},
        {"operation": "delete", "request": {"key": existing}},
        {"operation": "upsert", "request": {"key": existing, "value": "x", "etag": etag}},
    ]
    answer = transact(api, store, ops)
    assert answer.status_code == 500
    body = answer.json()
    assert body["errorCode"] == "ERR_STATE_TRANSACTION"
    assert f"operation 2 on key '{existing}'" in body["message"]
    assert get(api, store, fresh).status_code == 204
    assert get(api, store, existing).content == b'"old"'


def test_the_usual_transaction_body_is_all_or_nothing_and_names_the_clients_key(
    api: httpx.Client, store: str
) -> None:
    # Upserts of a key and a value, spelled compactly as SDKs send them, are read off the body
    # (bodies.plain_upserts): refused as a whole under first-write, naming the key as the
    # client gave it (not as stored, prefixed), and applied with every value byte for byte.
    tag = uuid.uuid4().hex
    fresh, existing = new_key(tag=tag), new_key(tag=tag)
    assert save(api, store, [{"key": existing, "value": "old"}]).status_code == 204
    body = (
        b'{"operations":[{"operation":"upsert","request":{"key":"%s","value":1.50}},'
        b'{"operation":"upsert","request":{"key":"%s","value":{"b":1,"a":"\\u00e9"}}}]}'
        % (fresh.encode(), existing.encode())
    )
    url = f"/v1.0/state/{store}/transaction"
    answer = api.post(url, content=body, headers={"concurrency": "first-write"})
    assert answer.status_code == 500, answer.text
    assert answer.json()["errorCode"] == "ERR_STATE_TRANSACTION"
    assert f"operation 1 on key '{existing}' failed" in answer.json()["message"]
    assert get(api, store, fresh).status_code == 204
    assert get(api, store, existing).content == b'"old"'
    assert api.post(url, content=body).status_code == 204
    assert get(api, store, fresh).content == b"1.50"
    assert get(api, store, existing).content == b'{"b":1,"a":"\\u00e9"}'


def test_transaction_etag_as_string_or_js_sdk_object(api: httpx.Client, store: str) -> None:
    key, etag = _prepare(api, store, "present")
    assert (
        transact(
            api,
            store,
            [{"operation": "upsert", "request": {"key": key, "value": 1, "etag": {"value": etag}}}],
        ).status_code
        == 204
    )
    etag2 = etag_of(api, store, key)
    assert (
        transact(
            api,
            store,
            [{"operation": "upsert", "request": {"key": key, "value": 2, "etag": etag2}}],
        ).status_code
        == 204
    )
    assert (
        transact(
            api, store, [{"operation": "delete", "request": {"key": key, "etag": etag2}}]
        ).status_code
        == 500
    )
    assert get(api, store, key).content == b"2"


def test_transaction_edge_cases(api: httpx.Client, store: str) -> None:
    assert transact(api, store, []).status_code == 204
    assert (
        transact(
            api, store, [{"operation": "delete", "request": {"key": new_key("never")}}]
        ).status_code
        == 204
    )
    answer = transact(api, store, [{"operation": "Upsert", "request": {"key": "k"}}])
    assert (answer.status_code, answer.json()["errorCode"]) == (
        400,
        "ERR_NOT_SUPPORTED_STATE_OPERATION",
    )
    answer = api.post(f"/v1.0/state/{store}/transaction", content=b"{")
    assert (answer.status_code, answer.json()["errorCode"]) == (400, "ERR_MALFORMED_REQUEST")


def test_transaction_values_are_byte_exact(api: httpx.Client, store: str) -> None:
    key = new_key()
    body = (
        b'{"operations":[{"operation":"upsert","request":{"key":"'
        + key.encode()
        + b'","value":{"b":1.50,"a":[1e2]}}}]}'
    )
    assert api.post(f"/v1.0/state/{store}/transaction", content=body).status_code == 204
    assert get(api, store, key).content == b'{"b":1.50,"a":[1e2]}'


# -- TTL ★ on every backend ----------------------------------------------------------------------


def _expire_time(answer: httpx.Response) -> float:
    text = answer.headers["metadata.ttlexpiretime"]
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def test_ttl_expires_and_reports_expire_time(api: httpx.Client, store: str) -> None:
    key, long_key = new_key(), new_key()
    assert (
        save(
            api, store, [{"key": key, "value": "v", "metadata": {"ttlInSeconds": "2"}}]
        ).status_code
        == 204
    )
    assert (
        save(
            api, store, [{"key": long_key, "value": "v"}], **{"metadata.ttlInSeconds": "3600"}
        ).status_code
        == 204
    )
    answer = get(api, store, key)
    assert answer.status_code == 200
    assert abs(_expire_time(answer) - (time.time() + 2)) < 2
    assert abs(_expire_time(get(api, store, long_key)) - (time.time() + 3600)) < 5
    bulk = api.post(f"/v1.0/state/{store}/bulk", json={"keys": [long_key]}).json()
    assert "ttlExpireTime" in bulk[0]["metadata"]
    deadline = time.time() + 6
    while get(api, store, key).status_code == 200:
        assert time.time() < deadline, "the key outlived its TTL"
        time.sleep(0.25)
    assert get(api, store, key).content == b""


def test_ttl_is_cleared_by_minus_one_and_by_a_resave_without_ttl(
    api: httpx.Client, store: str
) -> None:
    key = new_key()
    for clear in ({"ttlInSeconds": "-1"}, {"ttlInSeconds": "0"}, {}):
        assert (
            save(
                api, store, [{"key": key, "value": 1, "metadata": {"ttlInSeconds": "100"}}]
            ).status_code
            == 204
        )
        assert "metadata.ttlexpiretime" in get(api, store, key).headers
        assert save(api, store, [{"key": key, "value": 2, "metadata": clear}]).status_code == 204
        answer = get(api, store, key)
        assert answer.status_code == 200
        assert "metadata.ttlexpiretime" not in answer.headers


@pytest.mark.parametrize("bad", ["foo", "1.5", "-2", "99999999999"])
def test_bad_ttl_is_rejected_and_nothing_is_written(
    api: httpx.Client, store: str, bad: str
) -> None:
    key = new_key()
    answer = save(api, store, [{"key": key, "value": 1, "metadata": {"ttlInSeconds": bad}}])
    assert answer.status_code == 400
    assert "ttlInSeconds" in answer.json()["message"]
    assert get(api, store, key).status_code == 204


# -- query ---------------------------------------------------------------------------------------


def test_query_filters_sorts_and_pages(api: httpx.Client, store: str) -> None:
    tag = uuid.uuid4().hex[:8]
    people = [
        {"tag": tag, "name": n, "age": a, "city": c}
        for n, a, c in [
            ("ann", 31, "CA"),
            ("bob", 25, "WA"),
            ("cid", 40, "CA"),
            ("dee", 35, "CA"),
            ("eve", 29, "NY"),
        ]
    ]
    assert (
        save(api, store, [{"key": f"{tag}-{p['name']}", "value": p} for p in people]).status_code
        == 204
    )
    query = {
        "filter": {"AND": [{"EQ": {"tag": tag}}, {"EQ": {"city": "CA"}}, {"GT": {"age": 30}}]},
        "sort": [{"key": "age", "order": "DESC"}],
        "page": {"limit": 2},
    }
    first = api.post(f"/v1.0-alpha1/state/{store}/query", json=query)
    assert first.status_code == 200, first.text
    page1 = first.json()
    assert [r["data"]["name"] for r in page1["results"]] == ["cid", "dee"]
    assert page1["results"][0]["key"] == f"{tag}-cid"
    assert page1["results"][0]["etag"]
    query["page"] = {"limit": 2, "token": page1["token"]}
    page2 = api.post(f"/v1.0-alpha1/state/{store}/query", json=query).json()
    assert [r["data"]["name"] for r in page2["results"]] == ["ann"]
    nothing = api.post(
        f"/v1.0-alpha1/state/{store}/query", json={"filter": {"EQ": {"tag": "no-such-tag"}}}
    )
    assert (nothing.status_code, nothing.content) == (204, b"")
    bad = api.post(f"/v1.0-alpha1/state/{store}/query", json={"filter": {"FOO": {"a": 1}}})
    assert (bad.status_code, bad.json()["errorCode"]) == (500, "ERR_STATE_QUERY")


# -- the Dapr docs' own snippets (docs/state-api.md) -----------------------------------------------


def test_docs_snippet_json_string_body_and_option_headers(api: httpx.Client, store: str) -> None:
    key = new_key()
    snippet_body = orjson.dumps(orjson.dumps([{"key": key, "value": "Some Data"}]).decode())
    assert api.post(f"/v1.0/state/{store}", content=snippet_body).status_code == 204
    assert (
        api.get(f"/v1.0/state/{store}/{key}", headers={"consistency": "strong"}).content
        == b'"Some Data"'
    )
    again = orjson.dumps([{"key": key, "value": "x"}])
    assert (
        api.post(
            f"/v1.0/state/{store}", content=again, headers={"concurrency": "first-write"}
        ).status_code
        == 409
    )
