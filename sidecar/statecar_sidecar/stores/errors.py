"""
Errors a backend raises; the HTTP layer maps each to Dapr's status and errorCode.

ETag errors follow components-contrib's `state.ETagError` kinds: mismatch (HTTP 409) and invalid
(HTTP 400). Everything else is a 5xx with a message a user can act on. `read_settings` is how
every backend's `open()` reads its metadata: through the contract's typed settings class, an
invalid setting becoming a StoreError that names the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from statecar_contract.errors import ComponentError
from statecar_contract.settings import BackendSettings


class StoreError(Exception):
    """A backend failed; the message is safe to show to clients (no secrets)."""


class ETagMismatchError(StoreError):
    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"possible etag mismatch. error from state store: {reason}")


class ETagInvalidError(StoreError):
    def __init__(self, key: str, etag: str) -> None:
        self.key = key
        super().__init__(
            f"invalid etag value: {etag!r} is not an etag this store issued for key {key!r}"
        )


class StoreUnavailableError(StoreError):
    """The backend cannot be reached (down, slow past the timeout, or refusing us).

    Raised for a write only when it was never sent: nothing was applied, retrying is safe.
    """


class OutcomeUnknownError(StoreError):
    """A write was sent, then its answer never came (timeout, connection lost).

    It may or may not have been applied: the client must read the key before retrying, since a
    blind retry of a conditional write would be judged against its own result.
    """

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(
            f"outcome unknown: read the key before retrying. The write was sent to {where},"
            f" then no answer came ({detail}); it may or may not have been applied"
        )


class WriteConflictError(ETagMismatchError):
    """Concurrent requests on the same keys kept aborting each other (a deadlock or a
    serialization failure the backend broke by rolling this request back), past the retries
    the timeout allowed. Nothing was applied; like an ETag mismatch, it is a conflict (409)."""


class ConsistencyError(StoreError):
    """A strong write could not be confirmed by every replica within the timeout."""


class RequestRefusedError(StoreError):
    """The request can never succeed on this store as it is written: the client must change it
    (HTTP 400), e.g. a transaction whose keys a Redis Cluster keeps on different slots."""


class EncryptedQueryError(StoreError):
    """A query on an encrypted store: the backend holds only ciphertext, nothing to filter.

    Raised by `encryption.EncryptedStore`; here so the API can catch it without importing the
    encryption module (and its AES library) when no component encrypts."""

    def __init__(self) -> None:
        super().__init__(
            "cannot query encrypted store: its values are encrypted"
            " (spec.metadata.primaryEncryptionKey), so the backend cannot filter or sort them;"
            " query a store without encryption keys"
        )


class TransactionError(StoreError):
    """A transaction was refused as a whole; the message names the key and the reason."""

    def __init__(self, index: int, key: str, cause: StoreError) -> None:
        self.index = index
        self.key = key
        self.cause = cause
        super().__init__(f"operation {index} on key {key!r} failed, nothing was applied: {cause}")


_S = TypeVar("_S", bound=BackendSettings)


def read_settings(settings: type[_S], metadata: Mapping[str, str]) -> _S:
    """The backend's typed settings (`statecar_contract.settings`), read from `metadata`.

    An invalid setting is a `StoreError` whose message names the field and the fix, as the
    contract's `ComponentError` words it (`spec.metadata.enableTLS: use true or false ...`).
    """
    try:
        return settings.from_metadata(metadata)
    except ComponentError as exc:
        raise StoreError(str(exc)) from None
