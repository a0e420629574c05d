"""Pure sidecar logic: key prefixes (daprd's scheme), the concurrency table, TTL parsing, ETags."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from statecar_sidecar import keys
from statecar_sidecar.api import bodies, policy
from statecar_sidecar.api.asgi import Request
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.errors import ETagInvalidError, ETagMismatchError


@pytest.mark.parametrize(
    ("strategy", "namespace", "expected"),
    [
        ("appid", None, "app||k"),
        ("name", None, "store||k"),
        ("none", None, "k"),
        ("namespace", "shop", "shop.app||k"),
        ("namespace", None, "app||k"),
        ("myprefix", None, "myprefix||k"),
    ],
)
def test_key_prefixes_match_daprd(strategy: str, namespace: str | None, expected: str) -> None:
    prefix = keys.store_prefix(strategy, app_id="app", store_name="store", namespace=namespace)
    assert keys.stored_key(prefix, "k") == expected
    assert keys.user_key(expected) == "k"


def test_separator_in_a_key_is_illegal() -> None:
    with pytest.raises(keys.IllegalKeyError, match="can't contain"):
        keys.stored_key("app||", "a||b")


@pytest.mark.parametrize(
    ("current", "given", "first_write", "allowed"),
    [
        (None, "5", False, False),
        (None, "5", True, False),
        ("5", "5", False, True),
        ("5", "5", True, True),
        ("5", "6", False, False),
        ("5", "6", True, False),
        (None, None, False, True),
        ("5", None, False, True),
        (None, None, True, True),
        ("5", None, True, False),
    ],
)
def test_concurrency_table(
    current: str | None, given: str | None, first_write: bool, allowed: bool
) -> None:
    if allowed:
        etags.check_write("k", current, given, first_write=first_write)
    else:
        with pytest.raises(ETagMismatchError):
            etags.check_write("k", current, given, first_write=first_write)


def test_delete_of_absent_key_without_etag_is_fine_in_both_modes() -> None:
    etags.check_delete("k", None, None, first_write=True)
    etags.check_delete("k", None, None, first_write=False)


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "01", "1.5", "9" * 20, ""])
def test_only_issued_etag_shapes_are_valid(bad: str) -> None:
    with pytest.raises(ETagInvalidError):
        etags.validate_etag("k", bad)


def test_etag_clock_never_repeats_and_grows_past_current() -> None:
    clock = etags.ETagClock()
    issued = [clock.next(None) for _ in range(1000)]
    assert len(set(issued)) == 1000
    assert int(clock.next("99999999999999999")) == 10**17


@pytest.mark.parametrize(("raw", "expected"), [("60", 60), ("0", None), ("-1", None), ("007", 7)])
def test_ttl_values(raw: str, expected: int | None) -> None:
    assert policy.ttl({"ttlInSeconds": raw}, None) == expected


def test_ttl_absent_uses_the_component_default() -> None:
    assert policy.ttl({}, 30) == 30
    assert policy.ttl({"ttlInSeconds": "-1"}, 30) is None


# Exactly the integer grammar: daprd's strconv parse refuses spaces, and Python's int() would
# take the spaces, "+", "_" and non-ASCII digits below.
@pytest.mark.parametrize(
    "raw",
    ["x", "1.5", "-2", str(2**31), " 5 ", " 5", "5\n", "+5", "\u0665", "1_0", "", "9" * 5000],
)
def test_bad_ttl_is_a_clear_400(raw: str) -> None:
    with pytest.raises(DaprError) as raised:
        policy.ttl({"ttlInSeconds": raw}, None)
    assert raised.value.status == 400
    assert "ttlInSeconds" in raised.value.message


def test_save_keeps_each_value_as_sent() -> None:
    body = b'[{"Key":"a","VALUE":{"z":1.50,"a":"\\u00e9"},"etag":"7","options":{"concurrency":"first-write"}}]'
    (item,) = bodies.parse_save(body, {"ttlInSeconds": "9"})
    assert item.key == "a"
    assert item.value == b'{"z":1.50,"a":"\\u00e9"}'
    assert item.etag == "7"
    assert item.options.concurrency == "first-write"
    assert item.metadata == {"ttlInSeconds": "9"}


@pytest.mark.parametrize("query", [{}, {"ttlInSeconds": "9"}])
@pytest.mark.parametrize("value", [b"1", b"null", b'{"a":[1.5,"\xc3\xa9",{}]}', b'"s"', b"[]"])
def test_the_one_item_save_shortcut_gives_the_general_paths_item(
    query: dict[str, str], value: bytes
) -> None:
    """`[{"key":..., "value":...}]` skips the per-field checks; what it builds must not differ
    from the item the general path builds for the same save spelled otherwise."""
    sole = b'[{"key":"k","value":' + value + b"}]"
    (shortcut,) = bodies.parse_save(sole, query)
    assert bodies.parse_save_in_full(sole, query) == [shortcut]  # the same body, no shortcut
    for other in (
        b'[{"Key":"k","value":' + value + b"}]",  # another spelling: the general path
        b'[{"key":"k","value":' + value + b',"etag":"","options":null}]',
        b'[{"key": "k", "value": ' + value + b"}]",  # not canonical: the walker
    ):
        assert bodies.parse_save(other, query) == [shortcut], other
    assert shortcut.value == value
    assert shortcut.metadata == query
    assert shortcut.metadata is not query  # the item's own: the caller's mapping is not kept


def _upserts(*values: bytes) -> bytes:
    ops = b",".join(
        b'{"operation":"upsert","request":{"key":"t%d","value":%s}}' % (i, v)
        for i, v in enumerate(values)
    )
    return b'{"operations":[' + ops + b"]}"


@pytest.mark.parametrize("query", [{}, {"ttlInSeconds": "9"}])
@pytest.mark.parametrize(
    ("body", "plain"),
    [
        (_upserts(b'"x"'), True),
        (_upserts(b"1", b"null", b'{"a":[1.5,"\xc3\xa9",{}]}', b"[]", b"true"), True),
        (b'{"operations":[]}', True),
        (_upserts(b'"x"').replace(b'"operation"', b'"Operation"'), False),  # lowered
        (_upserts(b'"x"').replace(b'"key"', b'"KEY"'), False),
        (_upserts(b'"x"').replace(b'"upsert"', b'"delete"'), False),
        (_upserts(b'"x"').replace(b'"upsert"', b'"merge"'), False),  # refused, as before
        (_upserts(b'"x"').replace(b'"t0"', b'""'), False),  # empty key: refused
        (_upserts(b'"x"').replace(b'"t0"', b"7"), False),  # key not a string: refused
        (_upserts(b'"x"').replace(b'"value":"x"', b'"value":"x","etag":"3"'), False),
        (_upserts(b'"x"').replace(b'"value":"x"', b'"value":"x","metadata":{"a":"b"}'), False),
        (_upserts(b'"x"').replace(b'"value":"x"', b'"value":"x","options":null'), False),
        (_upserts(b'"x"')[:-1] + b',"metadata":{"ttlInSeconds":"5"}}', False),
        (b'{"operations":null}', False),
        (b'{"operations":{"operation":"upsert"}}', False),  # not an array: refused
        (b'{"operations":[1]}', False),
        (b'{"operations":[{"operation":"upsert","request":{"key":"k"}}]}', False),  # no value
        (_upserts(b'"x"').replace(b'"value":"x"', b'"value": "x"'), False),  # not canonical
    ],
)
def test_plain_upserts_read_as_the_general_path_reads_them(
    body: bytes, plain: bool, query: dict[str, str]
) -> None:
    """Upserts of just a key and a value skip the per-field checks; every transaction, taken
    that way or not, reads as the general path reads it (or is refused the same way)."""

    def read(parse: Callable[[], object]) -> object:
        try:
            return parse()
        except DaprError as exc:
            return exc.status, exc.message

    canonical = bodies._canonical(body)
    assert (bodies._plain_upserts(canonical, query) is not None) == plain
    general = read(lambda: bodies._parse_transaction(body, canonical, query))
    assert read(lambda: bodies.parse_transaction(body, query)) == general, body


_NESTED_SEPARATOR = b'[{"a":{"b":1}},{"operation":"upsert","request":{"key":"x","value":2}}]'


@pytest.mark.parametrize(
    ("body", "taken"),
    [
        (_upserts(b'"x"'), True),
        (_upserts(b'{"data":"' + b"y" * 1013 + b'"}', b"2", b"null"), True),
        # Kept exactly as sent: orjson would write 1.5, \u00e9 and the members' order otherwise.
        (_upserts(b"1.50", b'"\\u00e9"', b'{"b":1,"a":2}', b'{"a" : [ 1 ]}'), True),
        (_upserts(b'"\xc3\xa9"').replace(b'"t0"', b'"\xc3\xa9"'), True),  # UTF-8 key and value
        (_upserts(b"1", b"2").replace(b'"t1"', b'"t0"'), True),  # one key twice: both, in order
        (_upserts(b'"}},{\\"operation\\":\\"upsert\\""'), True),  # the cue in a string
        (_upserts(b'{"operation":"upsert","request":{"key":"k","value":1}}'), True),
        (_upserts(b'[{"a":{"b":1}},{"operation":"merge"}]', b"2"), True),  # the cue, not all
        (_upserts(b'[{"a":{"b":1}},{"operation":"merge"},{"c":{"d":2}},{"operation":1}]'), True),
        (_upserts(_NESTED_SEPARATOR), False),  # the whole separator inside a value
        (_upserts(_NESTED_SEPARATOR, b"3"), False),
        (_upserts(b"1", _NESTED_SEPARATOR), False),
        (_upserts(b'"x"').replace(b'"t0"', b'"a\\u0041"'), False),  # an escape in the key
        (_upserts(b'"x"').replace(b'"t0"', b'""'), False),  # empty key: the general 400
        (_upserts(b'"x"').replace(b'"t0"', b'"a\tb"'), False),  # a raw control character
        (_upserts(b'"x"').replace(b'"t0"', b'"\xed\xa0\x80"'), False),  # not UTF-8
        (_upserts(b" 1"), False),
        (_upserts(b"1 "), False),
        (_upserts(b""), False),
        (_upserts(b"1e400"), False),  # beyond a double: orjson refuses, the walker keeps it
        (_upserts(b"1,2"), False),
        (_upserts(b'"x"').replace(b'"value":"x"', b'"value":"x","etag":"3"'), False),
        (_upserts(b'"x"').replace(b'"value":"x"', b'"value":"x","value":"y"'), False),
        (_upserts(b'"x"').replace(b'{"key":"t0","value":"x"}', b'{"value":"x","key":"t0"}'), False),
        (_upserts(b'"x"').replace(b'"upsert"', b'"delete"'), False),
        (_upserts(b'"x"')[:-1] + b',"metadata":{"ttlInSeconds":"5"}}', False),
        (_upserts(b'"x"') + b" ", False),
        (_upserts(b'"x"') + b"]}", False),
        (b'{"operations":[]}', False),
    ],
)
def test_the_upserts_shortcut_reads_exactly_what_the_walker_reads(body: bytes, taken: bool) -> None:
    """A transaction of upserts spelled exactly the common way is read off its body; what the
    shortcut takes is what the general walker reads (the same keys, each value's exact text,
    nothing else given), and a body it cannot prove is that shape is left to the general path."""
    pairs = bodies.plain_upserts(body)
    assert (pairs is not None) == taken, body
    if pairs is None:
        return
    walked = bodies._parse_transaction(body, None, {})
    assert walked.operations == [
        bodies.SaveItem(key, value, None, bodies.Options(), {}) for key, value in pairs
    ]
    assert not walked.metadata


@pytest.mark.parametrize(
    "body",
    [
        b'[{"key":"k","value":1,"value":2}]',  # a member twice: text after the value
        b'[{"key":"k","value":1},{"key":"j","value":2}]',  # two items
        b'[{"key":"k","value":{"a":1},"etag":"3"}]',  # a member after the value
        b'[{"key":"k","value":{"a":1},"value":{"b":2}}]',
        b'[{"key":"k","value": 1}]',  # space before the value
        b'[{"key":"k","value":1 }]',  # space after it
        b'[{"key":"a\\u0041","value":1}]',  # an escape in the key
        b'[{"key":"k\t","value":1}]',  # a raw control character: not JSON
        b'[{"key":"k","value":1e400}]',  # beyond a double: orjson refuses, the walker keeps it
        b'[{"key":"\xc3\xa9","value":"\xc3\xa9"}]',  # UTF-8 key and value
        b'[{"key":"\xed\xa0\x80","value":1}]',  # an encoded surrogate: not UTF-8
        b'[{"key":"k","value":[1]}]',
        b'[{"key":"k","value":"}]"}]',
        b'[{"key":"k","value":1}]]',
        b'[{"key":"k","value":}]',
        b'[{"key":"","value":1}]',
    ],
)
def test_the_one_item_shortcut_reads_exactly_what_the_walker_reads(body: bytes) -> None:
    """The shortcut takes a body only when its one item is all there is; every other body, and
    what it does take, reads as the general walker reads it (or is refused the same way)."""

    def read(parse: Callable[[], list[bodies.SaveItem]]) -> object:
        try:
            return parse()
        except DaprError as exc:
            return exc.status

    walked = read(lambda: bodies._save_items(bodies._walk_save(body), {}))
    assert read(lambda: bodies.parse_save(body, {})) == walked, body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'[{"key":"","value":1}]', '"key" is a required field ([0].key)'),
        (b'[{"key":null,"value":1}]', '"key" is a required field ([0].key)'),
        (b'[{"key":5,"value":1}]', "[0].key must be a string"),
        (b'[{"etag":"1","value":1}]', '"key" is a required field ([0].key)'),
    ],
)
def test_a_one_item_save_with_a_bad_key_gets_the_general_paths_400(
    body: bytes, message: str
) -> None:
    with pytest.raises(DaprError) as raised:
        bodies.parse_save(body, {})
    assert (raised.value.status, raised.value.message) == (400, message)


def test_save_body_as_a_json_string_is_unwrapped() -> None:
    (item,) = bodies.parse_save(b'"[{\\"key\\": \\"k\\", \\"value\\": 1}]"', {})
    assert (item.key, item.value) == ("k", b"1")


def test_transaction_etag_as_object_or_string() -> None:
    body = b'{"operations":[{"operation":"upsert","request":{"key":"a","value":1,"etag":{"value":"3"}}},{"operation":"delete","request":{"key":"b","etag":"4"}}]}'
    tx = bodies.parse_transaction(body, {})
    assert [op.etag for op in tx.operations] == ["3", "4"]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"key":"a","value":{"z":1,"a":[1.5,"\xc3\xa9"]},"etag":"7"}]',  # canonical: orjson path
        b'[{"key":"a", "value":{"z":1,"a":[1.5,"\xc3\xa9"]},"etag":"7"}]',  # spaced: the walker
        b'[{"KEY":"a","Value":{"z":1,"a":[1.5,"\xc3\xa9"]},"etag":"7"}]',  # names in any case
    ],
)
def test_both_save_parsers_agree_and_keep_values_exact(body: bytes) -> None:
    (item,) = bodies.parse_save(body, {})
    assert (item.key, item.etag) == ("a", "7")
    assert item.value == '{"z":1,"a":[1.5,"é"]}'.encode()


def test_canonical_transaction_keeps_values_exact() -> None:
    body = b'{"operations":[{"operation":"upsert","request":{"key":"a","value":[1,{"b":null}],"etag":{"value":"3"}}}],"metadata":{"p":"1"}}'
    tx = bodies.parse_transaction(body, {})
    (op,) = tx.operations
    assert isinstance(op, bodies.SaveItem)
    assert (op.key, op.value, op.etag, dict(tx.metadata)) == (
        "a",
        b'[1,{"b":null}]',
        "3",
        {"p": "1"},
    )


def _compact_and_pretty(body: bytes) -> tuple[bytes, bytes]:
    # The compact body takes the orjson fast path; the spaced one takes the walker.
    return body, body.replace(b":", b": ")


@pytest.mark.parametrize("options", [b'{"concurrency":{"a":1}}', b'{"consistency":["strong"]}'])
def test_an_option_given_as_object_or_array_is_a_400_on_save_and_transaction(
    options: bytes,
) -> None:
    item = b'{"key":"k","value":1,"options":' + options + b"}"
    save = b"[" + item + b"]"
    transaction = b'{"operations":[{"operation":"upsert","request":' + item + b"}]}"
    for body in (*_compact_and_pretty(save), *_compact_and_pretty(transaction)):
        parse = bodies.parse_save if body.startswith(b"[") else bodies.parse_transaction
        with pytest.raises(DaprError) as raised:
            parse(body, {})
        assert (raised.value.status, raised.value.code) == (400, "ERR_MALFORMED_REQUEST")
        assert "options.con" in raised.value.message


@pytest.mark.parametrize("operations", [b"5", b"true", b"1.5", b'""', b"0", b"false", b"{}"])
def test_operations_that_are_not_an_array_are_the_same_400_on_both_parsers(
    operations: bytes,
) -> None:
    messages = set()
    for body in _compact_and_pretty(b'{"operations":' + operations + b"}"):
        with pytest.raises(DaprError) as raised:
            bodies.parse_transaction(body, {})
        assert (raised.value.status, raised.value.code) == (400, "ERR_MALFORMED_REQUEST")
        messages.add(raised.value.message.split(" at offset")[0])
    assert len(messages) == 1


@given(
    key=st.text(min_size=1).filter(lambda k: "\x00" not in k),
    value=st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    value_first=st.booleans(),
)
def test_the_one_item_shortcut_takes_the_values_exact_text_whatever_the_member_order(
    key: str, value: object, value_first: bool
) -> None:
    """The shortcut slices the value's text out of the canonical body when the key comes first
    and re-encodes it otherwise: both are the bytes the body holds."""
    key_text, value_text = orjson.dumps(key), orjson.dumps(value)
    members = [b'"key":' + key_text, b'"value":' + value_text]
    if value_first:
        members.reverse()
    body = b"[{" + b",".join(members) + b"}]"
    (item,) = bodies.parse_save(body, {})
    assert (item.key, item.value) == (key, value_text)


async def test_read_body_hands_over_only_a_whole_body_within_the_limit() -> None:
    # The plain read is the fast path; everything else must go through `body()`, which
    # refuses an oversized body with a 413 and reads an ASGI channel.
    assert Request("POST", b"", [], body=b"12345").read_body(5) == b"12345"
    assert Request("POST", b"", [], body=b"123456").read_body(5) is None
    assert Request("POST", b"", [], body=b"1", too_large=True).read_body(5) is None

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"12", "more_body": False}

    channel = Request("POST", b"", [], receive=receive)
    assert channel.read_body(5) is None
    assert await channel.body(5) == b"12"
    with pytest.raises(DaprError) as refused:
        await Request("POST", b"", [], body=b"123456").body(5)
    assert refused.value.status == 413
