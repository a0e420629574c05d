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
    """The backend cannot be reached (down, slow past the timeout, or refusing us)."""


class ConsistencyError(StoreError):
    """A strong write could not be confirmed by every replica within the timeout."""


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
