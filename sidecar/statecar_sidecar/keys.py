"""
Dapr's key scheme: how a user key becomes the stored key, and back.

Stored keys match daprd's byte for byte (dapr/dapr `pkg/components/state/state_config.go`), so
data written by daprd is readable by statecar and the other way round:
`appid` → `<app-id>||key`, `name` → `<store>||key`, `namespace` → `<ns>.<app-id>||key`,
`none` → `key`, anything else → `<prefix>||key`.
"""

from __future__ import annotations

from typing import Final

SEPARATOR: Final = "||"


class IllegalKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"input key/keyPrefix '{key}' can't contain '{SEPARATOR}'")


def store_prefix(strategy: str, *, app_id: str, store_name: str, namespace: str | None) -> str:
    """The text put before every user key of a store (including the separator), or ''."""
    if strategy == "none":
        return ""
    if strategy == "appid":
        return f"{app_id}{SEPARATOR}" if app_id else ""
    if strategy == "name":
        return f"{store_name}{SEPARATOR}"
    if strategy == "namespace":
        # daprd falls back to the app id when no namespace is known (dapr/dapr#7267).
        if not app_id:
            return ""
        return f"{namespace}.{app_id}{SEPARATOR}" if namespace else f"{app_id}{SEPARATOR}"
    return f"{strategy}{SEPARATOR}"


class NulInKeyError(ValueError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"key {key!r} contains a NUL character (\\u0000), which PostgreSQL cannot store; "
            "statecar refuses it on every backend so behaviour stays the same: remove it"
        )


def stored_key(prefix: str, key: str) -> str:
    if SEPARATOR in key:
        raise IllegalKeyError(key)
    if "\x00" in key:
        raise NulInKeyError(key)
    return prefix + key


def user_key(stored: str) -> str:
    """daprd's GetOriginalStateKey: the text after the first separator, else the key itself."""
    parts = stored.split(SEPARATOR, 2)
    return parts[1] if len(parts) > 1 else stored
