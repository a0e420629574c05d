"""
The interface every backend implements, and the request/response values that cross it.

Keys arriving here are already prefixed (see `keys.py`); values are the exact JSON bytes the
client sent. The concurrency rule is one table for every backend (docs/state-api.md, "Concurrency and
ETags"): backends call `etags.check_write` / `etags.check_delete` with the key's current ETag
inside whatever makes the check-then-write atomic for them (a Lua script, a row lock, a lock).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from statecar_sidecar.stores.query import Query, QueryPage


class Feature(enum.StrEnum):
    """Dapr's feature names, reported by `/v1.0/metadata` as capabilities."""

    ETAG = "ETAG"
    TRANSACTIONAL = "TRANSACTIONAL"
    TTL = "TTL"
    QUERY_API = "QUERY_API"


# The per-request values (an item read, an operation to run) are not `frozen`: on Python 3.11 a
# frozen dataclass's __init__ sets each field through object.__setattr__, 0.95 µs for SetOp's
# six against 0.22 µs, paid per item of every request. Nothing changes them once built.


@dataclass(slots=True)
class StoredItem:
    """A key's current state: the value bytes as sent, its ETag, and its expiry (epoch seconds)."""

    value: bytes
    etag: str
    expire_at: float | None = None


@dataclass(slots=True)
class SetOp:
    """Write `value` to `key`. `ttl` is seconds until expiry; None means no expiry (and clears one)."""

    key: str
    value: bytes
    etag: str | None = None
    first_write: bool = False
    strong: bool = False
    ttl: int | None = None


@dataclass(slots=True)
class DeleteOp:
    """Delete `key`, under the same ETag and concurrency rules as `SetOp`."""

    key: str
    etag: str | None = None
    first_write: bool = False
    strong: bool = False


Operation = SetOp | DeleteOp


class StateStore(abc.ABC):
    """One opened backend. All methods may raise the errors of `stores.errors`."""

    features: frozenset[Feature] = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL})

    @abc.abstractmethod
    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        """The key's item, or None when it is absent or expired."""

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        """Items in the order of `keys`. Backends override this to read in one round trip."""
        return [await self.get(key) for key in keys]

    @abc.abstractmethod
    async def set(self, op: SetOp) -> None:
        """Check the concurrency rule and write, atomically per key."""

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        """Not atomic (as daprd's multi-item save): each op is checked and written on its own."""
        results: list[Exception | None] = []
        for op in ops:
            try:
                await self.set(op)
            except Exception as exc:  # noqa: BLE001 -- each item's failure is reported, not raised
                results.append(exc)
            else:
                results.append(None)
        return results

    @abc.abstractmethod
    async def delete(self, op: DeleteOp) -> None:
        """Check the concurrency rule and delete; deleting an absent key without ETag succeeds."""

    @abc.abstractmethod
    async def transact(self, ops: Sequence[Operation]) -> None:
        """Apply every op in order, all or nothing; any failed check raises and writes nothing."""

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        """Dapr's query language over keys starting with `key_prefix` (stores with QUERY_API)."""
        raise NotImplementedError

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreUnavailableError when the backend cannot serve requests now."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
