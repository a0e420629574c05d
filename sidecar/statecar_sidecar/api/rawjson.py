"""
A JSON walker that keeps chosen members as their exact source text.

statecar returns a value byte for byte as the client sent it (docs/state-api.md, "Values are byte-exact"), so the
`value` of a save item must never be decoded and re-encoded (that rounds floats, re-orders keys
and changes escapes, as daprd's stores do). The walker descends only into the levels the request
shapes need and lets the stdlib's C scanner validate and skip every other value.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

_WS: Final = re.compile(r"[ \t\n\r]*")
#: orjson's nesting limit (the fast path's); the walker accepts at least as deep.
MAX_DEPTH: Final = 1024
_DEPTH_HEADROOM: Final = MAX_DEPTH + 200


def _reject_constant(name: str) -> Any:
    # Python's decoder accepts NaN/Infinity; JSON (and Go's decoder in daprd) does not.
    raise ValueError(f"invalid JSON literal {name}")


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_scan_once: Final = _DECODER.scan_once  # type: ignore[attr-defined]  # set by JSONDecoder.__init__, missing from typeshed
_scanstring: Final = json.decoder.scanstring  # type: ignore[attr-defined]  # public C helper, untyped in typeshed


class JSONShapeError(ValueError):
    """The body is not valid JSON or not the expected shape; the message says where."""


@dataclass(frozen=True, slots=True)
class Raw:
    """A member kept as source text (UTF-8 encoded when it reaches a store)."""

    text: str


Handler = Callable[[str, int], tuple[Any, int]]


def skip_ws(s: str, i: int) -> int:
    match = _WS.match(s, i)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def scan_value(s: str, i: int) -> tuple[Any, int]:
    try:
        return _scan_once(s, i)  # type: ignore[no-any-return]  # the C scanner is untyped
    except StopIteration as exc:
        raise JSONShapeError(f"expected a JSON value at offset {exc.value}") from None
    except json.JSONDecodeError as exc:
        raise JSONShapeError(f"{exc.msg} at offset {exc.pos}") from None
    except RecursionError:
        return _scan_deep(s, i)
    except ValueError as exc:
        raise JSONShapeError(f"{exc} at offset {i}") from None


def _scan_deep(s: str, i: int) -> tuple[Any, int]:
    """A value nested deeper than the interpreter's recursion limit lets the C scanner go.

    The fast path (orjson) takes nesting up to `MAX_DEPTH` levels, so the walker must too, or
    the same document would be accepted compact and refused pretty-printed. A body orjson
    refuses takes the walker on both paths, so the walker may go a little deeper; past the
    headroom it is a 400. Rare (only hostile bodies nest this deep), so the limit is raised for
    this one scan only.
    """
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + _DEPTH_HEADROOM)
    try:
        value, end = _scan_once(s, i)
    except RecursionError:
        raise JSONShapeError(
            f"the JSON nests deeper than {MAX_DEPTH} levels at offset {i}"
        ) from None
    except StopIteration as exc:
        raise JSONShapeError(f"expected a JSON value at offset {exc.value}") from None
    except json.JSONDecodeError as exc:
        raise JSONShapeError(f"{exc.msg} at offset {exc.pos}") from None
    except ValueError as exc:
        raise JSONShapeError(f"{exc} at offset {i}") from None
    finally:
        sys.setrecursionlimit(limit)
    return value, end


def scan_raw(s: str, i: int) -> tuple[Raw, int]:
    _, end = scan_value(s, i)
    return Raw(s[i:end]), end


def scan_object(
    s: str, i: int, members: dict[str, Handler] | None = None
) -> tuple[dict[str, Any], int]:
    """An object at `i`; member names are matched case-insensitively (as Go's decoder does)."""
    if i >= len(s) or s[i] != "{":
        raise JSONShapeError(f"expected an object at offset {i}")
    result: dict[str, Any] = {}
    i = skip_ws(s, i + 1)
    if i < len(s) and s[i] == "}":
        return result, i + 1
    while True:
        if i >= len(s) or s[i] != '"':
            raise JSONShapeError(f"expected a member name at offset {i}")
        try:
            name, i = _scanstring(s, i + 1)
        except json.JSONDecodeError as exc:
            raise JSONShapeError(f"{exc.msg} at offset {exc.pos}") from None
        i = skip_ws(s, i)
        if i >= len(s) or s[i] != ":":
            raise JSONShapeError(f"expected ':' at offset {i}")
        i = skip_ws(s, i + 1)
        lowered = name.lower()
        handler = members.get(lowered) if members else None
        value, i = handler(s, i) if handler else scan_value(s, i)
        result[lowered] = value
        i = skip_ws(s, i)
        if i < len(s) and s[i] == ",":
            i = skip_ws(s, i + 1)
            continue
        if i < len(s) and s[i] == "}":
            return result, i + 1
        raise JSONShapeError(f"expected ',' or '}}' at offset {i}")


def scan_array(s: str, i: int, element: Handler) -> tuple[list[Any], int]:
    if i >= len(s) or s[i] != "[":
        raise JSONShapeError(f"expected an array at offset {i}")
    items: list[Any] = []
    i = skip_ws(s, i + 1)
    if i < len(s) and s[i] == "]":
        return items, i + 1
    while True:
        value, i = element(s, i)
        items.append(value)
        i = skip_ws(s, i)
        if i < len(s) and s[i] == ",":
            i = skip_ws(s, i + 1)
            continue
        if i < len(s) and s[i] == "]":
            return items, i + 1
        raise JSONShapeError(f"expected ',' or ']' at offset {i}")


def parse_document(s: str, root: Handler) -> Any:
    """Parse all of `s` with `root`; trailing text (other than whitespace) is an error."""
    i = skip_ws(s, 0)
    if i >= len(s):
        raise JSONShapeError("the body is empty; send a JSON document")
    value, end = root(s, i)
    end = skip_ws(s, end)
    if end != len(s):
        raise JSONShapeError(f"unexpected text after the JSON document at offset {end}")
    return value
