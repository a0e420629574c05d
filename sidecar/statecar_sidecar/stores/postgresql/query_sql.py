"""
Dapr queries as PostgreSQL: `compile_postgres` turns a parsed `Query` into SQL fragments that
select and order exactly what the shared engine's `run_query` would.

`stores.query` owns what a query means; this module only translates it, and a property test on a
real server (tests/unit/test_sidecar_query.py) holds the two to the same answers. Text and pure
functions: it runs nothing. PostgreSQL text cannot hold U+0000 or a lone surrogate, so a query
with either in a path or value is refused here with QueryError (the store then evaluates it in
process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from statecar_sidecar.stores.query import (
    And,
    Eq,
    Filter,
    Gt,
    Gte,
    In,
    JSONValue,
    Lt,
    Lte,
    Neq,
    Or,
    Page,
    Query,
    QueryError,
    SortKey,
    exact_number,
    fetch_limit,
    is_number,
    json_text,
)

__all__ = ["CompiledSQL", "compile_postgres"]


@dataclass(frozen=True, slots=True)
class CompiledSQL:
    """A query as PostgreSQL fragments.

    `where` is a boolean expression and `order_by` an ordering list (both without their
    keywords). Placeholders are numbered from `first_param` and each is typed `$n::text`, so
    `params` holds only strings. `limit` is how many rows to read from `offset` (one more than
    the page holds, to know whether more follow: `query.cut_page` makes the page of them); both
    are ints, safe to format into the statement or to bind as two more parameters from
    `next_param`.
    """

    where: str
    order_by: str
    params: list[object]
    limit: int
    offset: int
    page: Page
    first_param: int

    @property
    def next_param(self) -> int:
        """The first placeholder number not used by `params`."""
        return self.first_param + len(self.params)


# Mirrors `_sort_key`'s ranks.
_SORT_RANK_SQL: Final = (
    "CASE jsonb_typeof({x}) WHEN 'number' THEN 0 WHEN 'string' THEN 1 WHEN 'boolean' THEN 2"
    " WHEN 'null' THEN 3 WHEN 'array' THEN 4 WHEN 'object' THEN 5 ELSE 6 END"
)


_NUL_MESSAGE: Final = "PostgreSQL cannot compare strings containing the character U+0000"
_SURROGATE_MESSAGE: Final = "PostgreSQL cannot compare strings holding a lone surrogate"


def _has_nul(value: JSONValue) -> bool:
    stack: list[JSONValue] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            return True
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if any("\x00" in k for k in item):
                return True
            stack.extend(item.values())
    return False


class _SqlBuilder:
    def __init__(self, value_column: str, first_param: int) -> None:
        self.value = f"({value_column})"
        self.first_param = first_param
        self.params: list[object] = []
        self._positions: dict[str, int] = {}

    def param(self, text: str) -> str:
        """A text placeholder for `text` (equal texts share one)."""
        if "\x00" in text:
            # PostgreSQL text cannot hold NUL, and jsonb refuses \u0000.
            raise QueryError(_NUL_MESSAGE)
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                # A lone surrogate (JSON's "\ud800", which the exact decoder keeps) is not UTF-8.
                raise QueryError(_SURROGATE_MESSAGE) from None
        position = self._positions.get(text)
        if position is None:
            position = self.first_param + len(self.params)
            self.params.append(text)
            self._positions[text] = position
        return f"${position}::text"

    def json_param(self, value: JSONValue) -> str:
        if _has_nul(value):
            raise QueryError(_NUL_MESSAGE)
        # json_text writes floats as their shortest repr, ints and Decimals in full: exactly the
        # decimal `exact_number` compares with; orjson would refuse ints beyond 64 bits.
        return f"({self.param(json_text(value))})::jsonb"

    def at(self, path: tuple[str, ...]) -> str:
        # Chained `->` with text operands only steps into objects (`jsonb -> text` on an array or
        # scalar is NULL), which is `_resolve`; `#>` with a text[] path would also index arrays.
        steps = "".join(f" -> {self.param(segment)}" for segment in path)
        return f"({self.value}{steps})"

    def filter(self, node: Filter) -> str:
        if isinstance(node, And | Or):
            joiner = f" {node.op} "
            return "(" + joiner.join(self.filter(child) for child in node.filters) + ")"
        if isinstance(node, In):
            if not node.values:
                return "FALSE"
            # One parameter, a JSON array, whatever the number of values: PostgreSQL binds at
            # most 32,767 parameters, and the uncorrelated subquery runs once (hashed).
            values = self.json_param(list(node.values))
            return (
                f"COALESCE({self.at(node.path)} IN (SELECT jsonb_array_elements({values})), FALSE)"
            )
        if isinstance(node, Eq):
            return f"COALESCE({self.at(node.path)} = {self.json_param(node.value)}, FALSE)"
        if isinstance(node, Neq):
            return f"({self.at(node.path)} IS DISTINCT FROM {self.json_param(node.value)})"
        return self.range(node)

    def range(self, node: Gt | Gte | Lt | Lte) -> str:
        sql_op = {"GT": ">", "GTE": ">=", "LT": "<", "LTE": "<="}[node.op]
        value = node.value
        if not (is_number(value) or isinstance(value, str)):
            return "FALSE"  # booleans, null, arrays and objects are never ordered
        x = self.at(node.path)  # (only now: every parameter registered must appear in the SQL)
        # CASE fixes the evaluation order, so the cast only ever sees the right jsonb type.
        if is_number(value):
            number = str(exact_number(value))  # type: ignore[arg-type]
            return (
                f"(CASE WHEN jsonb_typeof({x}) = 'number'"
                f" THEN ({x})::numeric {sql_op} ({self.param(number)})::numeric ELSE FALSE END)"
            )
        # COLLATE "C" compares UTF-8 bytes, i.e. code points, as Python compares str.
        return (
            f"(CASE WHEN jsonb_typeof({x}) = 'string' THEN ({x} #>> '{{}}'::text[])"
            f' COLLATE "C" {sql_op} {self.param(str(value))} COLLATE "C" ELSE FALSE END)'
        )

    def order(self, sort_key: SortKey) -> list[str]:
        x = self.at(sort_key.path)
        direction = "DESC" if sort_key.descending else "ASC"
        # Within one type rank the typed columns are all NULL or all non-NULL, so NULLS
        # FIRST/LAST never decides anything.
        return [
            f"{_SORT_RANK_SQL.format(x=x)} {direction}",
            f"(CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric END) {direction}",
            f"(CASE WHEN jsonb_typeof({x}) = 'string' THEN ({x} #>> '{{}}'::text[]) END)"
            f' COLLATE "C" {direction}',
            f"(CASE WHEN jsonb_typeof({x}) = 'boolean' THEN ({x})::boolean END) {direction}",
        ]


def compile_postgres(
    query: Query, *, value_column: str, key_column: str, first_param: int = 1
) -> CompiledSQL:
    """Translate `query` into PostgreSQL that selects and orders exactly what `run_query` would.

    `value_column` is an SQL expression of type jsonb that is NULL for values that are not JSON
    (such rows are skipped, as in `run_query`); `key_column` is the text key, the final
    tiebreak. Both are trusted SQL from the backend; everything from the query is a parameter.
    The database must use the UTF8 encoding (the "C" collation then orders by code point).
    """
    builder = _SqlBuilder(value_column, first_param)
    where = f"{builder.value} IS NOT NULL"
    if query.filter is not None:
        where += f" AND {builder.filter(query.filter)}"
    order: list[str] = []
    for sort_key in query.sort:
        order.extend(builder.order(sort_key))
    order.append(f'({key_column}) COLLATE "C" ASC')
    return CompiledSQL(
        where=where,
        order_by=", ".join(order),
        params=builder.params,
        limit=fetch_limit(query.page),
        offset=query.page.offset,
        page=query.page,
        first_param=first_param,
    )
