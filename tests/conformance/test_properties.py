"""
Property tests over real HTTP, on every backend (the `store` fixture):

1. Any key (unicode, `/`, `%`, `+`, spaces, control characters; never `||`) and any JSON value,
   written as TEXT with arbitrary whitespace, member order, duplicate names, escapes, big integers
   and long-mantissa floats, round-trips byte for byte: GET returns exactly the text sent, and
   bulk get embeds exactly that text as the item's `data` (docs/state-api.md, "Values are
   byte-exact").
   The text is built here, never produced by a serializer, so nothing normalises it on the way in.
   The same key's URL deletes it. A query for a stored document finds it and returns its text
   byte for byte too, including numbers beyond float64 and lone surrogate escapes.
2. ETag compare-and-swap is linearizable under contention: N threads each make K increments of
   one counter by read-ETag → save(value + 1, ETag), retrying on 409. The final value is exactly
   N*K (no lost update) and no two successful writes used the same ETag. The same holds through
   transactions that move two counters together (upsert with ETag, as a string and as the JS
   SDK's `{"value": ...}` object): both end at N*K.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.conformance

# 60 examples per backend keeps CI bounded; raise it locally for a deeper search.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("STATECAR_PROPERTY_EXAMPLES", "60")),
    deadline=None,
    # `store` is a function-scoped fixture, but only a name: nothing to reset between examples.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- keys ----------------------------------------------------------------------------------------

# Any character but NUL (PostgreSQL text cannot hold it) and surrogates (not encodable as UTF-8);
# the characters URLs and key prefixes treat specially are drawn often on purpose.
KEY_CHARACTERS = st.one_of(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    st.sampled_from(["/", "%", "+", " ", "|", ".", "?", "#", "&", "=", ";", "\\", "~", "%2F"]),
)
KEYS = (
    st.lists(KEY_CHARACTERS, min_size=1, max_size=24)
    .map("".join)
    .filter(lambda key: "||" not in key)
)


def url_key(key: str) -> str:
    """The key as one path segment. `+` must be %2B: a path `+` is a space to daprd and statecar.

    A segment that is all dots would be removed by the client's dot-segment normalisation
    (RFC 3986 §5.2.4) before it is sent, so those dots travel percent-encoded too.
    """
    segment = quote(key, safe="")
    return segment.replace(".", "%2E") if segment in (".", "..") else segment


# -- JSON text -----------------------------------------------------------------------------------

WS = st.text(alphabet=" \t\n\r", max_size=3)

_SIMPLE_ESCAPES = st.sampled_from(['\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"])


def _u_escape(code: int, upper: bool) -> str:
    text = f"{code:04x}"
    return "\\u" + (text.upper() if upper else text)


def _pair_escape(code: int, upper: bool) -> str:
    high = 0xD800 + ((code - 0x10000) >> 10)
    low = 0xDC00 + ((code - 0x10000) & 0x3FF)
    return _u_escape(high, upper) + _u_escape(low, upper)


_STRING_PIECES = st.one_of(
    # Literal characters, non-ASCII and astral included (sent as UTF-8), minus what must be escaped.
    st.characters(
        exclude_categories=["Cs"],
        exclude_characters='"\\' + "".join(map(chr, range(0x20))),
    ),
    _SIMPLE_ESCAPES,
    st.builds(_u_escape, st.integers(0, 0xFFFF), st.booleans()),  # lone surrogates too: valid JSON
    st.builds(_pair_escape, st.integers(0x10000, 0x10FFFF), st.booleans()),
    # What HTML-escaping encoders touch.
    st.sampled_from(["<", ">", "&", "\u2028", "\u2029", "é", "😀"]),
)
JSON_STRINGS = st.lists(_STRING_PIECES, max_size=12).map(lambda ps: '"' + "".join(ps) + '"')

JSON_NUMBERS = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.integers(min_value=-(2**128), max_value=2**128).map(str),
    st.sampled_from(["-0", "0.0", "1E400", "-1e-400", "9007199254740993", "0.1", "1.10"]),
)
JSON_SCALARS = st.one_of(st.sampled_from(["true", "false", "null"]), JSON_NUMBERS, JSON_STRINGS)


def _array(elements: list[tuple[str, str, str]], empty_ws: str) -> str:
    if not elements:
        return "[" + empty_ws + "]"
    return "[" + ",".join(a + value + b for a, value, b in elements) + "]"


def _object(members: list[tuple[str, str, str, str, str, str]], empty_ws: str) -> str:
    if not members:
        return "{" + empty_ws + "}"
    return "{" + ",".join("".join(member) for member in members) + "}"


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.builds(_array, st.lists(st.tuples(WS, children, WS), max_size=5), WS)
    # (ws, name, ws, ":" + ws, value, ws); names may repeat: still one valid JSON text.
    members = st.tuples(WS, JSON_STRINGS, WS, WS.map(lambda w: ":" + w), children, WS)
    objects = st.builds(_object, st.lists(members, max_size=5), WS)
    return st.one_of(arrays, objects)


JSON_TEXTS = st.recursive(JSON_SCALARS, _containers, max_leaves=20)


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def assert_valid_json(text: str) -> None:
    """A guard on the generator itself: every text it builds is valid JSON."""
    json.JSONDecoder(parse_constant=_no_constants).decode(text)


# -- reading member source text back out of a response -----------------------------------------

_DECODER = json.JSONDecoder()
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\n\r":
        i += 1
    return i


def _object_member_texts(text: str, i: int) -> tuple[dict[str, str], int]:
    """The members of the object at `i`, each as its exact source text."""
    assert text[i] == "{", text[i:]
    members: dict[str, str] = {}
    i = _skip_ws(text, i + 1)
    if text[i] == "}":
        return members, i + 1
    while True:
        assert text[i] == '"', text[i:]
        name, i = _scanstring(text, i + 1)
        i = _skip_ws(text, i)
        assert text[i] == ":", text[i:]
        i = _skip_ws(text, i + 1)
        _, end = _DECODER.raw_decode(text, i)
        members[name] = text[i:end]
        i = _skip_ws(text, end)
        if text[i] == "}":
            return members, i + 1
        assert text[i] == ",", text[i:]
        i = _skip_ws(text, i + 1)


def bulk_item_texts(body: str) -> list[dict[str, str]]:
    """A bulk-get answer as a list of {member: source text}, without re-serialising anything."""
    i = _skip_ws(body, 0)
    assert body[i] == "[", body
    items = []
    i = _skip_ws(body, i + 1)
    while body[i] != "]":
        item, i = _object_member_texts(body, i)
        items.append(item)
        i = _skip_ws(body, i)
        if body[i] == ",":
            i = _skip_ws(body, i + 1)
    return items


# -- 1. keys and values round-trip byte for byte --------------------------------------------------


@PROPERTY_SETTINGS
@given(
    key=KEYS,
    value=JSON_TEXTS,
    around=st.tuples(WS, WS, WS, WS),
    ascii_key=st.booleans(),
)
def test_any_key_and_json_text_round_trip_byte_for_byte_through_get_and_bulk(
    api: httpx.Client,
    store: str,
    key: str,
    value: str,
    around: tuple[str, str, str, str],
    ascii_key: bool,
) -> None:
    assert_valid_json(value)
    w1, w2, w3, w4 = around
    # The save body is built by hand as well: whitespace around the value is not part of it.
    body = (
        f'[{w1}{{"key":{json.dumps(key, ensure_ascii=ascii_key)},{w2}"value":{w3}{value}{w4}}}{w1}]'
    )
    saved = api.post(f"/v1.0/state/{store}", content=body.encode())
    assert saved.status_code == 204, saved.text

    answer = api.get(f"/v1.0/state/{store}/{url_key(key)}")
    assert answer.status_code == 200, answer.text
    assert answer.content == value.encode()
    assert answer.headers["etag"]

    bulk = api.post(f"/v1.0/state/{store}/bulk", content=json.dumps({"keys": [key]}).encode())
    assert bulk.status_code == 200, bulk.text
    (item,) = bulk_item_texts(bulk.text)
    assert json.loads(item["key"]) == key
    assert item["data"] == value
    assert json.loads(item["etag"]) == answer.headers["etag"]

    # The same URL deletes it. Cleaning up also keeps these odd values out of the shared
    # sidecar's stores, where other modules' queries would scan them.
    assert api.delete(f"/v1.0/state/{store}/{url_key(key)}").status_code == 204
    assert api.get(f"/v1.0/state/{store}/{url_key(key)}").status_code == 204


def query_result_texts(body: str) -> list[dict[str, str]]:
    """A query answer's `results`, each as {member: source text}."""
    members, _ = _object_member_texts(body, _skip_ws(body, 0))
    return bulk_item_texts(members["results"])


