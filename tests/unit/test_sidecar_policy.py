"""
`api.policy` on its own: component defaults against request options, headers and TTLs, and the
store operations that save and transaction build alike. No ASGI, no store.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from statecar_contract.components import ResolvedComponent
from statecar_sidecar.api import bodies, policy
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.api.policy import DeleteItem, Options, SaveItem
from statecar_sidecar.stores.base import DeleteOp, SetOp

DEFAULTS = ResolvedComponent("orders", "state.in-memory")
NO_OPTIONS = policy.NO_OPTIONS


@dataclass(frozen=True)
class Store:
    name: str = "orders"
    component: ResolvedComponent = DEFAULTS
    prefix: str = "app||"
    default_ttl: int | None = None


def component(**fields: object) -> ResolvedComponent:
    return ResolvedComponent("orders", "state.in-memory", **fields)  # type: ignore[arg-type]  # test-only keyword fan-out


def refused(call: object, *args: object) -> DaprError:
    assert callable(call)
    with pytest.raises(DaprError) as raised:
        call(*args)
    assert raised.value.status == 400
    return raised.value


def save(key: str = "k", options: Options = NO_OPTIONS, **metadata: str) -> SaveItem:
    return SaveItem(key, b"1", None, options, metadata)


# -- keys --------------------------------------------------------------------------------------


def test_stored_key_puts_the_component_prefix_before_the_user_key() -> None:
    assert policy.stored_key(Store(), "k") == "app||k"
    assert policy.stored_key(Store(prefix=""), "k") == "k"


def test_a_key_with_the_separator_is_daprds_illegal_key_error() -> None:
    error = refused(policy.stored_key, Store(), "a||b")
    assert error.code == "ERR_MALFORMED_REQUEST"
    assert error.message == "input key/keyPrefix 'a||b' can't contain '||'"
    assert error.details[-1]["reason"] == "DAPR_STATE_ILLEGAL_KEY"


def test_a_key_with_nul_is_refused_on_every_backend() -> None:
    assert "NUL" in refused(policy.stored_key, Store(), "a\x00b").message


# -- options, headers and the component ----------------------------------------------------------


def test_an_absent_header_says_nothing_and_a_present_one_is_normalised() -> None:
    assert policy.header_choice(None, "concurrency", policy.CONCURRENCY) is None
    assert policy.header_choice(" First-Write ", "concurrency", policy.CONCURRENCY) == "first-write"


def test_a_bad_header_names_the_header_and_the_allowed_values() -> None:
    error = refused(policy.header_choice, "newest", "concurrency", policy.CONCURRENCY)
    assert (
        error.message == "header concurrency must be one of first-write, last-write, got 'newest'"
    )


def test_the_component_default_applies_when_the_request_says_nothing() -> None:
    store = Store(component=component(concurrency="first-write", consistency="strong"))
    assert policy.mode(store, None, "concurrency") == "first-write"
    assert policy.write_flags(store, Options(), None, None) == (True, True)
    assert policy.write_flags(Store(), Options(), None, None) == (False, False)


def test_the_request_wins_over_the_component_unless_it_enforces() -> None:
    store = Store(component=component(concurrency="first-write"))
    assert policy.mode(store, "last-write", "concurrency") == "last-write"
    enforcing = Store(component=component(concurrency="first-write", enforce=True))
    assert policy.mode(enforcing, "first-write", "concurrency") == "first-write"
    error = refused(policy.mode, enforcing, "last-write", "concurrency")
    assert error.message == (
        "state store orders enforces concurrency first-write: the request asked for last-write; "
        "drop the concurrency option or use first-write"
    )


def test_options_beat_headers_and_headers_beat_the_component() -> None:
    store = Store()
    assert policy.write_flags(store, Options(), "first-write", "strong") == (True, True)
    options = Options(concurrency="last-write", consistency="eventual")
    assert policy.write_flags(store, options, "first-write", "strong") == (False, False)


def test_a_bad_header_is_refused_only_when_it_is_consulted() -> None:
    options = Options(concurrency="last-write", consistency="eventual")
    assert policy.write_flags(Store(), options, "bogus", "bogus") == (False, False)
    refused(policy.write_flags, Store(), Options(), "bogus", None)


def test_enforce_applies_to_headers_too() -> None:
    enforcing = Store(component=component(consistency="eventual", enforce=True))
    refused(policy.write_flags, enforcing, Options(), None, "strong")


def test_a_read_takes_the_query_then_the_header_then_the_component() -> None:
    assert policy.read_strong(Store(), "strong", "eventual") is True
    assert policy.read_strong(Store(), None, "Strong") is True
    assert policy.read_strong(Store(), "", "strong") is True  # `?consistency=` is no choice
    assert policy.read_strong(Store(component=component(consistency="strong")), None, None)
    assert policy.read_strong(Store(), None, None) is False


def test_a_read_refuses_a_bad_query_parameter_as_sent() -> None:
    error = refused(policy.read_strong, Store(), "Strong", None)
    assert error.message == "query parameter consistency must be eventual or strong, got 'Strong'"


# -- TTL -----------------------------------------------------------------------------------------


def test_the_request_ttl_wins_over_the_component_default() -> None:
    assert policy.ttl({"ttlInSeconds": "5"}, 30) == 5
    assert policy.ttl({"ttlInSeconds": "0"}, 30) is None
    assert policy.ttl({}, None) is None
    assert policy.ttl({"ttlInSeconds": str(policy.MAX_TTL)}, None) == policy.MAX_TTL


# -- operations ----------------------------------------------------------------------------------


def test_a_save_item_becomes_a_set_with_prefix_flags_and_default_ttl() -> None:
    store = Store(default_ttl=60)
    (op,) = policy.save_operations(store, [save(options=Options("first-write"))], None, "strong")
    assert op == SetOp("app||k", b"1", None, first_write=True, strong=True, ttl=60)


def test_save_and_transaction_build_the_same_operation_for_the_same_item() -> None:
    item = SaveItem("k", b'{"a":1}', "7", Options(consistency="strong"), {"ttlInSeconds": "9"})
    (saved,) = policy.save_operations(Store(), [item], "first-write", None)
    (transacted,) = policy.transaction_operations(Store(), [item], "first-write", None)
    assert saved == transacted == SetOp("app||k", b'{"a":1}', "7", True, True, 9)


def test_a_transaction_keeps_the_order_and_kind_of_its_operations() -> None:
    items: list[SaveItem | DeleteItem] = [
        save("a"),
        DeleteItem("b", "3", Options("first-write"), {}),
        save("c", ttlInSeconds="-1"),
    ]
    ops = policy.transaction_operations(Store(default_ttl=10), items, None, None)
    assert ops == [
        SetOp("app||a", b"1", ttl=10),
        DeleteOp("app||b", "3", first_write=True),
        SetOp("app||c", b"1", ttl=None),
    ]


def test_a_transaction_builds_each_item_as_operation_builds_it_alone() -> None:
    # transaction_operations works the default flags and a shared metadata's TTL out once;
    # items with their own options or their own metadata must still get their own answers.
    shared = {"ttlInSeconds": "5"}
    items: list[SaveItem | DeleteItem] = [
        SaveItem("a", b"1", None, NO_OPTIONS, shared),
        SaveItem("b", b"2", None, Options("first-write"), shared),
        SaveItem("c", b"3", None, NO_OPTIONS, {"ttlInSeconds": "7"}),
        DeleteItem("d", None, NO_OPTIONS, shared),
        SaveItem("e", b"5", None, Options(consistency="strong"), shared),
        SaveItem("f", b"6", None, NO_OPTIONS, {}),
        SaveItem("g", b"7", None, NO_OPTIONS, shared),
    ]
    for store in (Store(), Store(default_ttl=60), Store(component=component(consistency="strong"))):
        for headers in ((None, None), ("first-write", None), (None, "strong")):
            expected = [policy.operation(store, item, *headers) for item in items]
            assert policy.transaction_operations(store, items, *headers) == expected


def test_a_transactions_first_bad_item_is_the_one_reported() -> None:
    shared = {"ttlInSeconds": "x"}
    items: list[SaveItem | DeleteItem] = [
        DeleteItem("a", None, NO_OPTIONS, {}),
        SaveItem("b||c", b"1", None, NO_OPTIONS, shared),  # its key before its TTL
        SaveItem("d", b"1", None, NO_OPTIONS, shared),
    ]
    assert (
        "can't contain"
        in refused(policy.transaction_operations, Store(), items, None, None).message
    )
    assert (
        "concurrency" in refused(policy.transaction_operations, Store(), items, "x", None).message
    )
    assert (
        "ttlInSeconds"
        in refused(policy.transaction_operations, Store(), items[2:], None, None).message
    )


def test_options_are_checked_before_the_key_and_the_key_before_the_ttl() -> None:
    enforcing = Store(component=component(enforce=True))
    both = save("a||b", Options("first-write"), ttlInSeconds="x")
    assert "enforces" in refused(policy.operation, enforcing, both, None, None).message
    key_and_ttl = save("a||b", ttlInSeconds="x")
    assert "can't contain" in refused(policy.operation, Store(), key_and_ttl, None, None).message


@pytest.mark.parametrize("query", [{}, {"ttlInSeconds": "9"}, {"ttlInSeconds": "-1"}])
def test_a_one_item_save_read_off_its_body_is_the_operation_its_item_becomes(
    query: dict[str, str],
) -> None:
    # The save route builds the usual one-item save with set_operation, from sole_item's
    # (key, value), never making the SaveItem that parse_save would give operation().
    body = b'[{"key":"k","value":{"a":[1.50,"\xc3\xa9"]}}]'
    sole = bodies.sole_item(body)
    assert sole == ("k", b'{"a":[1.50,"\xc3\xa9"]}')
    (item,) = bodies.parse_save(body, query)
    for store in (Store(), Store(default_ttl=60), Store(component=component(consistency="strong"))):
        for headers in ((None, None), ("first-write", None), (None, "strong")):
            expected = policy.operation(store, item, *headers)
            assert policy.set_operation(store, *sole, None, NO_OPTIONS, query, *headers) == expected


def test_a_one_item_save_is_refused_as_its_item_would_be() -> None:
    enforcing = Store(component=component(enforce=True))
    fields = ("a||b", b"1", None, NO_OPTIONS, {"ttlInSeconds": "x"})
    assert (
        "enforces" in refused(policy.set_operation, enforcing, *fields, "first-write", None).message
    )
    assert "can't contain" in refused(policy.set_operation, Store(), *fields, None, None).message
    assert (
        "ttlInSeconds"
        in refused(policy.set_operation, Store(), "k", *fields[1:], None, None).message
    )


@pytest.mark.parametrize("query", [{}, {"ttlInSeconds": "9"}, {"ttlInSeconds": "-1"}])
def test_upserts_read_off_the_body_are_the_operations_their_items_become(
    query: dict[str, str],
) -> None:
    # The transaction route builds the usual transaction with upsert_operations, from
    # plain_upserts' (key, value) pairs, never making the items parse_transaction would give.
    upserts = [("a", b"1"), ("b", b'{"x":[1.50]}'), ("a", b"null")]
    items: list[SaveItem | DeleteItem] = [
        SaveItem(key, value, None, NO_OPTIONS, query) for key, value in upserts
    ]
    for store in (Store(), Store(default_ttl=60), Store(component=component(consistency="strong"))):
        for headers in ((None, None), ("first-write", None), (None, "strong")):
            expected = policy.transaction_operations(store, items, *headers)
            assert policy.upsert_operations(store, upserts, query, *headers) == expected
    assert policy.upsert_operations(Store(), [], query, "not a mode", None) == []


def test_upserts_are_refused_as_their_items_would_be() -> None:
    # The flags first, then the first key, then the TTL: the general path's order.
    enforcing = Store(component=component(enforce=True))
    bad_key_first = [("a||b", b"1"), ("c", b"2")]
    bad_ttl = {"ttlInSeconds": "x"}
    assert (
        "enforces"
        in refused(
            policy.upsert_operations, enforcing, bad_key_first, bad_ttl, "first-write", None
        ).message
    )
    assert (
        "can't contain"
        in refused(policy.upsert_operations, Store(), bad_key_first, bad_ttl, None, None).message
    )
    assert (
        "ttlInSeconds"
        in refused(
            policy.upsert_operations, Store(), bad_key_first[::-1], bad_ttl, None, None
        ).message
    )
    assert (
        "can't contain"
        in refused(policy.upsert_operations, Store(), bad_key_first[::-1], {}, None, None).message
    )


def test_a_delete_takes_its_etag_and_the_weighed_flags() -> None:
    op = policy.delete_operation(Store(), "app||k", "4", Options(consistency="strong"), None, None)
    assert op == DeleteOp("app||k", etag="4", first_write=False, strong=True)
    enforcing = Store(component=component(enforce=True))
    refused(policy.delete_operation, enforcing, "app||k", None, Options(), "first-write", None)


class _Catalog:
    def __init__(self, stores: dict[str, str], failures: dict[str, str]) -> None:
        self.app_id = "orders"
        self.stores = stores
        self.failures = failures


def test_serving_store_answers_a_served_store_or_says_why_not() -> None:
    assert policy.serving_store("s", _Catalog({"s": "store"}, {})) == "store"
    with pytest.raises(DaprError) as failed:
        policy.serving_store("bad", _Catalog({"s": "store"}, {"bad": "c.yaml: port"}))
    assert (failed.value.status, failed.value.code) == (500, "ERR_STATE_STORE_NOT_CONFIGURED")
    assert "c.yaml: port" in failed.value.message
    with pytest.raises(DaprError) as none_yet:
        policy.serving_store("s", _Catalog({}, {}))
    assert none_yet.value.code == "ERR_STATE_STORE_NOT_CONFIGURED"
    with pytest.raises(DaprError) as unknown:
        policy.serving_store("other", _Catalog({"s": "store"}, {}))
    assert (unknown.value.status, unknown.value.code) == (400, "ERR_STATE_STORE_NOT_FOUND")
