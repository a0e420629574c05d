"""
The concurrency rule (docs/state-api.md, "Concurrency and ETags"), one table for every backend.

ETags are decimal strings. A new ETag is `max(current + 1, now in microseconds, last issued + 1)`:
it grows on every write of a key and, being clock-based, a key deleted and re-created never gets
an ETag it had before (no ABA; a per-key counter restarting at 1 would repeat). Decimal integers
also keep Redis data layout-compatible with daprd, whose scripts HINCRBY the version field.
"""

from __future__ import annotations

import re
import time
from typing import Final

from statecar_sidecar.stores.errors import ETagInvalidError, ETagMismatchError

_ETAG: Final = re.compile(r"[1-9][0-9]{0,18}")
# daprd's SQLite and PostgreSQL v2 tables hold random UUIDs (`uuid.NewRandom`, text form).
_UUID_ETAG: Final = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def validate_etag(key: str, etag: str) -> None:
    """An ETag no store of ours could have produced is 'invalid' (HTTP 400), not a mismatch."""
    if not _ETAG.fullmatch(etag):
        raise ETagInvalidError(key, etag)


def validate_uuid_etag(key: str, etag: str) -> str:
    """The ETag of a daprd layout with UUID ETags, in the lower-case form it is stored in.

    daprd answers a non-UUID ETag with a mismatch (or, on SQLite, compares it as text); we call
    it invalid, as any ETag no store of ours could have produced.
    """
    if not _UUID_ETAG.fullmatch(etag):
        raise ETagInvalidError(key, etag)
    return etag.lower()


def check_write(key: str, current: str | None, given: str | None, *, first_write: bool) -> None:
    """Raise ETagMismatchError unless the table lets this save through."""
    if given:
        if current is None:
            raise ETagMismatchError(
                key, f"key {key!r} does not exist, so etag {given} cannot match"
            )
        if current != given:
            raise ETagMismatchError(key, f"key {key!r} has etag {current}, not {given}")
    elif first_write and current is not None:
        raise ETagMismatchError(
            key, f"key {key!r} already exists and first-write needs its etag to overwrite it"
        )


def check_delete(key: str, current: str | None, given: str | None, *, first_write: bool) -> None:
    """Deleting an absent key without ETag succeeds; otherwise the same table as saves."""
    if given:
        check_write(key, current, given, first_write=first_write)
    elif first_write and current is not None:
        raise ETagMismatchError(
            key, f"key {key!r} exists and first-write needs its etag to delete it"
        )


class ETagClock:
    """Issues strictly increasing ETags for one process (backends on a server use its clock)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self, current: str | None) -> str:
        candidate = time.time_ns() // 1000
        if current is not None:
            candidate = max(candidate, int(current) + 1)
        candidate = max(candidate, self._last + 1)
        self._last = candidate
        return str(candidate)
