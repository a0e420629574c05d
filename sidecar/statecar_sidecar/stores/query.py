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
* Numbers are compared exactly as the decimal text they were written as, once decoded: a float
  counts as its shortest round-trip decimal (``repr``), so 1e23 equals 100000000000000000000000
  here and in PostgreSQL's ``numeric``. The two can disagree only where the JSON decoder loses
  digits of a stored value: more significant digits than a double holds, or an integer beyond
  64 bits (orjson reads it as a float).
* Sorting is stable and total. For each sort key, values order by type first — numbers,
  strings, booleans (false < true), null, arrays, objects, then a missing value — and within a
  type by value (arrays and objects tie). DESC reverses that whole order, so missing values
  come last in ASC and first in DESC. Ties, and a query without sort, order by key ascending
  (code point order), which also keeps offset paging stable between requests.
* The page token is the decimal offset of the next page (as in every daprd store that pages by
  offset). A token is returned when ``limit > 0`` and the page is non-empty; that is what a
  daprd client sees on the wire (daprd answers an empty page with 204 and no body), and a
  client that follows the token until it gets no results stops one request later.
* Values that are not JSON are skipped by `run_query`, even with no filter (`compile_postgres`
  skips rows whose jsonb value is NULL).
* PostgreSQL text cannot hold U+0000, so `compile_postgres` refuses a query with that
  character in a path or value (`run_query` handles it).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, Final

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
    "SortKey",
    "exact_number",
    "is_number",
    "next_page_token",
    "parse_query",
    "run_query",
]

JSONValue = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]

# Nesting limits keep evaluation inside Python's recursion limit. daprd has none (Go stacks
# grow), but no real query comes near them.
MAX_FILTER_DEPTH: Final = 100
MAX_VALUE_DEPTH: Final = 200
# page.limit and the token's offset end up in PostgreSQL's LIMIT / OFFSET, which are bigint;
# Go's strconv.ParseInt(token, 10, 64) has the same bound.
_INT64_MAX: Final = 2**63 - 1


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
    return isinstance(value, int | float) and not isinstance(value, bool)


def exact_number(number: int | float) -> int | Decimal:
    """The number as the decimal it was written as (a float's shortest round-trip repr)."""
    if isinstance(number, int):
        return number
    return Decimal(repr(number))


def _number_cmp(a: int | float, b: int | float) -> int:
    # Same-type comparisons are already exact (for floats, ordering doubles orders their
    # shortest reprs the same way); mixed int/float goes through Decimal so 10**23 == 1e23,
    # as PostgreSQL's numeric sees it.
    x: int | float | Decimal = a
    y: int | float | Decimal = b
    if type(a) is not type(b):
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
        if isinstance(item, float) and not math.isfinite(item):
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
        elif not (item is None or isinstance(item, bool | int | float | str)):
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
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= _INT64_MAX:
        shown = limit if is_number(limit) else _json_type(limit)
        raise QueryError(f"page.limit must be a whole number from 0 (no limit) up, got {shown}")
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


def next_page_token(page: Page, returned: int) -> str | None:
    """The token for the page after one that returned `returned` results (see module notes)."""
    if page.limit > 0 and returned > 0:
        return str(page.offset + returned)
    return None


def run_query(query: Query, rows: Iterable[tuple[str, bytes, str]]) -> QueryPage:
    """Filter, sort and page `(key, raw JSON value, etag)` rows; non-JSON values are skipped."""
    matched: list[tuple[str, object, bytes, str]] = []
    for key, raw, etag in rows:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # orjson refuses numbers beyond float64 and lone surrogate escapes, which are valid
            # JSON the save path accepts; the stdlib decoder reads them, so they stay findable.
            try:
                value = json.loads(raw)
            except ValueError:
                continue
        if query.matches(value):
            matched.append((key, value, raw, etag))

    # Stable sorts from the least significant key up: first by key, then each sort key from the
    # last to the first. Python's sort keeps equal items in order even with reverse=True.
    matched.sort(key=lambda row: row[0])
    for sort_key in reversed(query.sort):
        path = sort_key.path
        matched.sort(key=lambda row: _sort_key(_resolve(row[1], path)), reverse=sort_key.descending)

    start = query.page.offset
    stop = start + query.page.limit if query.page.limit > 0 else None
    chosen = matched[start:stop]
    return QueryPage(
        results=[QueryResult(key=key, data=raw, etag=etag) for key, _, raw, etag in chosen],
        token=next_page_token(query.page, len(chosen)),
    )
