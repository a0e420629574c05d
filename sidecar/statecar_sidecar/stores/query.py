"""
Dapr's state query language: parsing, and evaluation over stored rows. The shared engine.

This module owns the one definition of what a query *means* in statecar: backends that
evaluate in process hand their rows to `run_query`, the PostgreSQL backend runs the SQL of
`postgresql.query_sql.compile_postgres` (which translates this module's tree), and a property
test on a real server holds the two to the same answers. It does no I/O and imports no
framework. It is longer than most modules because grammar, tree and evaluation are one
definition: each node's `matches` and the parser's rules would be harder to check apart.

Grammar (components-contrib `state/query/query.go`, `filter.go`)::

    {"filter": <node>,
     "sort": [{"key": "<dot.path>", "order": "ASC"|"DESC"}, ...],
     "page": {"limit": <n>, "token": "<token>"}}
    <node> = {"EQ"|"NEQ"|"GT"|"GTE"|"LT"|"LTE": {"<dot.path>": <value>}}
           | {"IN": {"<dot.path>": [<value>, ...]}}
           | {"AND"|"OR": [<node>, <node>, ...]}

Parsing follows daprd: its messages where it has them; member names of the query, of sort
items and of the page match case-insensitively and a repeated member overwrites (Go's
encoding/json), unknown members are ignored, operator names are case-sensitive; a missing or
empty filter, and a `null` body, match everything. Beyond daprd, statecar refuses what some
daprd store would mis-handle, with a message naming the field: a sort order other than
"ASC"/"DESC" (or empty), a negative or non-integer page.limit, and a token that is not one this
module issued.

Semantics chosen where daprd's stores disagree or say nothing (each store translates the
grammar to its own engine, so daprd has no single answer):

* A dot path walks nested JSON objects only; a segment never indexes into an array. A path
  that does not resolve makes EQ, IN and the range operators false.
* NEQ is the exact negation of EQ: it matches when the value differs *or is missing*
  (as daprd's Redis and MongoDB stores do; its PostgreSQL store drops missing values).
* EQ, NEQ and IN use JSON equality: numbers compare by value (``1 == 1.0``), ``true`` is not
  ``1``, objects ignore key order, arrays compare element by element.
* GT, GTE, LT, LTE compare numbers with numbers and strings with strings (by Unicode code
  point, which is UTF-8 byte order); between any other pair of types they are false (a range
  filter whose value is a boolean, null, array or object is accepted, as daprd does, and
  matches nothing).
* Numbers are compared exactly as the decimal text they were written as: a float counts as its
  shortest round-trip decimal (``repr``), so 1e23 equals 100000000000000000000000 here and in
  PostgreSQL's ``numeric``, and a number a double cannot hold exactly (an integer beyond 64 bits,
  more significant digits, an exponent beyond a double's range) is decoded as a `Decimal`, in
  stored values and in the query alike (`loads_exact`), so it compares as written too.
* Sorting is stable and total. For each sort key, values order by type first — numbers,
  strings, booleans (false < true), null, arrays, objects, then a missing value — and within a
  type by value (arrays and objects tie). DESC reverses that whole order, so missing values
  come last in ASC and first in DESC. Ties, and a query without sort, order by key ascending
  (code point order), which also keeps offset paging stable between requests.
* The page token is the decimal offset of the next page (as in every daprd store that pages by
  offset). With ``limit > 0`` a token is returned when the page is non-empty; that is what a
  daprd client sees on the wire (daprd answers an empty page with 204 and no body), and a
  client that follows the token until it gets no results stops one request later. Without a
  limit (daprd: everything), a page holds at most DEFAULT_PAGE_LIMIT results and carries a token
  only when more matches remain; ``limit`` above MAX_PAGE_LIMIT is refused; and any page ends
  early, with a token, at MAX_PAGE_BYTES of values.
* Values that are not JSON are skipped by `run_query`, even with no filter (`compile_postgres`
  skips rows whose jsonb value is NULL).
* PostgreSQL text cannot hold U+0000, so `compile_postgres` refuses a query with that
  character in a path or value (`run_query` handles it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import itertools
import json
import math
import operator
import re
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Final

import orjson

from statecar_sidecar.stores.errors import StoreError

__all__ = [
    "And",
    "Eq",
    "Filter",
    "Gt",
    "Gte",
    "In",
    "JSONValue",
    "Lt",
    "Lte",
    "Neq",
    "Or",
    "Page",
    "Query",
    "QueryError",
    "QueryPage",
    "QueryResult",
    "QueryRun",
    "SortKey",
    "collector_paused",
    "cut_page",
    "exact_number",
    "fetch_limit",
    "is_number",
    "json_text",
    "loads_exact",
    "next_page_token",
    "parse_query",
    "run_query",
    "run_query_async",
]

JSONValue = None | bool | int | float | Decimal | str | list["JSONValue"] | dict[str, "JSONValue"]

# Nesting limits keep evaluation inside Python's recursion limit. daprd has none (Go stacks
# grow), but no real query comes near them.
MAX_FILTER_DEPTH: Final = 100
MAX_VALUE_DEPTH: Final = 200
# page.limit and the token's offset end up in PostgreSQL's LIMIT / OFFSET, which are bigint;
# Go's strconv.ParseInt(token, 10, 64) has the same bound.
_INT64_MAX: Final = 2**63 - 1

# Page size. daprd returns every match when page.limit is absent; statecar returns at most
# DEFAULT_PAGE_LIMIT, with a token when more matches exist, so a response stays bounded. An
# explicit page.limit above MAX_PAGE_LIMIT is refused. A page also stops early, with a token, once
# its values add up to MAX_PAGE_BYTES (it always holds at least one result).
DEFAULT_PAGE_LIMIT: Final = 1000
MAX_PAGE_LIMIT: Final = 10_000
MAX_PAGE_BYTES: Final = 16 * 1024 * 1024

# Evaluation in process runs on the event loop in slices of about this much CPU time; between
# slices the loop serves other requests, and concurrent queries take one slice each in turn.
SLICE_SECONDS: Final = 0.002
# Matches are sorted in runs of this many rows (one slice each), then merged lazily.
_SORT_RUN: Final = 1024


class QueryError(StoreError):
    """The query document is invalid; daprd answers these with 500 ERR_STATE_QUERY."""


# ---------------------------------------------------------------------------------------------
# JSON values: equality and ordering, the same rules PostgreSQL applies to jsonb below.


class _Missing:
    """A path that does not resolve (distinct from JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


def is_number(value: object) -> bool:
    # bool is a subclass of int in Python, but JSON true is not the number 1.
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def exact_number(number: int | float | Decimal) -> int | Decimal:
    """The number as the decimal it was written as (a float's shortest round-trip repr)."""
    if isinstance(number, int | Decimal):
        return number
    return Decimal(repr(number))


# A JSON text in which orjson may lose a number's digits: a run of 16 or more digits (an integer
# beyond 64 bits, more significant digits than a double holds) or a three-digit exponent (beyond
# a double's range). Anything else it reads exactly (a double holds every 15-digit decimal).
# Digits inside strings match too; that only sends the text down the slower exact path.
_MAYBE_INEXACT: Final = re.compile(rb"[0-9.]{17,}|[eE][+-]?0*[0-9]{3}")


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads_exact(raw: bytes) -> object:
    """Decode JSON with every number exact: ints as int, other numbers as float when a double
    holds their decimal exactly and as `Decimal` otherwise. Raises ValueError when not JSON.

    orjson is the fast path; it turns integers beyond 64 bits into floats and fails on numbers
    beyond a double and on lone surrogate escapes, so such texts go through the stdlib decoder.
    """
    if not _MAYBE_INEXACT.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(
            raw, parse_float=Decimal, parse_int=_exact_int, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _exact_int(text: str) -> int | Decimal:
    # Python refuses to parse integers of more than 4300 digits; a Decimal holds them exactly.
    return int(text) if len(text) <= 4000 else Decimal(text)


def json_text(value: JSONValue) -> str:
    """`value` as JSON text with every number written exactly (Decimal included)."""
    if isinstance(value, Decimal):
        return str(value)  # finite: 1E+400, 0.1000000000000000000001, -0
    if isinstance(value, list):
        return "[" + ",".join(json_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                json.dumps(k, ensure_ascii=False) + ":" + json_text(v) for k, v in value.items()
            )
            + "}"
        )
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _number_cmp(a: int | float | Decimal, b: int | float | Decimal) -> int:
    # Same-type comparisons are already exact (for floats, ordering doubles orders their
    # shortest reprs the same way); mixed int/float goes through Decimal so 10**23 == 1e23,
    # as PostgreSQL's numeric sees it.
    x: int | float | Decimal = a
    y: int | float | Decimal = b
    if type(a) is not type(b) and (isinstance(a, float) or isinstance(b, float)):
        x, y = exact_number(a), exact_number(b)
    return (x > y) - (x < y)


def _json_equal(a: object, b: object) -> bool:
    """JSON equality, matching jsonb's `=`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if is_number(a):
        return is_number(b) and _number_cmp(a, b) == 0  # type: ignore[arg-type]
    if a is None or isinstance(a, str):
        return type(a) is type(b) and a == b
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_json_equal(v, b[k]) for k, v in a.items())
        )
    return False


def _json_cmp(a: object, b: object) -> int | None:
    """-1/0/1 for number-number and string-string; None for any other pair (never matches)."""
    if is_number(a) and is_number(b):
        return _number_cmp(a, b)  # type: ignore[arg-type]
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    return None


def _resolve(document: object, path: tuple[str, ...]) -> object:
    """Walk `path` through nested objects; MISSING when any step is absent or not an object."""
    current = document
    for segment in path:
        if not isinstance(current, dict):
            return MISSING
        current = current.get(segment, MISSING)
        if current is MISSING:
            return MISSING
    return current


# Type ranks for sorting; `_SORT_RANK_SQL` below is the same table in SQL.
_RANK_NUMBER, _RANK_STRING, _RANK_BOOL, _RANK_NULL, _RANK_ARRAY, _RANK_OBJECT, _RANK_MISSING = (
    range(7)
)


def _sort_key(value: object) -> tuple[int, object]:
    if isinstance(value, bool):
        return (_RANK_BOOL, value)
    if is_number(value):
        return (_RANK_NUMBER, exact_number(value))  # type: ignore[arg-type]
    if isinstance(value, str):
        return (_RANK_STRING, value)
    if value is None:
        return (_RANK_NULL, 0)
    if isinstance(value, list):
        return (_RANK_ARRAY, 0)
    if isinstance(value, dict):
        return (_RANK_OBJECT, 0)
    return (_RANK_MISSING, 0)


# ---------------------------------------------------------------------------------------------
# The query tree.


def _path_of(key: str) -> tuple[str, ...]:
    return tuple(key.split("."))


@dataclass(frozen=True, slots=True)
class _Comparison:
    """`{"<OP>": {"<dot.path>": value}}`; `path` is the key split on dots."""

    op: ClassVar[str]
    path: tuple[str, ...]
    value: JSONValue

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def matches(self, document: object) -> bool:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Eq(_Comparison):
    op: ClassVar[str] = "EQ"

    def matches(self, document: object) -> bool:
        found = _resolve(document, self.path)
        return found is not MISSING and _json_equal(found, self.value)


@dataclass(frozen=True, slots=True)
class Neq(_Comparison):
    """True when the value differs from `value` or the path does not resolve."""

    op: ClassVar[str] = "NEQ"

    def matches(self, document: object) -> bool:
        found = _resolve(document, self.path)
        return found is MISSING or not _json_equal(found, self.value)


# How each range operator reads a three-way comparison against 0.
_RANGE_ACCEPT: Final[dict[str, Callable[[int, int], bool]]] = {
    "GT": operator.gt,
    "GTE": operator.ge,
    "LT": operator.lt,
    "LTE": operator.le,
}


@dataclass(frozen=True, slots=True)
class _Range(_Comparison):
    def matches(self, document: object) -> bool:
        order = _json_cmp(_resolve(document, self.path), self.value)
        return order is not None and _RANGE_ACCEPT[self.op](order, 0)


@dataclass(frozen=True, slots=True)
class Gt(_Range):
    op: ClassVar[str] = "GT"


@dataclass(frozen=True, slots=True)
class Gte(_Range):
    op: ClassVar[str] = "GTE"


@dataclass(frozen=True, slots=True)
class Lt(_Range):
    op: ClassVar[str] = "LT"


@dataclass(frozen=True, slots=True)
class Lte(_Range):
    op: ClassVar[str] = "LTE"


@dataclass(frozen=True, slots=True)
class In:
    """`{"IN": {"<dot.path>": [values]}}`: EQ against any of `values` (none: never matches)."""

    op: ClassVar[str] = "IN"
    path: tuple[str, ...]
    values: tuple[JSONValue, ...]

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def matches(self, document: object) -> bool:
        found = _resolve(document, self.path)
        return found is not MISSING and any(_json_equal(found, v) for v in self.values)


@dataclass(frozen=True, slots=True)
class And:
    op: ClassVar[str] = "AND"
    filters: tuple[Filter, ...]

    def matches(self, document: object) -> bool:
        return all(f.matches(document) for f in self.filters)


@dataclass(frozen=True, slots=True)
class Or:
    op: ClassVar[str] = "OR"
    filters: tuple[Filter, ...]

    def matches(self, document: object) -> bool:
        return any(f.matches(document) for f in self.filters)


Filter = Eq | Neq | Gt | Gte | Lt | Lte | In | And | Or


@dataclass(frozen=True, slots=True)
class SortKey:
    path: tuple[str, ...]
    descending: bool = False

    @property
    def key(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True, slots=True)
class Page:
    """`limit` 0 means no limit; `offset` is the decoded `token` (0 without one)."""

    limit: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Query:
    filter: Filter | None = None
    sort: tuple[SortKey, ...] = ()
    page: Page = field(default_factory=Page)

    def matches(self, value: object) -> bool:
        """Whether a decoded JSON value passes the filter (no filter matches everything)."""
        return self.filter is None or self.filter.matches(value)


# ---------------------------------------------------------------------------------------------
# Parsing.

_COMPARISONS: Final[
    dict[str, type[Eq] | type[Neq] | type[Gt] | type[Gte] | type[Lt] | type[Lte]]
] = {cls.op: cls for cls in (Eq, Neq, Gt, Gte, Lt, Lte)}


def _go_quote(text: str) -> str:
    # Stands in for Go's %q in daprd's messages (same output for printable text).
    return json.dumps(text, ensure_ascii=False)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _struct_fields(obj: dict[str, object], names: Iterable[str]) -> dict[str, object]:
    """The members of a JSON object that fill the named fields of a Go struct.

    daprd decodes `query`, `sort` items and `page` with Go's encoding/json, which matches
    member names to fields case-insensitively and lets a later member overwrite an earlier
    one; members that match no field are ignored.
    """
    wanted = set(names)
    found: dict[str, object] = {}
    for name, value in obj.items():
        folded = name.casefold()
        if folded in wanted:
            found[folded] = value
    return found


def _check_value(value: object, op: str, key: str) -> JSONValue:
    """Filter values must be JSON (they came from a JSON body, but callers may build them)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise QueryError(
                f"{op} filter value for {_go_quote(key)} is nested deeper than {MAX_VALUE_DEPTH}"
                " levels"
            )
        if (isinstance(item, float) and not math.isfinite(item)) or (
            isinstance(item, Decimal) and not item.is_finite()
        ):
            raise QueryError(
                f"{op} filter value for {_go_quote(key)} must be a finite number, got {item!r}"
            )
        if isinstance(item, list):
            stack.extend((x, depth + 1) for x in item)
        elif isinstance(item, dict):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise QueryError(
                        f"{op} filter value for {_go_quote(key)} has a non-string object key"
                    )
                stack.append((v, depth + 1))
        elif not (item is None or isinstance(item, bool | int | float | Decimal | str)):
            raise QueryError(
                f"{op} filter value for {_go_quote(key)} must be JSON, got {type(item).__name__}"
            )
    return value  # type: ignore[return-value]


def _single_pair(op: str, body: object) -> tuple[str, object]:
    # filter.go: "<OP> filter must be a map" / "<OP> filter must contain a single key/value pair".
    if not isinstance(body, dict):
        raise QueryError(f"{op} filter must be a map")
    if len(body) != 1:
        raise QueryError(f"{op} filter must contain a single key/value pair")
    ((key, value),) = body.items()
    return key, value


def _parse_filter(node: object, depth: int) -> Filter:
    # filter.go ParseFilter: one operator per object, operators matched case-sensitively.
    if depth > MAX_FILTER_DEPTH:
        raise QueryError(f"filter is nested deeper than {MAX_FILTER_DEPTH} levels")
    if not isinstance(node, dict):
        raise QueryError("filter unit must be a map")
    if len(node) != 1:
        raise QueryError("filter unit must have a single element")
    ((op, body),) = node.items()
    comparison = _COMPARISONS.get(op)
    if comparison is not None:
        key, value = _single_pair(op, body)
        return comparison(path=_path_of(key), value=_check_value(value, op, key))
    if op == "IN":
        key, values = _single_pair(op, body)
        if not isinstance(values, list):
            raise QueryError("IN filter value must be an array")
        return In(path=_path_of(key), values=tuple(_check_value(v, op, key) for v in values))
    if op in ("AND", "OR"):
        # filter.go parseFilters: "<OP> filter must be an array" / "... at least two entries".
        if not isinstance(body, list):
            raise QueryError(f"{op} filter must be an array")
        if len(body) < 2:
            raise QueryError(f"{op} filter must contain at least two entries")
        children = tuple(_parse_filter(child, depth + 1) for child in body)
        return And(children) if op == "AND" else Or(children)
    raise QueryError(f"unsupported filter {_go_quote(op)}")


def _parse_sort(raw: object) -> tuple[SortKey, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise QueryError('"sort" must be an array')  # daprd's query.go message
    keys: list[SortKey] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise QueryError(
                f'sort[{index}] must be an object like {{"key": "a.b", "order": "ASC"}},'
                f" got {_json_type(item)}"
            )
        fields = _struct_fields(item, ("key", "order"))
        key = fields.get("key")
        if not isinstance(key, str):
            raise QueryError(
                f"sort[{index}].key must be a string (a dot path into the value), got"
                f" {'nothing' if 'key' not in fields else _json_type(key)}"
            )
        order = fields.get("order")
        # daprd leaves the order to each store (PostgreSQL pastes it into SQL, Redis and MongoDB
        # treat anything but "DESC" as ascending); statecar accepts the two documented words.
        if order in (None, "", "ASC"):
            descending = False
        elif order == "DESC":
            descending = True
        else:
            shown = _go_quote(order) if isinstance(order, str) else _json_type(order)
            raise QueryError(f'sort[{index}].order must be "ASC" or "DESC", got {shown}')
        keys.append(SortKey(path=_path_of(key), descending=descending))
    return tuple(keys)


def _parse_page(raw: object) -> Page:
    if raw is None:
        return Page()
    if not isinstance(raw, dict):
        raise QueryError('"page" must be a map')  # daprd's query.go message
    fields = _struct_fields(raw, ("limit", "token"))
    limit = fields.get("limit")
    if limit is None:
        limit = 0
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_PAGE_LIMIT:
        shown = limit if is_number(limit) else _json_type(limit)
        raise QueryError(
            f"page.limit must be a whole number from 0 (the default, {DEFAULT_PAGE_LIMIT}) up to"
            f" {MAX_PAGE_LIMIT}, got {shown}: follow the page token for more results"
        )
    token = fields.get("token")
    if token is None:
        token = ""
    if not isinstance(token, str):
        raise QueryError(
            f"page.token must be the string a previous query returned, got {_json_type(token)}"
        )
    return Page(limit=limit, offset=_parse_token(token))


def _parse_token(token: str) -> int:
    # Tokens are decimal offsets, as daprd's offset-paging stores issue them.
    if token == "":
        return 0
    if not (token.isascii() and token.isdigit()) or int(token) > _INT64_MAX:
        raise QueryError(
            f"invalid page token {_go_quote(token)}: pass the token from the previous page"
            " unchanged, or leave it out for the first page"
        )
    return int(token)


def parse_query(document: object) -> Query:
    """Validate a decoded query body the way daprd does and build its `Query`.

    Raises `QueryError` with daprd's message where daprd has one.
    """
    if document is None:
        return Query()  # Go decodes a JSON `null` body into the zero query: match everything
    if not isinstance(document, dict):
        raise QueryError(f"the query must be a JSON object, got {_json_type(document)}")
    fields = _struct_fields(document, ("filter", "sort", "page"))
    raw_filter = fields.get("filter")
    if raw_filter is not None and not isinstance(raw_filter, dict):
        raise QueryError("filter unit must be a map")
    # query.go: a missing or empty filter matches everything.
    parsed = _parse_filter(raw_filter, 0) if raw_filter else None
    return Query(
        filter=parsed, sort=_parse_sort(fields.get("sort")), page=_parse_page(fields.get("page"))
    )


# ---------------------------------------------------------------------------------------------
# Running a query over rows.


@dataclass(frozen=True, slots=True)
class QueryResult:
    key: str
    data: bytes  # the stored JSON bytes, unchanged
    etag: str


@dataclass(frozen=True, slots=True)
class QueryPage:
    results: list[QueryResult]
    token: str | None


def next_page_token(page: Page, returned: int, *, more: bool = False) -> str | None:
    """The token for the page after one that returned `returned` results (see module notes).

    `more` says that matches remain after the page (it was cut by the default limit or by
    MAX_PAGE_BYTES): then there is always a token.
    """
    if returned > 0 and (page.limit > 0 or more):
        return str(page.offset + returned)
    return None


def fetch_limit(page: Page) -> int:
    """How many ordered matches to read from the offset to build `page` with `cut_page`."""
    return (page.limit or DEFAULT_PAGE_LIMIT) + 1


def cut_page(page: Page, ordered: Iterable[QueryResult]) -> QueryPage:
    """The page from matches already ordered and offset: up to its limit (the default when it
    has none) and MAX_PAGE_BYTES, with the token."""
    limit = page.limit or DEFAULT_PAGE_LIMIT
    results: list[QueryResult] = []
    size = 0
    more = False
    for result in ordered:
        if len(results) >= limit or (results and size + len(result.data) > MAX_PAGE_BYTES):
            more = True
            break
        results.append(result)
        size += len(result.data)
    return QueryPage(results=results, token=next_page_token(page, len(results), more=more))


# -- ordering ---------------------------------------------------------------------------------

_INVERT: Final = bytes(range(255, -1, -1))


def _descending_text(text: str) -> bytes:
    """Bytes that order in reverse code point order of `text`, prefixes included.

    UTF-32-BE orders as code points; escaping NUL bytes and ending with 00 00 makes the code
    prefix-free (a prefix sorts first), and inverting every byte of a prefix-free code reverses
    its order.
    """
    escaped = text.encode("utf-32-be", "surrogatepass").replace(b"\x00", b"\x00\xff")
    return (escaped + b"\x00\x00").translate(_INVERT)


def _order_part(value: object, descending: bool) -> tuple[int, object]:
    """One sort key's part of a row's order key: natively comparable, direction built in."""
    rank, plain = _sort_key(value)
    if not descending:
        return rank, plain
    if isinstance(plain, Decimal):
        plain = plain.copy_negate()  # exact, unlike unary minus (which rounds to 28 digits)
    elif rank == _RANK_NUMBER:
        plain = -plain  # type: ignore[operator]
    elif rank == _RANK_STRING:
        plain = _descending_text(plain)  # type: ignore[arg-type]
    elif rank == _RANK_BOOL:
        plain = not plain
    return -rank, plain


_Match = tuple[tuple[object, ...], bytes, str]  # (order key ending with the key, raw, etag)


def _first(match: _Match) -> tuple[object, ...]:
    return match[0]


# -- the run ----------------------------------------------------------------------------------


class _Turns:
    """Hands the event loop's query slices out one per loop iteration, round robin.

    A query that used up its slice queues here; each dispatch wakes the first in line and, while
    others wait, schedules the next dispatch for the next iteration. So however many queries
    run, the loop spends about one slice on them per iteration and serves everything else in
    between.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    def _schedule(self) -> None:
        if not self._scheduled and self._waiting:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        self._schedule()

    async def wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiting.append(waiter)
        self._schedule()
        await waiter


_TURNS: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns]] = (
    weakref.WeakKeyDictionary()
)


async def _next_turn() -> None:
    loop = asyncio.get_running_loop()
    turns = _TURNS.get(loop)
    if turns is None:
        turns = _TURNS[loop] = _Turns(loop)
    await turns.wait()


class _CollectorPause:
    """Python's cyclic garbage collector, held off while any query runs.

    A query over n keys creates about 2n small objects that live until it ends (an order key and
    a match per row); with GC on they get promoted and trigger a full collection of the whole
    heap (every stored item of the in-memory store included): about 50 ms in one go at 50k keys,
    the one stall slicing cannot split. Held off, they die by reference counting without a
    collection ever seeing them; cycles made elsewhere meanwhile are collected after the query.
    """

    def __init__(self) -> None:
        self._holds = 0
        self._resume = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._holds == 0:
            self._resume = gc.isenabled()
            gc.disable()
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if self._holds == 0 and self._resume:
                gc.enable()


_COLLECTOR: Final = _CollectorPause()


def collector_paused() -> contextlib.AbstractContextManager[None]:
    """Hold off the cyclic garbage collector while a query runs (see `_CollectorPause`)."""
    return _COLLECTOR.held()


class QueryRun:
    """One query evaluated in process over rows fed to it, in bounded slices.

    `feed` decodes and filters rows and keeps, for each match, its order key (the sort values and
    the key), its raw bytes and its ETag; the decoded document is dropped at once. `finish` sorts
    the matches in runs of `_SORT_RUN`, merges the runs lazily up to the end of the page and
    pages. Both are generators that yield whenever a slice's time is up; `feed_async` and
    `finish_async` await the next turn on the event loop there, `run_query` just goes on.

    Cost: CPU is proportional to the rows scanned (decode and filter) plus
    O(m log _SORT_RUN) to sort m matches and O((offset + limit) log (m / _SORT_RUN)) to merge up
    to the page; memory holds one order key and a reference to the stored bytes per match.
    """

    def __init__(self, query: Query) -> None:
        self.query = query
        self._matches: list[_Match] = []
        self._slice_ends = 0.0
        paths = [(sort_key.path, sort_key.descending) for sort_key in query.sort]
        self._order_parts = paths

    def _restart(self) -> None:
        self._slice_ends = time.perf_counter() + SLICE_SECONDS

    def _due(self) -> bool:
        return time.perf_counter() >= self._slice_ends

    def feed(self, rows: Iterable[tuple[str, bytes, str]]) -> Iterator[None]:
        query = self.query
        matches = self._matches
        for key, raw, etag in rows:
            try:
                value = loads_exact(raw)
            except ValueError:
                value = MISSING  # not JSON: skipped
            if value is not MISSING and query.matches(value):
                order: list[object] = []
                for path, descending in self._order_parts:
                    order.extend(_order_part(_resolve(value, path), descending))
                order.append(key)
                matches.append((tuple(order), raw, etag))
            if self._due():
                yield

    def finish(self) -> Generator[None, None, QueryPage]:
        matches, self._matches = self._matches, []
        runs: list[list[_Match]] = []
        for start in range(0, len(matches), _SORT_RUN):
            run = matches[start : start + _SORT_RUN]
            run.sort(key=_first)
            runs.append(run)
            if self._due():
                yield
        del matches
        ordered: Iterator[_Match] = (
            iter(runs[0]) if len(runs) == 1 else heapq.merge(*runs, key=_first)
        )
        page = self.query.page
        for _ in range(page.offset):
            if next(ordered, None) is None:
                break
            if self._due():
                yield
        candidates: list[QueryResult] = []
        for order, raw, etag in itertools.islice(ordered, fetch_limit(page)):
            candidates.append(QueryResult(key=order[-1], data=raw, etag=etag))  # type: ignore[arg-type]
            if self._due():
                yield
        # Freeing every match at once takes milliseconds at 100k: free them run by run.
        del ordered
        while runs:
            runs.pop()
            if self._due():
                yield
        return cut_page(page, candidates)

    async def feed_async(self, rows: Iterable[tuple[str, bytes, str]]) -> None:
        self._restart()
        for _ in self.feed(rows):
            await _next_turn()
            self._restart()

    async def discard_async(self, items: set[Any]) -> None:
        """Empty a large set of the caller's in slices: freeing 200k objects at once is ~30 ms."""
        self._restart()
        while items:
            items.pop()
            if self._due():
                await _next_turn()
                self._restart()

    async def finish_async(self) -> QueryPage:
        self._restart()
        steps = self.finish()
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await _next_turn()
            self._restart()


def run_query(query: Query, rows: Iterable[tuple[str, bytes, str]]) -> QueryPage:
    """Filter, sort and page `(key, raw JSON value, etag)` rows in one go (non-JSON is skipped).

    For tests and tools: it runs to the end without yielding. Stores use `run_query_async`.
    """
    run = QueryRun(query)
    for _ in run.feed(rows):
        pass
    steps = run.finish()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def run_query_async(query: Query, rows: Iterable[tuple[str, bytes, str]]) -> QueryPage:
    """`run_query` on the event loop in slices of about SLICE_SECONDS, taking turns with other
    queries, so health checks and other stores keep answering while it runs. `rows` may be a
    lazy iterable: it is consumed inside the slices."""
    with collector_paused():
        await _next_turn()
        run = QueryRun(query)
        await run.feed_async(rows)
        return await run.finish_async()
