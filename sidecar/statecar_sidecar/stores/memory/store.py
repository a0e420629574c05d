"""
`state.in-memory`: the reference backend, held in one process's dict.

Every call runs to completion on the event loop without awaiting, so each check-then-write is
atomic without a lock. Expired keys are dropped when read and swept periodically on writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from statecar_contract.settings import InMemorySettings
from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ETagInvalidError,
    ETagMismatchError,
    TransactionError,
    read_settings,
)

if TYPE_CHECKING:
    from statecar_sidecar.stores.query import Query, QueryPage

_SWEEP_EVERY = 1024  # writes between sweeps of expired keys


class MemoryStore(StateStore):
    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})

    def __init__(self) -> None:
        self._items: dict[str, StoredItem] = {}
        self._clock = etags.ETagClock()
        self._writes = 0

    @classmethod
    async def open(cls, metadata: Mapping[str, str]) -> MemoryStore:
        read_settings(InMemorySettings, metadata)  # it has none: any name given is refused
        return cls()

    def _live(self, key: str) -> StoredItem | None:
        item = self._items.get(key)
        if item is not None and item.expire_at is not None and item.expire_at <= time.time():
            del self._items[key]
            return None
        return item

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        return self._live(key)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        return [self._live(key) for key in keys]

    def _check(self, op: Operation) -> None:
        current = self._live(op.key)
        current_etag = current.etag if current else None
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        if isinstance(op, SetOp):
            etags.check_write(op.key, current_etag, op.etag, first_write=op.first_write)
        else:
            etags.check_delete(op.key, current_etag, op.etag, first_write=op.first_write)

    def _apply(self, op: Operation) -> None:
        if isinstance(op, DeleteOp):
            self._items.pop(op.key, None)
            return
        current = self._items.get(op.key)
        expire_at = time.time() + op.ttl if op.ttl else None
        self._items[op.key] = StoredItem(
            value=op.value,
            etag=self._clock.next(current.etag if current else None),
            expire_at=expire_at,
        )
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = time.time()
        expired = [
            k for k, v in self._items.items() if v.expire_at is not None and v.expire_at <= now
        ]
        for key in expired:
            del self._items[key]

    async def set(self, op: SetOp) -> None:
        self._check(op)
        self._apply(op)

    async def delete(self, op: DeleteOp) -> None:
        self._check(op)
        self._apply(op)

    async def transact(self, ops: Sequence[Operation]) -> None:
        # Check against the state as it will be when each op runs: simulate in order on a
        # shadow view so a transaction that creates a key and then updates it by ETag is judged
        # the way its ops will actually apply, then apply for real only if all passed.
        shadow: dict[str, StoredItem | None] = {}
        for index, op in enumerate(ops):
            current = shadow[op.key] if op.key in shadow else self._live(op.key)
            current_etag = current.etag if current else None
            try:
                if op.etag:
                    etags.validate_etag(op.key, op.etag)
                if isinstance(op, SetOp):
                    etags.check_write(op.key, current_etag, op.etag, first_write=op.first_write)
                    shadow[op.key] = StoredItem(
                        op.value, etag="0"
                    )  # placeholder: no ETag matches it
                else:
                    etags.check_delete(op.key, current_etag, op.etag, first_write=op.first_write)
                    shadow[op.key] = None
            except (ETagMismatchError, ETagInvalidError) as exc:
                raise TransactionError(index, op.key, exc) from exc
        for op in ops:
            self._apply(op)

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        # The engine is imported by the first query: ~15 ms a cold start need not pay.
        from statecar_sidecar.stores.query import collector_paused, run_query_async

        # One C-level copy of the keys (a list of references, about 1 ms at 200k): the query reads
        # each key's item as it is when the engine's slice reaches it, while writes go on, like a
        # Redis SCAN (a key deleted meanwhile is skipped). Rows are made lazily in the slices.
        with collector_paused():
            names = list(self._items)
            now = time.time()
            cut = len(key_prefix)
            items = self._items
            rows = (
                (key[cut:], item.value, item.etag)
                for key in names
                if key.startswith(key_prefix)
                and (item := items.get(key)) is not None
                and (item.expire_at is None or item.expire_at > now)
            )
            return await run_query_async(query, rows)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._items.clear()
