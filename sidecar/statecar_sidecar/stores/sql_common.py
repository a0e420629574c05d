"""
What the SQL backends (`sqlite`, `postgresql`) share: one copy, imported by both.

The key-prefix bound of a range scan, the check that a table is statecar's, and the background
task that gives expired rows' space back. Nothing here knows which engine runs the SQL; the
backends never import each other, only this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from statecar_sidecar.stores.errors import StoreError

__all__ = ["Sweeper", "check_layout", "json_text", "prefix_successor"]

# JSON escapes PostgreSQL's jsonb refuses (U+0000) or may read differently (surrogates).
_RISKY_ESCAPE: Final = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _no_constants(name: str) -> object:
    raise ValueError(name)  # NaN, Infinity: Python reads them, JSON does not


def json_text(value: bytes, *, for_jsonb: bool = False) -> str | None:
    """`value` as text when it is one JSON document in UTF-8 (daprd's layouts store those as
    text, anything else as base64 with a binary flag), else None. `for_jsonb`: also None when
    it holds an escape PostgreSQL's jsonb refuses or may change (U+0000, surrogates)."""
    try:
        text = value.decode("utf-8")
        if for_jsonb and ("\x00" in text or _RISKY_ESCAPE.search(text)):
            return None
        json.loads(text, parse_constant=_no_constants)
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors
        return None
    return text


def prefix_successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no bound).

    Code points compare like their UTF-8 bytes, so this bounds a range scan of the primary key.
    Surrogates are skipped: they cannot be encoded, and no stored key contains one.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            successor = last + 1
            if 0xD800 <= successor <= 0xDFFF:
                successor = 0xE000  # surrogates have no UTF-8 form
            return "".join(chars) + chr(successor)
    return None


def check_layout(
    columns: Mapping[str, str],
    expected: Mapping[str, str],
    *,
    table: str,
    location: str,
    engine: str,
    layout: str,
) -> None:
    """Refuse a table whose `columns` (name -> type) lack the `expected` ones of `layout`.

    `table` is the table as messages name it, `location` where it is (`in <file>`,
    `at <host:port>`), `engine` the product name, `layout` the `layout` setting in use.
    """
    if any(columns.get(name) != kind for name, kind in expected.items()):
        found = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        if layout == "statecar":
            hint = (
                f"if daprd wrote it, set the layout setting to daprd's {engine} layout"
                " (docs/components.md), else point tableName at a new table"
            )
            raise StoreError(
                f"table {table} {location} was not created by statecar (it has {found}); {hint}"
            )
        raise StoreError(
            f"table {table} {location} does not have daprd's layout {layout!r} (it has {found});"
            " set the layout setting to the one that wrote it, or point tableName at another table"
        )


class Sweeper:
    """Every `interval` seconds, `sweep()` removes expired rows; `stop()` ends it for good.

    Expired rows are already invisible to reads; this only gives their space back. A failed
    sweep is logged and tried again next time. `where` names the database in log lines.
    """

    def __init__(
        self,
        sweep: Callable[[], Awaitable[int]],
        *,
        interval: float,
        where: str,
        log: logging.Logger,
    ) -> None:
        self._sweep = sweep
        self.interval = interval
        self._where = where
        self._log = log
        self._task: asyncio.Task[None] | None = None

    def start(self, name: str) -> None:
        """Start the task (named `name`), unless the interval is 0 or less: disabled."""
        if self.interval > 0:
            self._task = asyncio.create_task(self._loop(), name=name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                removed = await self._sweep()
            except StoreError as exc:
                self._log.warning("%s: TTL cleanup failed: %s", self._where, exc)
            else:
                if removed:
                    self._log.debug("%s: removed %d expired keys", self._where, removed)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended (the first step of a store's close)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
