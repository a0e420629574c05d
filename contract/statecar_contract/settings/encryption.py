"""
Dapr's automatic state encryption settings: `primaryEncryptionKey` and `secondaryEncryptionKey`.

What daprd does (dapr/dapr v1.18.1 `pkg/encryption/encryption.go`, `ComponentEncryptionKey`):
each setting is a `secretKeyRef`; the secret's value is the AES key in hex (16, 24 or 32 bytes:
AES-128/192/256, `aes.NewCipher`), and the key's *name* is the secret's name
(`secretKeyRef.name`, not its `key`). daprd appends that name to every value it encrypts and,
reading, picks the key whose name the value carries. So the name is part of the data format and
a key given as a plain `value` has no name: daprd then writes values tagged with an empty name
that it cannot read back (`encryption key name not found on record`). statecar refuses a plain
value instead, and refuses a secondary key without a primary or both from one secret (daprd
would silently not encrypt, or could not tell the two keys apart).

Pure: `EncryptionSettings.from_metadata` reads the resolved metadata plus the secret names the
secretKeyRefs came from (`ResolvedComponent.key_names`); errors are `ComponentError`s naming
`spec.metadata.<name>` and never quote a key.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from statecar_contract.errors import ComponentError
from statecar_contract.settings.schema import ENCRYPTION_SETTINGS

__all__ = ["ENCRYPTION_SETTINGS", "EncryptionKey", "EncryptionSettings"]

PRIMARY, SECONDARY = ENCRYPTION_SETTINGS

#: daprd's separator between the ciphertext and the key name (`pkg/encryption/state.go`).
SEPARATOR: Final = "||"
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
_AES_KEY_BYTES: Final = (16, 24, 32)


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """One AES key and the name daprd tags values with (its secret's name)."""

    name: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class EncryptionSettings:
    """A store's keys: writes use `primary`; reads accept a value tagged with either name."""

    primary: EncryptionKey
    secondary: EncryptionKey | None = None

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, str],
        key_names: Mapping[str, str],
        *,
        component: str | None = None,
        source: str | None = None,
        deferred: Collection[str] = (),
    ) -> EncryptionSettings | None:
        """The store's keys, or None when neither setting is given.

        `key_names` maps each setting to the secret its value was resolved from; a setting in
        `metadata` without a name there was given as a plain value. `deferred` names settings
        whose secret is not resolved yet (checked again once it is).
        """
        where = source or (f"component {component}" if component else None)

        def error(name: str, message: str) -> ComponentError:
            return ComponentError(f"spec.metadata.{name}", message, source=where)

        given = [n for n in ENCRYPTION_SETTINGS if n in metadata or n in deferred]
        if not given:
            return None
        if PRIMARY not in given:
            raise error(
                SECONDARY,
                "is the previous key of a rotation and needs primaryEncryptionKey, the key new"
                " values are written with; add it (daprd would silently not encrypt)",
            )
        keys: dict[str, EncryptionKey] = {}
        for name in given:
            if name in deferred:
                continue
            secret = key_names.get(name)
            if secret is None:
                raise error(
                    name,
                    "must be a secretKeyRef {name, key}, not a value: daprd tags every encrypted"
                    " value with the key's secret name, and a plain value has none (daprd then"
                    " writes values it cannot read back)",
                )
            if SEPARATOR in secret:
                raise error(
                    name,
                    f"the secret's name {secret!r} contains {SEPARATOR!r}, the separator daprd"
                    " puts between a value and its key's name; use a secret named without it",
                )
            try:
                keys[name] = EncryptionKey(secret, _aes_key(metadata[name]))
            except ValueError as exc:
                raise error(name, str(exc)) from None
        primary_secret, secondary_secret = key_names.get(PRIMARY), key_names.get(SECONDARY)
        if primary_secret is not None and primary_secret == secondary_secret:
            raise error(
                SECONDARY,
                f"comes from the same secret as primaryEncryptionKey ({primary_secret!r});"
                " values carry the secret's name, so the two keys must be in different secrets",
            )
        if PRIMARY not in keys:  # deferred: the secret is not read yet
            return None
        return cls(keys[PRIMARY], keys.get(SECONDARY))


def _aes_key(text: str) -> bytes:
    # Go's hex.DecodeString: an even number of hex digits, nothing else (no blanks, no 0x).
    if not _HEX.fullmatch(text) or len(text) % 2:
        raise ValueError(
            "the secret must hold the AES key in hex (digits 0-9 and a-f, even length)"
        )
    key = bytes.fromhex(text)
    if len(key) not in _AES_KEY_BYTES:
        raise ValueError(
            f"the key is {len(key)} bytes; AES takes 16, 24 or 32 (32, 48 or 64 hex digits),"
            " e.g. `openssl rand -hex 32`"
        )
    return key