@PROPERTY_SETTINGS
@given(value=JSON_TEXTS)
def test_a_stored_json_text_is_found_by_query_and_returned_byte_for_byte(
    api: httpx.Client, store: str, value: str
) -> None:
    run = uuid.uuid4().hex
    document = f'{{"run":"{run}","v":{value}}}'
    key = f"query-{run}"
    body = f'[{{"key":"{key}","value":{document}}}]'.encode()
    assert api.post(f"/v1.0/state/{store}", content=body).status_code == 204
    try:
        answer = api.post(
            f"/v1.0-alpha1/state/{store}/query", json={"filter": {"EQ": {"run": run}}}
        )
        assert answer.status_code == 200, answer.text
        (item,) = query_result_texts(answer.text)
        assert json.loads(item["key"]) == key
        assert item["data"] == document
    finally:
        api.delete(f"/v1.0/state/{store}/{key}")


def test_query_finds_valid_json_beyond_float64_and_with_lone_surrogate_escapes(
    api: httpx.Client, store: str
) -> None:
    run = uuid.uuid4().hex
    documents = {
        f"{run}-big": f'{{"run":"{run}","n":1E400}}',
        f"{run}-surrogate": f'{{"run":"{run}","s":"\\ud800"}}',
    }
    items = ",".join(f'{{"key":"{k}","value":{d}}}' for k, d in documents.items())
    assert api.post(f"/v1.0/state/{store}", content=f"[{items}]".encode()).status_code == 204
    try:
        for key, document in documents.items():
            assert api.get(f"/v1.0/state/{store}/{key}").text == document
        answer = api.post(
            f"/v1.0-alpha1/state/{store}/query", json={"filter": {"EQ": {"run": run}}}
        )
        assert answer.status_code == 200, f"{answer.status_code} {answer.text}"
        found = {json.loads(i["key"]): i["data"] for i in query_result_texts(answer.text)}
        assert found == documents
    finally:
        for key in documents:
            api.delete(f"/v1.0/state/{store}/{key}")


