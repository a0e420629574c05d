"""
Dapr's automatic state encryption, as a wrapper around any backend: `EncryptedStore`.

The format is daprd's, byte for byte (dapr/dapr v1.18.1 `pkg/encryption/encryption.go` and
`state.go`), so either sidecar reads what the other wrote:

- write: AES-GCM (`cipher.NewGCM`: 12-byte nonce, 16-byte tag, no associated data) under the
  primary key, with a fresh random nonce; the stored value is
  `base64.StdEncoding(nonce || ciphertext || tag) + "||" + <the primary key's secret name>`;
- read: the key name is what follows the *last* `||`; the value is opened with the primary key
  if the name is the primary's, else the secondary's. An empty value reads as empty.

What is encrypted is the value bytes statecar would otherwise store (the JSON text as sent, or a
gRPC value's bytes): saves, bulk saves and the upserts of a transaction. Keys, ETags and TTLs
are not touched, so the concurrency rule and expiry work as on a plain store. Queries are
refused (`EncryptedQueryError`): the backend only sees ciphertext (daprd refuses them too,
`pkg/api/universal/state_query.go`). `cryptography` is imported here and nowhere else in the
sidecar.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from statecar_contract.settings import EncryptionKey, EncryptionSettings
from statecar_sidecar.stores.base import DeleteOp, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import EncryptedQueryError, StoreError

if TYPE_CHECKING:
    from statecar_sidecar.stores.query import Query, QueryPage

__all__ = ["DecryptionError", "EncryptedQueryError", "EncryptedStore", "open_value", "seal"]

#: Go's `cipher.NewGCM` nonce size.
NONCE_BYTES: Final = 12
SEPARATOR: Final = b"||"


class DecryptionError(StoreError):
    """A stored value this store's keys cannot open; the message names the key and why."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"could not decrypt the value of key {key!r}: {reason}")


def seal(plaintext: bytes, key: EncryptionKey, *, nonce: bytes | None = None) -> bytes:
    """daprd's `TryEncryptValue`: base64(nonce + ciphertext + tag) + "||" + key name."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    sealed = nonce + AESGCM(key.key).encrypt(nonce, plaintext, None)
    return base64.b64encode(sealed) + SEPARATOR + key.name.encode()


def open_value(stored: bytes, keys: EncryptionSettings) -> bytes:
    """daprd's `TryDecryptValue`; ValueError with the reason when it cannot be opened."""
    if not stored:
        return b""
    encoded, separator, name_bytes = stored.rpartition(SEPARATOR)
    if not separator or not name_bytes:
        raise ValueError(
            "encryption key name not found on record (it was stored without encryption,"
            " or by a writer without a key name)"
        )
    name = name_bytes.decode(errors="replace")
    if name == keys.primary.name:
        key = keys.primary
    elif keys.secondary is not None and name == keys.secondary.name:
        key = keys.secondary
    else:
        known = repr(keys.primary.name)
        if keys.secondary is not None:
            known += f" and {keys.secondary.name!r}"
        raise ValueError(
            f"it was encrypted with the key of secret {name!r}; this store has {known}"
            " (set the old key as secondaryEncryptionKey to read it)"
        )
    try:
        sealed = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("the ciphertext is not base64") from None
    if len(sealed) < NONCE_BYTES + 16:
        raise ValueError("the ciphertext is shorter than a nonce and a tag")
    try:
        return AESGCM(key.key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)
    except InvalidTag:
        raise ValueError(
            f"authentication failed with the key of secret {name!r} (wrong key, or altered data)"
        ) from None


class EncryptedStore(StateStore):
    """`inner` with every value encrypted on the way in and decrypted on the way out."""

    def __init__(self, inner: StateStore, keys: EncryptionSettings) -> None:
        self.inner = inner
        self.keys = keys
        # daprd reports the backend's features unchanged for an encrypted store.
        self.features = inner.features

    def _open(self, key: str, item: StoredItem | None) -> StoredItem | None:
        if item is None:
            return None
        try:
            value = open_value(item.value, self.keys)
        except ValueError as exc:
            raise DecryptionError(key, str(exc)) from None
        return dataclasses.replace(item, value=value)

    def _seal(self, op: SetOp) -> SetOp:
        return dataclasses.replace(op, value=seal(op.value, self.keys.primary))

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        return self._open(key, await self.inner.get(key, strong=strong))

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        items = await self.inner.bulk_get(keys)
        return [self._open(k, i) for k, i in zip(keys, items, strict=True)]

    async def set(self, op: SetOp) -> None:
        await self.inner.set(self._seal(op))

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        return await self.inner.set_many([self._seal(op) for op in ops])

    async def delete(self, op: DeleteOp) -> None:
        await self.inner.delete(op)

    async def transact(self, ops: Sequence[Operation]) -> None:
        await self.inner.transact([self._seal(op) if isinstance(op, SetOp) else op for op in ops])

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        raise EncryptedQueryError

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()
