"""
Dapr's state query language (`statecar_sidecar.stores.query`): the grammar and daprd's error
messages, what each operator matches, sorting and paging over stored rows, the query scenarios
of components-contrib's state conformance suite, and a property test holding the PostgreSQL
translation to the same answers as the in-process evaluation on a real PostgreSQL server.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import pg_server

from statecar_sidecar.stores.postgresql.query_sql import compile_postgres
from statecar_sidecar.stores.query import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_BYTES,
    And,
    Eq,
    Gt,
    Gte,
    In,
    Lt,
    Lte,
    Neq,
    Or,
    Page,
    Query,
    QueryError,
    QueryPage,
    QueryResult,
    SortKey,
    cut_page,
    json_text,
    loads_exact,
    parse_query,
    run_query,
    run_query_async,
)


def rows_of(values: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """Rows as a backend holds them: key, the JSON text as sent, an etag."""
    return [
        (key, value if isinstance(value, bytes) else json.dumps(value).encode(), f"etag-{key}")
        for key, value in values.items()
    ]


def keys(page: QueryPage) -> list[str]:
    return [result.key for result in page.results]


def query_keys(document: object, values: dict[str, Any]) -> list[str]:
    return keys(run_query(parse_query(document), rows_of(values)))


# ---------------------------------------------------------------------------------------------
# Grammar


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # components-contrib state/query/filter.go messages
        ({"filter": "EQ"}, "filter unit must be a map"),
        ({"filter": ["EQ"]}, "filter unit must be a map"),
        ({"filter": {"EQ": {"a": 1}, "NEQ": {"b": 2}}}, "filter unit must have a single element"),
        ({"filter": {"XOR": {"a": 1}}}, 'unsupported filter "XOR"'),
        ({"filter": {"eq": {"a": 1}}}, 'unsupported filter "eq"'),
        ({"filter": {"EQ": ["a", 1]}}, "EQ filter must be a map"),
        ({"filter": {"EQ": {}}}, "EQ filter must contain a single key/value pair"),
        ({"filter": {"EQ": {"a": 1, "b": 2}}}, "EQ filter must contain a single key/value pair"),
        ({"filter": {"NEQ": {}}}, "NEQ filter must contain a single key/value pair"),
        ({"filter": {"GT": {"a": 1, "b": 2}}}, "GT filter must contain a single key/value pair"),
        ({"filter": {"GTE": 3}}, "GTE filter must be a map"),
        ({"filter": {"LT": {}}}, "LT filter must contain a single key/value pair"),
        ({"filter": {"LTE": None}}, "LTE filter must be a map"),
        ({"filter": {"IN": [1, 2]}}, "IN filter must be a map"),
        (
            {"filter": {"IN": {"a": [1], "b": [2]}}},
            "IN filter must contain a single key/value pair",
        ),
        ({"filter": {"IN": {"a": 1}}}, "IN filter value must be an array"),
        ({"filter": {"IN": {"a": "xy"}}}, "IN filter value must be an array"),
        ({"filter": {"AND": {"EQ": {"a": 1}}}}, "AND filter must be an array"),
        ({"filter": {"AND": [{"EQ": {"a": 1}}]}}, "AND filter must contain at least two entries"),
        ({"filter": {"OR": []}}, "OR filter must contain at least two entries"),
        ({"filter": {"OR": [1, {"EQ": {"a": 1}}]}}, "filter unit must be a map"),
        ({"filter": {"AND": [{}, {"EQ": {"a": 1}}]}}, "filter unit must have a single element"),
        (
            {"filter": {"OR": [{"EQ": {"a": 1}}, {"AND": [{"EQ": {"a": 1}}, {"NOT": {}}]}]}},
            'unsupported filter "NOT"',
        ),
        # components-contrib state/query/query.go messages
        ({"sort": {"key": "a"}}, '"sort" must be an array'),
        ({"sort": "a"}, '"sort" must be an array'),
        ({"page": [2]}, '"page" must be a map'),
        ({"page": 2}, '"page" must be a map'),
    ],
)
def test_grammar_errors_use_daprd_messages(document: object, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(document)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([], "the query must be a JSON object, got an array"),
        ("filter", "the query must be a JSON object, got a string"),
        ({"sort": [1]}, 'sort[0] must be an object like {"key": "a.b", "order": "ASC"}'),
        ({"sort": [{"order": "ASC"}]}, "sort[0].key must be a string (a dot path into the value)"),
        ({"sort": [{"key": "a"}, {"key": 3}]}, "sort[1].key must be a string"),
        (
            {"sort": [{"key": "a", "order": "desc"}]},
            'sort[0].order must be "ASC" or "DESC", got "desc"',
        ),
        (
            {"sort": [{"key": "a", "order": 1}]},
            'sort[0].order must be "ASC" or "DESC", got a number',
        ),
        (
            {"page": {"limit": -1}},
            "page.limit must be a whole number from 0 (the default, 1000) up to 10000, got -1",
        ),
        ({"page": {"limit": 10001}}, "up to 10000, got 10001: follow the page token"),
        ({"page": {"limit": 1.5}}, "page.limit must be a whole number"),
        ({"page": {"limit": 2.0}}, "page.limit must be a whole number"),
        ({"page": {"limit": "2"}}, "page.limit must be a whole number"),
        ({"page": {"limit": True}}, "page.limit must be a whole number"),
        ({"page": {"limit": 2**63}}, "page.limit must be a whole number"),
        (
            {"page": {"limit": 2, "token": 2}},
            "page.token must be the string a previous query returned",
        ),
        ({"page": {"limit": 2, "token": "abc"}}, 'invalid page token "abc"'),
        ({"page": {"limit": 2, "token": "-1"}}, 'invalid page token "-1"'),
        ({"page": {"limit": 2, "token": "+1"}}, 'invalid page token "+1"'),
        ({"page": {"limit": 2, "token": " 1"}}, 'invalid page token " 1"'),
        ({"page": {"limit": 2, "token": "١"}}, 'invalid page token "١"'),  # Arabic-Indic one
        ({"page": {"limit": 2, "token": "9" * 20}}, "invalid page token"),
        ({"filter": {"EQ": {"a": math.nan}}}, 'EQ filter value for "a" must be a finite number'),
        ({"filter": {"IN": {"a": [1, math.inf]}}}, 'IN filter value for "a" must be a finite'),
        ({"filter": {"EQ": {"a": {1, 2}}}}, 'EQ filter value for "a" must be JSON, got set'),
        ({"filter": {"EQ": {"a": {1: 2}}}}, 'EQ filter value for "a" has a non-string object key'),
    ],
)
def test_other_errors_name_the_field_and_the_fix(document: object, fragment: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(document)
    assert fragment in str(caught.value)


def test_query_error_is_a_store_error() -> None:
    from statecar_sidecar.stores.errors import StoreError

    assert issubclass(QueryError, StoreError)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    node: dict[str, Any] = {"EQ": {"a": 1}}
    for _ in range(150):
        node = {"AND": [node, {"EQ": {"b": 2}}]}
    with pytest.raises(QueryError, match="nested deeper than 100 levels"):
        parse_query({"filter": node})
    value: Any = 1
    for _ in range(300):
        value = [value]
    with pytest.raises(QueryError, match="nested deeper than 200 levels"):
        parse_query({"filter": {"EQ": {"a": value}}})


def test_empty_and_missing_parts_mean_match_all() -> None:
    everything = Query(filter=None, sort=(), page=Page(limit=0, offset=0))
    assert parse_query({}) == everything
    assert parse_query(None) == everything  # Go decodes a `null` body into the zero query
    assert parse_query({"filter": {}}) == everything
    assert parse_query({"filter": None, "sort": None, "page": None}) == everything
    assert parse_query({"sort": [], "page": {}}) == everything
    assert parse_query({"unknown": 1, "filter": {}}) == everything  # Go ignores unknown members


def test_parse_builds_the_tree() -> None:
    query = parse_query(
        {
            "filter": {
                "OR": [
                    {"EQ": {"person.org": "A"}},
                    {"AND": [{"NEQ": {"person.org": "B"}}, {"IN": {"state": ["CA", "WA"]}}]},
                    {"GT": {"n": 1}},
                    {"GTE": {"n": 1.5}},
                    {"LT": {"s": "m"}},
                    {"LTE": {"s": "n"}},
                ]
            },
            "sort": [{"key": "state", "order": "DESC"}, {"key": "person.name"}],
            "page": {"limit": 2, "token": "4"},
        }
    )
    assert query == Query(
        filter=Or(
            (
                Eq(("person", "org"), "A"),
                And((Neq(("person", "org"), "B"), In(("state",), ("CA", "WA")))),
                Gt(("n",), 1),
                Gte(("n",), 1.5),
                Lt(("s",), "m"),
                Lte(("s",), "n"),
            )
        ),
        sort=(SortKey(("state",), descending=True), SortKey(("person", "name"))),
        page=Page(limit=2, offset=4),
    )
    assert query.filter is not None
    assert query.filter.filters[0].key == "person.org"  # type: ignore[union-attr]


def test_member_names_match_case_insensitively_like_go() -> None:
    # daprd decodes with Go's encoding/json: struct fields match names case-insensitively, a
    # later member overwrites an earlier one. Operator names stay case-sensitive (a map key).
    query = parse_query(
        {
            "Filter": {"EQ": {"a": 1}},
            "SORT": [{"Key": "a", "ORDER": "DESC"}],
            "page": {"limit": 1},
            "Page": {"LIMIT": 3, "Token": "2"},
        }
    )
    assert query == Query(
        filter=Eq(("a",), 1), sort=(SortKey(("a",), True),), page=Page(limit=3, offset=2)
    )


def test_sort_order_defaults_to_ascending() -> None:
    query = parse_query(
        {"sort": [{"key": "a"}, {"key": "b", "order": ""}, {"key": "c", "order": None}]}
    )
    assert [s.descending for s in query.sort] == [False, False, False]
    assert parse_query({"sort": [{"key": "a", "order": "ASC"}]}).sort == (SortKey(("a",)),)


def test_empty_token_is_the_first_page() -> None:
    assert parse_query({"page": {"limit": 2, "token": ""}}).page == Page(limit=2, offset=0)
    assert parse_query({"page": {"token": "007"}}).page == Page(limit=0, offset=7)


# ---------------------------------------------------------------------------------------------
# Operators


def matches(node: object, value: object) -> bool:
    return parse_query({"filter": node}).matches(value)


DOC = {
    "n": 10,
    "f": 2.5,
    "s": "hello",
    "b": True,
    "z": None,
    "o": {"x": 1, "y": [1, 2]},
    "arr": [1, {"k": "v"}],
    "person": {"org": "A", "name": "Ann", "address": {"city": "Oslo"}},
}


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"EQ": {"n": 10}}, True),
        ({"EQ": {"n": 10.0}}, True),  # numbers compare by value
        ({"EQ": {"n": 11}}, False),
        ({"EQ": {"n": "10"}}, False),  # a string is not a number
        ({"EQ": {"b": True}}, True),
        ({"EQ": {"b": 1}}, False),  # true is not 1
        ({"EQ": {"z": None}}, True),  # JSON null is present
        ({"EQ": {"missing": None}}, False),  # a missing path is not null
        ({"EQ": {"o": {"y": [1, 2.0], "x": 1}}}, True),  # objects ignore member order
        ({"EQ": {"o": {"x": 1}}}, False),
        ({"EQ": {"o.y": [2, 1]}}, False),  # arrays compare in order
        ({"EQ": {"person.address.city": "Oslo"}}, True),
        ({"EQ": {"person.address": {"city": "Oslo"}}}, True),
        ({"EQ": {"arr.1.k": "v"}}, False),  # paths never index into arrays
        ({"EQ": {"s.length": 5}}, False),
        ({"NEQ": {"n": 10}}, False),
        ({"NEQ": {"n": 9}}, True),
        ({"NEQ": {"b": 1}}, True),
        ({"NEQ": {"missing": 1}}, True),  # NEQ is "not EQ": a missing value differs
        ({"NEQ": {"person.missing.deeper": "x"}}, True),
        ({"GT": {"n": 9}}, True),
        ({"GT": {"n": 10}}, False),
        ({"GT": {"n": 9.99}}, True),
        ({"GTE": {"n": 10}}, True),
        ({"GTE": {"f": 2.5}}, True),
        ({"LT": {"f": 3}}, True),
        ({"LT": {"f": 2.5}}, False),
        ({"LTE": {"f": 2.5}}, True),
        ({"LTE": {"n": 9}}, False),
        ({"GT": {"s": "hell"}}, True),  # strings compare lexicographically
        ({"LT": {"s": "help"}}, True),
        ({"GT": {"s": "Z"}}, True),  # by code point: "h" > "Z"
        ({"GT": {"n": "1"}}, False),  # number vs string: never
        ({"LT": {"s": 100}}, False),
        ({"GT": {"b": False}}, False),  # booleans are not ordered
        ({"GTE": {"z": None}}, False),
        ({"LTE": {"o": {"x": 1}}}, False),
        ({"GT": {"missing": 0}}, False),
        ({"IN": {"n": [1, 10]}}, True),
        ({"IN": {"n": [1.0, 10.0]}}, True),
        ({"IN": {"s": ["a", "b"]}}, False),
        ({"IN": {"z": [None]}}, True),
        ({"IN": {"missing": [None]}}, False),
        ({"IN": {"b": [1]}}, False),
        ({"IN": {"o.y": [[1, 2]]}}, True),
        ({"IN": {"n": []}}, False),  # an empty list matches nothing
        ({"AND": [{"EQ": {"n": 10}}, {"EQ": {"s": "hello"}}]}, True),
        ({"AND": [{"EQ": {"n": 10}}, {"EQ": {"s": "bye"}}]}, False),
        ({"OR": [{"EQ": {"n": 1}}, {"EQ": {"s": "hello"}}]}, True),
        ({"OR": [{"EQ": {"n": 1}}, {"EQ": {"s": "bye"}}]}, False),
        (
            {
                "OR": [
                    {"AND": [{"EQ": {"person.org": "B"}}, {"GT": {"n": 1}}]},
                    {
                        "AND": [
                            {"EQ": {"person.org": "A"}},
                            {"OR": [{"LT": {"n": 5}}, {"IN": {"person.name": ["Ann"]}}]},
                            {"NEQ": {"s": "bye"}},
                        ]
                    },
                ]
            },
            True,
        ),
    ],
)
def test_operator(node: dict[str, Any], expected: bool) -> None:
    assert matches(node, DOC) is expected


def test_numbers_compare_exactly_across_int_and_float() -> None:
    # 1e23 as a double is 99999999999999991611392, but it was written (and PostgreSQL's numeric
    # reads it) as 10**23: statecar compares the written decimal.
    assert matches({"EQ": {"v": 10**23}}, {"v": 1e23})
    assert not matches({"GT": {"v": 10**23}}, {"v": 1e23})
    assert matches({"LT": {"v": 10**23 + 1}}, {"v": 1e23})
    assert matches({"EQ": {"v": 0}}, {"v": -0.0})
    assert matches({"GT": {"v": 2**63}}, {"v": 2**64})


def test_path_walks_objects_only_and_other_documents_never_match() -> None:
    for document in (5, "x", None, [{"a": 1}], True):
        assert not matches({"EQ": {"a": 1}}, document)
        assert matches({"NEQ": {"a": 1}}, document)
    assert matches({"EQ": {"": 1}}, {"": 1})  # an empty segment is the key ""
    assert matches({"EQ": {"a..b": 1}}, {"a": {"": {"b": 1}}})
    assert not matches({"EQ": {"a.b": 1}}, {"a.b": 1})  # a dotted member cannot be reached


def test_no_filter_matches_everything() -> None:
    assert Query().matches(None)
    assert Query().matches([1, 2])


# ---------------------------------------------------------------------------------------------
# run_query: decode, filter, sort, page


PEOPLE = {
    "p1": {"person": {"org": "A", "name": "Zed"}, "state": "CA", "age": 30},
    "p2": {"person": {"org": "B", "name": "Amy"}, "state": "WA", "age": 25.5},
    "p3": {"person": {"org": "A", "name": "Bob"}, "state": "WA", "age": 41},
    "p4": {"person": {"org": "C", "name": "Cat"}, "state": "CA", "age": 30},
    "p5": {"person": {"org": "B", "name": "Dan"}, "state": "NY"},
}


def test_sort_multi_key_asc_and_desc() -> None:
    sort = [{"key": "state", "order": "DESC"}, {"key": "person.name"}]
    assert query_keys({"sort": sort}, PEOPLE) == ["p2", "p3", "p5", "p4", "p1"]
    sort = [{"key": "age"}, {"key": "person.name", "order": "DESC"}]
    assert query_keys({"sort": sort}, PEOPLE) == ["p2", "p1", "p4", "p3", "p5"]


def test_sort_missing_values_go_last_ascending_and_first_descending() -> None:
    assert query_keys({"sort": [{"key": "age"}]}, PEOPLE) == ["p2", "p1", "p4", "p3", "p5"]
    assert query_keys({"sort": [{"key": "age", "order": "DESC"}]}, PEOPLE) == [
        "p5",
        "p3",
        "p1",  # 30 ties with p4: ties keep key order in both directions
        "p4",
        "p2",
    ]


def test_sort_orders_types_then_values() -> None:
    values = {
        "obj": {"v": {"a": 1}},
        "arr": {"v": [1]},
        "null": {"v": None},
        "true": {"v": True},
        "false": {"v": False},
        "str-b": {"v": "b"},
        "str-B": {"v": "B"},
        "num-big": {"v": 1e23},
        "num-int": {"v": 10**22},
        "num-neg": {"v": -1.5},
        "absent": {"w": 1},
        "scalar": 7,
    }
    ascending = [
        "num-neg",
        "num-int",
        "num-big",
        "str-B",
        "str-b",
        "false",
        "true",
        "null",
        "arr",
        "obj",
        "absent",
        "scalar",
    ]
    assert query_keys({"sort": [{"key": "v"}]}, values) == ascending
    descending = query_keys({"sort": [{"key": "v", "order": "DESC"}]}, values)
    assert descending == ["absent", "scalar", *reversed(ascending[:-2])]


def test_without_sort_results_are_in_key_order() -> None:
    rows = rows_of({"b": 1, "a": 2, "é": 3, "Z": 4, "a-2": 5})
    assert keys(run_query(parse_query({}), rows)) == ["Z", "a", "a-2", "b", "é"]


def test_paging_walks_all_results_with_tokens() -> None:
    values = {f"k{i:02}": {"i": i, "even": i % 2 == 0} for i in range(23)}
    document: dict[str, Any] = {
        "filter": {"EQ": {"even": True}},
        "sort": [{"key": "i", "order": "DESC"}],
        "page": {"limit": 5},
    }
    seen: list[str] = []
    tokens: list[str] = []
    while True:
        page = run_query(parse_query(document), rows_of(values))
        seen.extend(keys(page))
        if page.token is None:
            assert page.results == []
            break
        tokens.append(page.token)
        document["page"]["token"] = page.token
    assert seen == [f"k{i:02}" for i in range(22, -1, -2)]
    assert tokens == ["5", "10", "12"]


def test_token_rules() -> None:
    values = {f"k{i}": {"i": i} for i in range(5)}
    # limit > 0 and a non-empty page: the offset of the next page
    page = run_query(parse_query({"page": {"limit": 2, "token": "4"}}), rows_of(values))
    assert (keys(page), page.token) == (["k4"], "5")
    # past the end: nothing, no token (daprd answers 204)
    page = run_query(parse_query({"page": {"limit": 2, "token": "5"}}), rows_of(values))
    assert (keys(page), page.token) == ([], None)
    page = run_query(parse_query({"page": {"limit": 2, "token": "999"}}), rows_of(values))
    assert (keys(page), page.token) == ([], None)
    # no limit: everything from the offset, no token
    page = run_query(parse_query({"page": {"limit": 0}}), rows_of(values))
    assert (len(page.results), page.token) == (5, None)
    page = run_query(parse_query({"page": {"token": "3"}}), rows_of(values))
    assert (keys(page), page.token) == (["k3", "k4"], None)


@pytest.mark.parametrize("token", ["x", "1.5", "-2", "0x10", "1e3", "١٢"])
def test_invalid_tokens(token: str) -> None:
    with pytest.raises(QueryError, match="invalid page token"):
        parse_query({"page": {"limit": 2, "token": token}})


def test_results_carry_the_stored_bytes_unchanged() -> None:
    stored = [
        ("a", b'{ "n" : 1.00, "z":1, "a":[1 ,2], "s": "\\u00e9\\/<>&" }', "e1"),
        ("b", b'{"n":1e0,"big":123456789012345678901234567890}', "e2"),
        ("c", b'\t{"n":1.0}\n', "e3"),
        ("d", b'{"n":2}', "e4"),
    ]
    page = run_query(parse_query({"filter": {"EQ": {"n": 1}}}), stored)
    assert [(r.key, r.data, r.etag) for r in page.results] == [
        (key, data, etag) for key, data, etag in stored[:3]
    ]


def test_values_that_are_not_json_are_skipped() -> None:
    stored = [
        ("bin", b"\x01", "e"),
        ("text", b"hello world", "e"),
        ("half", b'{"a": 1', "e"),
        ("str", b'"hello world"', "e"),
        ("obj", b'{"a": 1}', "e"),
    ]
    assert keys(run_query(parse_query({}), stored)) == ["obj", "str"]
    assert keys(run_query(parse_query({"filter": {"NEQ": {"a": 2}}}), stored)) == ["obj", "str"]


# ---------------------------------------------------------------------------------------------
# The query scenarios of components-contrib tests/conformance/state/state.go (research notes
# dapr-state-spec.md §7.1 data, §7.2 item 6).

K = uuid.uuid4().hex


def scenario_rows() -> list[tuple[str, bytes, str]]:
    # Everything the "set" step writes (neither bulkOnly nor transactionOnly), as JSON text,
    # with the struct values byte for byte as the suite writes them.
    return [
        (f"{K}-int", b"123", "1"),
        (f"{K}-bool", b"true", "2"),
        (f"{K}-bytes", b"\x01", "3"),
        (f"{K}-string-with-json", b'"{\\"a\\":\\"b\\"}"', "4"),
        (f"{K}-string", b'"hello world"', "5"),
        (f"{K}-empty-string", b'""', "6"),
        (f"{K}-struct", f'{{"message":"test{K}"}}'.encode(), "7"),
        (
            f"{K}-struct-operations",
            f'{{"product":{{"value":15}}, "status":"ACTIVE","message":"{K}message"}}'.encode(),
            "8",
        ),
        (
            f"{K}-struct-operations-inactive",
            f'{{"product":{{"value":12}}, "status":"INACTIVE","message":"{K}message"}}'.encode(),
            "9",
        ),
        (f"{K}-struct-2", f'{{"message":"{K}test"}}'.encode(), "10"),
        (f"{K}-struct-with-int", b'{"message":42}', "11"),
        (f"{K}-to-be-deleted", b'"to be deleted"', "12"),
    ]


CONFORMANCE_SCENARIOS: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "or-eq-in",
        {
            "filter": {
                "OR": [{"EQ": {"message": "dummy"}}, {"IN": {"message": [f"test{K}", "dummy"]}}]
            }
        },
        [f"{K}-struct"],
    ),
    (
        "and-eq-range-neq",
        {
            "filter": {
                "AND": [
                    {"EQ": {"message": f"{K}message"}},
                    {"GTE": {"product.value": 10}},
                    {"LT": {"product.value": 20}},
                    {"NEQ": {"status": "INACTIVE"}},
                ]
            }
        },
        [f"{K}-struct-operations"],
    ),
    (
        "or-of-ands",
        {
            "filter": {
                "OR": [
                    {
                        "AND": [
                            {"EQ": {"message": f"{K}message"}},
                            {"GT": {"product.value": 11.1}},
                            {"EQ": {"status": "INACTIVE"}},
                        ]
                    },
                    {
                        "AND": [
                            {"EQ": {"message": f"{K}message"}},
                            {"LTE": {"product.value": 0.5}},
                            {"EQ": {"status": "ACTIVE"}},
                        ]
                    },
                ]
            }
        },
        [f"{K}-struct-operations-inactive"],
    ),
    (
        "two-results-in-order",
        {
            "filter": {
                "OR": [{"EQ": {"message": f"{K}test"}}, {"IN": {"message": [f"test{K}", "dummy"]}}]
            }
        },
        [f"{K}-struct", f"{K}-struct-2"],
    ),
    # The fifth scenario repeats the fourth with metadata partitionKey=<K>-struct-2 and runs only
    # for stores with the PARTITION_KEY feature (Cosmos DB). statecar has no partitions: the
    # metadata does not reach the query, which answers as the fourth scenario does.
    (
        "partition-key-ignored",
        {
            "filter": {
                "OR": [{"EQ": {"message": f"{K}test"}}, {"IN": {"message": [f"test{K}", "dummy"]}}]
            }
        },
        [f"{K}-struct", f"{K}-struct-2"],
    ),
]


@pytest.mark.parametrize(
    ("document", "expected"),
    [pytest.param(doc, exp, id=name) for name, doc, exp in CONFORMANCE_SCENARIOS],
)
def test_conformance_scenarios(document: dict[str, Any], expected: list[str]) -> None:
    rows = scenario_rows()
    page = run_query(parse_query(document), rows)
    assert keys(page) == expected
    stored = dict((key, data) for key, data, _ in rows)
    for result in page.results:
        assert result.data == stored[result.key]  # the suite compares JSON; these are the bytes
    assert page.token is None


# ---------------------------------------------------------------------------------------------
# compile_postgres without a server


def test_compiled_sql_keeps_every_query_value_in_params() -> None:
    hostile = "x'); DROP TABLE state; --"
    query = parse_query(
        {
            "filter": {
                "OR": [
                    {"EQ": {hostile: hostile}},
                    {"GT": {f"a.{hostile}": hostile}},
                    {"IN": {"b": [hostile, 1]}},
                    {"NEQ": {"c": {hostile: [hostile]}}},
                ]
            },
            "sort": [{"key": hostile, "order": "DESC"}],
            "page": {"limit": 3, "token": "6"},
        }
    )
    compiled = compile_postgres(query, value_column="v.doc", key_column="v.key", first_param=3)
    assert "DROP" not in compiled.where
    assert "DROP" not in compiled.order_by
    assert all(isinstance(p, str) for p in compiled.params)
    assert hostile in compiled.params
    placeholders = {f"${n}::text" for n in range(3, 3 + len(compiled.params))}
    for placeholder in placeholders:
        assert placeholder in compiled.where + compiled.order_by
    assert "$1::" not in compiled.where
    assert "$2::" not in compiled.where
    assert compiled.next_param == 3 + len(compiled.params)
    assert (compiled.limit, compiled.offset) == (4, 6)  # one more than the page: more follow?
    assert compiled.order_by.endswith('(v.key) COLLATE "C" ASC')


def test_compiled_sql_without_filter_sort_or_limit() -> None:
    compiled = compile_postgres(parse_query({}), value_column="doc", key_column="k")
    assert compiled.where == "(doc) IS NOT NULL"
    assert compiled.order_by == '(k) COLLATE "C" ASC'
    assert compiled.params == []
    assert (compiled.limit, compiled.offset, compiled.next_param) == (1001, 0, 1)


@pytest.mark.parametrize("value", [None, True, [1], {"a": 1}])
def test_compiled_range_on_unordered_value_is_false_with_no_params(value: object) -> None:
    # Every registered parameter must appear in the statement, or PostgreSQL refuses it.
    compiled = compile_postgres(
        parse_query({"filter": {"GT": {"a.b": value}}}), value_column="doc", key_column="k"
    )
    assert compiled.where == "(doc) IS NOT NULL AND FALSE"
    assert compiled.params == []


def test_compile_refuses_nul_characters_postgres_cannot_hold() -> None:
    query = parse_query({"filter": {"EQ": {"a": "nul\x00here"}}})
    with pytest.raises(QueryError, match="U\\+0000"):
        compile_postgres(query, value_column="doc", key_column="k")


# ---------------------------------------------------------------------------------------------
# compile_postgres on a real PostgreSQL: the same answers as run_query


@pytest.fixture(scope="module")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


@pytest.fixture(scope="module")
async def pg(postgres: pg_server.PgServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(postgres.dsn)
    # `value` is NULL for stored bytes that are not JSON, as the backend's jsonb column would be.
    await conn.execute("CREATE TEMP TABLE docs (key text PRIMARY KEY, value jsonb)")
    try:
        yield conn
    finally:
        await conn.close()


def _as_jsonb_text(raw: bytes) -> str | None:
    try:
        loads_exact(raw)
    except ValueError:
        return None
    return raw.decode()


async def sql_keys(
    conn: asyncpg.Connection, query: Query, rows: list[tuple[str, bytes, str]]
) -> tuple[list[str], str | None]:
    await conn.execute("TRUNCATE docs")
    await conn.executemany(
        "INSERT INTO docs (key, value) VALUES ($1, $2::text::jsonb)",
        [(key, _as_jsonb_text(raw)) for key, raw, _ in rows],
    )
    compiled = compile_postgres(query, value_column="value", key_column="key", first_param=1)
    statement = f"SELECT key FROM docs WHERE {compiled.where} ORDER BY {compiled.order_by}"
    statement += f" LIMIT {compiled.limit} OFFSET {compiled.offset}"
    records = await conn.fetch(statement, *compiled.params)
    page = cut_page(query.page, [QueryResult(r["key"], b"", "") for r in records])
    return keys(page), page.token


@pytest.mark.parametrize(
    ("document", "expected"),
    [pytest.param(doc, exp, id=name) for name, doc, exp in CONFORMANCE_SCENARIOS],
)
async def test_conformance_scenarios_on_postgres(
    pg: asyncpg.Connection, document: dict[str, Any], expected: list[str]
) -> None:
    found, token = await sql_keys(pg, parse_query(document), scenario_rows())
    assert (found, token) == (expected, None)


async def test_first_param_offsets_the_placeholders(pg: asyncpg.Connection) -> None:
    await pg.execute("TRUNCATE docs")
    await pg.executemany(
        "INSERT INTO docs VALUES ($1, $2::text::jsonb)",
        [("app||a", '{"n": 1}'), ("app||b", '{"n": 2}'), ("x||c", '{"n": 3}')],
    )
    query = parse_query({"filter": {"GTE": {"n": 2}}, "sort": [{"key": "n", "order": "DESC"}]})
    compiled = compile_postgres(query, value_column="value", key_column="key", first_param=2)
    records = await pg.fetch(
        f"SELECT key FROM docs WHERE starts_with(key, $1) AND {compiled.where}"
        f" ORDER BY {compiled.order_by} LIMIT ${compiled.next_param}",
        "app||",
        *compiled.params,
        10,
    )
    assert [r["key"] for r in records] == ["app||b"]


# Hypothesis: documents and queries drawn from small pools so filters often hit.

# Text PostgreSQL can hold: no lone surrogates (not UTF-8), no U+0000.
CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")
PATH_SEGMENTS = ["a", "b", "c", "", "é"]
PATHS = ["a", "b", "c", "a.b", "a.c", "b.a", "a.b.c", "", "é", "a.é", "x"]
# Numbers beyond 64 bits and beyond a double: every backend compares them as exact decimals.
BIG_NUMBERS = [2**64, 2**64 + 1, -(2**64) - 1, 10**30, 10**30 + 1]
EXACT_DECIMALS = [
    Decimal("18446744073709551616.5"),
    Decimal("0.1000000000000000000001"),
    Decimal("1E+400"),
    Decimal("-1E+400"),
    Decimal("1E-400"),
]
INTS = st.one_of(
    st.sampled_from([0, 1, 2, -1, 3, 10, 2**53 + 1, *BIG_NUMBERS]),
    st.integers(-(2**63), 2**63 - 1),
)
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, 2.5, -1.5, 1e23, 1e-7, 3.0000000000000004]),
    st.sampled_from(EXACT_DECIMALS),
    st.floats(allow_nan=False, allow_infinity=False),
)
TEXT = st.one_of(
    st.sampled_from(["", "a", "b", "A", "ab", "é", "z", "Z", "\U0001f600", "\uffff", "a b"]),
    st.text(CHARACTERS, max_size=4),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(PATH_SEGMENTS), inner, max_size=3),
    ),
    max_leaves=6,
)
FILTER_VALUES = st.one_of(JSON_VALUES, st.sampled_from([10**23, 2**64 + 1]))
RANGE_VALUES = st.one_of(INTS, FLOATS, TEXT, st.sampled_from([None, True, [1], {"a": 1}]))
DOCUMENTS = st.one_of(
    st.dictionaries(st.sampled_from(PATH_SEGMENTS), JSON_VALUES, max_size=4),
    JSON_VALUES,
)
ROW_KEYS = st.text(CHARACTERS, max_size=3)


def _leaf(op: str, path: str, value: object) -> dict[str, Any]:
    return {op: {path: value}}


LEAVES = st.one_of(
    st.builds(_leaf, st.sampled_from(["EQ", "NEQ"]), st.sampled_from(PATHS), FILTER_VALUES),
    st.builds(
        _leaf, st.sampled_from(["GT", "GTE", "LT", "LTE"]), st.sampled_from(PATHS), RANGE_VALUES
    ),
    st.builds(_leaf, st.just("IN"), st.sampled_from(PATHS), st.lists(FILTER_VALUES, max_size=3)),
)
FILTERS = st.recursive(
    LEAVES,
    lambda inner: st.builds(
        lambda op, children: {op: children},
        st.sampled_from(["AND", "OR"]),
        st.lists(inner, min_size=2, max_size=3),
    ),
    max_leaves=5,
)
SORTS = st.lists(
    st.builds(
        lambda key, order: {"key": key} if order is None else {"key": key, "order": order},
        st.sampled_from(PATHS),
        st.sampled_from([None, "ASC", "DESC"]),
    ),
    max_size=3,
)
PAGES = st.builds(
    lambda limit, offset: {"limit": limit, "token": str(offset) if offset else ""},
    st.integers(0, 4),
    st.integers(0, 5),
)
QUERIES = st.fixed_dictionaries({}, optional={"filter": FILTERS, "sort": SORTS, "page": PAGES})


@st.composite
def stored_rows(draw: st.DrawFn) -> list[tuple[str, bytes, str]]:
    row_keys = draw(st.lists(ROW_KEYS, unique=True, max_size=8))
    rows = []
    for key in row_keys:
        if draw(st.integers(0, 9)) == 0:
            raw = draw(st.sampled_from([b"\x01", b"not json", b"{"]))
        else:
            document = draw(DOCUMENTS)
            try:
                raw = json.dumps(document, ensure_ascii=draw(st.booleans())).encode()
            except TypeError:  # a Decimal: written exactly
                raw = json_text(document).encode()
        rows.append((key, raw, "etag"))
    return rows


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rows=stored_rows(), document=QUERIES)
async def test_compile_postgres_agrees_with_run_query(
    pg: asyncpg.Connection, rows: list[tuple[str, bytes, str]], document: dict[str, Any]
) -> None:
    query = parse_query(document)
    expected = run_query(query, rows)
    found, token = await sql_keys(pg, query, rows)
    assert found == keys(expected)
    assert token == expected.token
    # `matches` is what run_query filtered with; hold it to the SQL row by row as well.
    where_only = Query(filter=query.filter)
    matching, _ = await sql_keys(pg, where_only, rows)
    decoded = {key: raw for key, raw, _ in rows if _as_jsonb_text(raw) is not None}
    assert set(matching) == {
        k for k, raw in decoded.items() if where_only.matches(loads_exact(raw))
    }


# ---------------------------------------------------------------------------------------------
# Bounds (issue 8): the default and maximum page, the byte cap, slices, exact numbers.


def test_a_page_without_a_limit_holds_the_default_and_a_token_only_when_more_remain() -> None:
    values = {f"k{i:05d}": {"i": i} for i in range(DEFAULT_PAGE_LIMIT + 5)}
    page = run_query(parse_query({}), rows_of(values))
    assert (len(page.results), page.token) == (DEFAULT_PAGE_LIMIT, str(DEFAULT_PAGE_LIMIT))
    page = run_query(parse_query({"page": {"token": page.token}}), rows_of(values))
    assert (keys(page), page.token) == ([f"k{i:05d}" for i in range(1000, 1005)], None)


def test_a_page_ends_early_at_the_byte_cap_and_the_token_continues() -> None:
    big = b'"' + b"x" * (MAX_PAGE_BYTES // 3 - 2) + b'"'  # three fill a page
    rows = [(f"k{i}", big, "e") for i in range(5)]
    page = run_query(parse_query({"page": {"limit": 5}}), rows)
    assert (keys(page), page.token) == (["k0", "k1", "k2"], "3")
    page = run_query(parse_query({"page": {"limit": 5, "token": "3"}}), rows)
    assert (keys(page), page.token) == (["k3", "k4"], "5")
    # One value over the cap still makes a page of one.
    huge = [("k", b'"' + b"x" * MAX_PAGE_BYTES + b'"', "e"), ("l", b"1", "e")]
    page = run_query(parse_query({}), huge)
    assert (keys(page), page.token) == (["k"], "1")


@given(st.lists(st.text(max_size=6), min_size=2, max_size=6))
def test_descending_text_reverses_code_point_order(texts: list[str]) -> None:
    from statecar_sidecar.stores.query import _descending_text

    assert sorted(texts, key=_descending_text) == sorted(texts, reverse=True)


def test_descending_text_handles_nul_and_surrogates() -> None:
    from statecar_sidecar.stores.query import _descending_text

    texts = ["", "\x00", "\x00\x00", "a", "a\x00", "a\x00b", "ab", "\ud800", "\U0010ffff"]
    assert sorted(texts, key=_descending_text) == sorted(texts, reverse=True)


async def test_a_query_yields_the_event_loop_every_slice() -> None:
    import asyncio
    import time

    rows = [(f"k{i:06d}", b'{"n": %d, "s": "v%06d"}' % (i, i), "e") for i in range(60_000)]
    query = parse_query({"sort": [{"key": "s", "order": "DESC"}], "page": {"limit": 3}})
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        # CPU time of this thread between two turns of the ticker: what the loop spent elsewhere
        # (wall time would add the preemptions of a loaded machine).
        last = time.thread_time()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    page = await run_query_async(query, rows)
    done.set()
    await tick
    assert keys(page) == ["k059999", "k059998", "k059997"]
    assert page == run_query(query, rows)
    assert len(gaps) > 20  # it did yield, many times
    # Whole-run stalls were hundreds of ms; a slice is ~2 ms.
    assert max(gaps) < 0.010, sorted(gaps)[-5:]


async def test_concurrent_queries_take_turns_and_all_finish() -> None:
    import asyncio

    rows = [(f"k{i:05d}", b'{"n": %d}' % i, "e") for i in range(20_000)]
    queries = [parse_query({"filter": {"GTE": {"n": n}}, "page": {"limit": 1}}) for n in range(4)]
    pages = await asyncio.gather(*(run_query_async(q, rows) for q in queries))
    assert [keys(p) for p in pages] == [[f"k{n:05d}"] for n in range(4)]


def test_exact_numbers_beyond_a_double_and_64_bits() -> None:
    assert loads_exact(b"18446744073709551617") == 18446744073709551617
    assert loads_exact(b"1e400") == Decimal("1e400")
    assert loads_exact(b"[0.1000000000000000000001]") == [Decimal("0.1000000000000000000001")]
    assert loads_exact(b'{"a": 1.5}') == {"a": 1.5}  # the fast path for ordinary numbers
    for bad in (b"NaN", b"[Infinity]", b"{", b"[" * 100_000 + b"1e400"):
        with pytest.raises(ValueError, match=r"."):
            loads_exact(bad)
    values = {
        "below": 2**64 - 1,
        "exact": 2**64,
        "above": 2**64 + 1,
        "float": 1.8446744073709552e19,
    }
    assert query_keys(
        {"filter": {"EQ": {"n": 2**64}}}, {k: {"n": v} for k, v in values.items()}
    ) == ["exact"]
    assert query_keys(
        {"filter": {"GT": {"n": 2**64}}, "sort": [{"key": "n", "order": "DESC"}]},
        {k: {"n": v} for k, v in values.items()},
    ) == ["float", "above"]
    assert (
        json_text([Decimal("1E+400"), 2**70, 0.5, "é"]) == '[1E+400,1180591620717411303424,0.5,"é"]'
    )


async def test_the_collector_is_held_off_while_queries_run_and_restored_after() -> None:
    import asyncio
    import gc

    from statecar_sidecar.stores.query import collector_paused

    seen: list[bool] = []

    def rows() -> Iterator[tuple[str, bytes, str]]:
        for i in range(3):
            seen.append(gc.isenabled())
            yield (f"k{i}", b"1", "e")

    assert gc.isenabled()
    first = asyncio.create_task(run_query_async(parse_query({}), rows()))
    with collector_paused():
        await first
        assert not gc.isenabled()  # another hold is still on
    assert seen == [False, False, False]
    assert gc.isenabled()
    gc.disable()  # a process that runs without the collector keeps it off
    try:
        await run_query_async(parse_query({}), rows())
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "document",
    [
        {"filter": {"EQ": {"a": "\ud800"}}},
        {"filter": {"GT": {"a": "x\udfff"}}},
        {"filter": {"EQ": {"\ud800": 1}}},
        {"sort": [{"key": "\ud800"}]},
    ],
)
def test_compile_postgres_refuses_lone_surrogates_for_the_fallback(document: object) -> None:
    # The exact decoder keeps JSON's "\ud800"; PostgreSQL text cannot hold it, so the store
    # evaluates such a query in process instead of failing on the wire.
    with pytest.raises(QueryError, match="lone surrogate"):
        compile_postgres(parse_query(document), value_column="doc", key_column="k")
    assert loads_exact(b'{"a": "\\ud800"}') == {"a": "\ud800"}