# -- 2. ETag compare-and-swap loses no update ------------------------------------------------------

THREADS = 8
INCREMENTS = 12  # per thread
CAS_DEADLINE_S = 120.0  # a bound, not an expectation: a run takes a few seconds


def _read(client: httpx.Client, store: str, key: str) -> tuple[int, str]:
    answer = client.get(f"/v1.0/state/{store}/{url_key(key)}")
    assert answer.status_code == 200, answer.text
    return int(answer.content), answer.headers["etag"]


def _run_workers(worker: Callable[[int, float], list[str]]) -> list[str]:
    """Run `worker(index, deadline)` on THREADS threads at once; all the ETags they wrote with."""
    deadline = time.monotonic() + CAS_DEADLINE_S
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(worker, n, deadline) for n in range(THREADS)]
        return [etag for future in futures for etag in future.result()]


def test_concurrent_etag_compare_and_swap_increments_lose_no_update(
    sidecar: SidecarProcess, api: httpx.Client, store: str
) -> None:
    key = f"cas-{uuid.uuid4().hex[:12]}"
    assert api.post(f"/v1.0/state/{store}", json=[{"key": key, "value": 0}]).status_code == 204
    start = threading.Barrier(THREADS, timeout=30)

    def worker(index: int, deadline: float) -> list[str]:
        used: list[str] = []
        # Half the writers also ask for first-write: with an ETag, both modes must check it.
        options = {"concurrency": "first-write"} if index % 2 else {}
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            start.wait()
            while len(used) < INCREMENTS:
                assert time.monotonic() < deadline, f"worker {index}: {len(used)} increments"
                value, etag = _read(client, store, key)
                item = {"key": key, "value": value + 1, "etag": etag, "options": options}
                answer = client.post(f"/v1.0/state/{store}", json=[item])
                if answer.status_code == 204:
                    used.append(etag)
                else:
                    assert answer.status_code == 409, answer.text
                    assert answer.json()["errorCode"] == "ERR_STATE_SAVE"
        return used

    used = _run_workers(worker)
    assert _read(api, store, key)[0] == THREADS * INCREMENTS
    # No two writes succeeded against the same version.
    assert len(set(used)) == len(used) == THREADS * INCREMENTS


def test_concurrent_transactions_with_etags_move_two_counters_together_without_loss(
    sidecar: SidecarProcess, api: httpx.Client, store: str
) -> None:
    # One hash tag for both: a transaction over them is atomic on a Redis Cluster too.
    tag = uuid.uuid4().hex[:12]
    left, right = (f"{{{tag}}}tx-cas-{side}" for side in ("l", "r"))
    seeded = api.post(
        f"/v1.0/state/{store}", json=[{"key": left, "value": 0}, {"key": right, "value": 0}]
    )
    assert seeded.status_code == 204
    start = threading.Barrier(THREADS, timeout=30)

    def worker(index: int, deadline: float) -> list[str]:
        used: list[str] = []
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            start.wait()
            while len(used) < INCREMENTS:
                assert time.monotonic() < deadline, f"worker {index}: {len(used)} increments"
                left_value, left_etag = _read(client, store, left)
                right_value, right_etag = _read(client, store, right)
                operations = [
                    {
                        "operation": "upsert",
                        "request": {"key": left, "value": left_value + 1, "etag": left_etag},
                    },
                    {
                        "operation": "upsert",
                        # The JS SDK's shape for a transaction ETag.
                        "request": {
                            "key": right,
                            "value": right_value + 1,
                            "etag": {"value": right_etag},
                        },
                    },
                ]
                answer = client.post(
                    f"/v1.0/state/{store}/transaction", json={"operations": operations}
                )
                if answer.status_code == 204:
                    used.append(f"{left_etag}/{right_etag}")
                else:
                    assert answer.status_code == 500, answer.text
                    error = answer.json()
                    assert error["errorCode"] == "ERR_STATE_TRANSACTION"
                    assert "etag mismatch" in error["message"], error
        return used

    used = _run_workers(worker)
    assert _read(api, store, left)[0] == THREADS * INCREMENTS
    assert _read(api, store, right)[0] == THREADS * INCREMENTS
    assert len(set(used)) == len(used) == THREADS * INCREMENTS
