"""
SQLite's `connectionString` (alias `url`), read as daprd reads it, turned into what
`sqlite3.connect` opens.

A file path, `:memory:`, or a `file:` URI. As in daprd, a string with a `?` is read as a URI even
without `file:`; `_txlock` is ignored (every write here is `BEGIN IMMEDIATE` anyway) and
`_pragma=name(value)` items are applied, except `busy_timeout`, `journal_mode` and
`foreign_keys`, which daprd refuses too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode

from statecar_sidecar.stores.errors import StoreError

__all__ = ["Target", "parse_target"]

_PRAGMA_ITEM: Final = re.compile(r"([A-Za-z_]+)\((-?[A-Za-z0-9_.]+)\)")
_FORBIDDEN_PRAGMAS: Final = {
    "busy_timeout": "use the busyTimeout metadata property instead",
    "journal_mode": "use the disableWAL metadata property instead",
    "foreign_keys": "statecar manages it",
}


@dataclass(frozen=True, slots=True)
class Target:
    """What `sqlite3.connect` opens, and how to name it in messages."""

    database: str
    uri: bool
    label: str
    in_memory: bool
    read_only: bool
    pragmas: tuple[tuple[str, str], ...]


def parse_target(connection_string: str) -> Target:
    text = connection_string.strip()
    if not text:
        raise StoreError(
            "state.sqlite needs connectionString: a file path, ':memory:' or a file: URI"
        )
    lowered = text.lower()
    in_memory = lowered.startswith((":memory:", "file::memory:")) or "mode=memory" in lowered
    if "?" not in text and not lowered.startswith("file:"):
        # A plain path is opened as a path: no URI decoding, so '%' or '#' in a name is literal.
        return Target(text, uri=False, label=text, in_memory=in_memory, read_only=False, pragmas=())
    base, _, query = text.partition("?")
    if not lowered.startswith("file:"):
        base = "file:" + base  # as daprd does, so 'data.db?mode=ro' works
    kept: list[tuple[str, str]] = []
    pragmas: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "_pragma":
            match = _PRAGMA_ITEM.fullmatch(value.strip())
            if match is None:
                raise StoreError(
                    f"invalid _pragma {value!r} in connectionString: use _pragma=name(value)"
                )
            pragma = match.group(1).lower()
            if pragma in _FORBIDDEN_PRAGMAS:
                raise StoreError(
                    f"_pragma={pragma} is not allowed in connectionString:"
                    f" {_FORBIDDEN_PRAGMAS[pragma]}"
                )
            pragmas.append((pragma, match.group(2)))
        elif not name.startswith("_"):  # _txlock and other Go-driver options mean nothing here
            kept.append((name, value))
    params = dict(kept)
    read_only = params.get("mode") == "ro" or params.get("immutable") == "1"
    database = base + ("?" + urlencode(kept) if kept else "")
    label = base.removeprefix("file:") or ":memory:"
    return Target(
        database,
        uri=True,
        label=label,
        in_memory=in_memory,
        read_only=read_only,
        pragmas=tuple(pragmas),
    )
