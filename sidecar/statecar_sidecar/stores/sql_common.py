"""
What the SQL backends (`sqlite`, `postgresql`) share: one copy, imported by both.

The key-prefix bound of a range scan, the check that a table is statecar's, and the background
task that gives expired rows' space back. Nothing here knows which engine runs the SQL; the
backends never import each other, only this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from statecar_sidecar.stores.errors import StoreError

__all__ = ["Sweeper", "check_layout", "prefix_successor"]


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
) -> None:
    """Refuse a table whose `columns` (name -> type) lack statecar's `expected` ones.

    `table` is the table as messages name it, `location` where it is (`in <file>`,
    `at <host:port>`), `engine` the product name daprd's tables are named after.
    """
    if any(columns.get(name) != kind for name, kind in expected.items()):
        found = ", ".join(f"{name} {kind}" for name, kind in columns.items())
        raise StoreError(
            f"table {table} {location} was not created by statecar (it has {found});"
            f" daprd's {engine} tables have another layout, so point tableName at a new table"
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
