"""
How a backend's settings are declared and read: `Setting`, `Refused` and `MetadataReader`.

Each backend's settings class declares its metadata names once, as `Setting` rows (the name,
Dapr's aliases, the type, the default and what it means) and `Refused` rows (a name daprd
knows that statecar does not implement, with the reason). Everything else is derived from those
rows: the allowed-names table in `components`, the component reference in `docs/`, and the
errors. `MetadataReader` is the one place a raw metadata mapping is read: it refuses unknown and
refused names, picks a setting's value among its spellings, and turns a parser's complaint into
a `ComponentError` naming `spec.metadata.<name>`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, Self, TypeVar

from statecar_contract.errors import ComponentError
from statecar_contract.settings.values import SettingValueError

__all__ = [
    "COMMON_METADATA",
    "COMMON_REFUSED",
    "COMMON_SETTINGS",
    "BackendSettings",
    "MetadataReader",
    "Refused",
    "Setting",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Setting:
    """One metadata name a backend implements, as the component reference documents it."""

    name: str
    #: What a value looks like: "string", "whole number", "boolean", "duration", ...
    kind: str
    description: str
    #: Other spellings daprd accepts for the same setting (components-contrib metadata.yaml).
    aliases: tuple[str, ...] = ()
    #: The default as a user would write it; None when there is none.
    default: str | None = None
    required: bool = False
    #: Holds a credential: errors never echo the value, and the reference suggests a secretKeyRef.
    secret: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True, slots=True)
class Refused:
    """A metadata name daprd knows that statecar refuses, and why (never accepted and ignored)."""

    name: str
    reason: str


#: Metadata names about the component, not the backend (Dapr puts them in `metadata`).
COMMON_METADATA: Final = frozenset({"keyPrefix", "actorStateStore"})

#: Settings every backend takes that the runtime applies, not the store: Dapr's automatic state
#: encryption (dapr/dapr `pkg/encryption/encryption.go`; read by `settings.encryption`). They stay
#: in the component's metadata, so the backend's reader must accept them.
COMMON_SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "primaryEncryptionKey",
        "secretKeyRef to a hex AES key (32, 48 or 64 hex digits)",
        "Encrypt every saved value with AES-GCM under this key, as daprd does; each value is"
        " tagged with the key's secret name (`secretKeyRef.name`). Only a `secretKeyRef` is"
        " accepted. A store with it refuses queries.",
        secret=True,
    ),
    Setting(
        "secondaryEncryptionKey",
        "secretKeyRef to a hex AES key (32, 48 or 64 hex digits)",
        "The previous key during a rotation: values tagged with its secret name are still read;"
        " new writes use `primaryEncryptionKey`. Needs `primaryEncryptionKey`, from another"
        " secret.",
        secret=True,
    ),
)

#: The encryption settings' names, in the order daprd reads them (`settings.encryption` reads
#: them; here so a component without them is validated without importing that module).
ENCRYPTION_SETTINGS: Final = ("primaryEncryptionKey", "secondaryEncryptionKey")
assert {s.name for s in COMMON_SETTINGS} >= set(ENCRYPTION_SETTINGS)

_NO_OUTBOX: Final = (
    "statecar has no transactional outbox: it publishes no events when state changes; remove it"
)
#: Component-level names daprd knows that statecar refuses on every backend.
COMMON_REFUSED: Final[tuple[Refused, ...]] = (
    Refused("outboxPublishPubsub", _NO_OUTBOX),
    Refused("outboxPublishTopic", _NO_OUTBOX),
    Refused("outboxPubsub", _NO_OUTBOX),
    Refused("outboxDiscardWhenMissingState", _NO_OUTBOX),
)


class BackendSettings(Protocol):
    """What every backend's settings class offers (`InMemorySettings`, `RedisSettings`, ...)."""

    #: The Dapr component type, e.g. `state.redis`.
    TYPE: ClassVar[str]
    #: One sentence for the component reference.
    SUMMARY: ClassVar[str]
    SETTINGS: ClassVar[tuple[Setting, ...]]
    REFUSED: ClassVar[tuple[Refused, ...]]

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, str],
        *,
        component: str | None = None,
        source: str | None = None,
        deferred: Collection[str] = (),
        redacted: Collection[str] = (),
    ) -> Self: ...


class MetadataReader:
    """Reads one component's metadata for one backend; every error names the setting.

    `deferred` names settings whose value is not known yet (a `secretKeyRef`, resolved later):
    they count as present for "required" and cross-setting rules, but are not parsed, and the
    reader returns the default for them. `redacted` names settings whose values must never
    appear in a message (resolved secrets), in addition to the `secret=True` settings.
    """

    def __init__(
        self,
        backend: type[BackendSettings],
        metadata: Mapping[str, str],
        *,
        component: str | None,
        source: str | None,
        deferred: Collection[str],
        redacted: Collection[str],
    ) -> None:
        self._type = backend.TYPE
        self._metadata = metadata
        self._deferred = frozenset(deferred)
        self._redacted = frozenset(redacted)
        self._source = source or (f"component {component}" if component else None)
        self._check_names(backend)

    def _check_names(self, backend: type[BackendSettings]) -> None:
        known = {n for s in backend.SETTINGS for n in s.names}
        common = {n for s in COMMON_SETTINGS for n in s.names} | COMMON_METADATA
        refused = {r.name: r.reason for r in (*backend.REFUSED, *COMMON_REFUSED)}
        present = set(self._metadata) | self._deferred
        for name in sorted(present):
            if name in known or name in common:
                continue
            if name in refused:
                raise self.error(name, refused[name])
            hint = ", ".join(sorted(known)) or "none"
            raise self.error(name, f"is not a setting of {self._type} (known: {hint})")

    def error(self, name: str, message: str) -> ComponentError:
        return ComponentError(f"spec.metadata.{name}", message, source=self._source)

    def given(self, setting: Setting) -> str | None:
        """The one spelling of `setting` that is present (with a value or deferred), or None."""
        spellings = [
            n for n in setting.names if n in self._deferred or (self._metadata.get(n) or "").strip()
        ]
        if len(spellings) > 1:
            raise self.error(
                spellings[1], f"{' and '.join(spellings)} are the same setting; keep one"
            )
        return spellings[0] if spellings else None

    def present(self, setting: Setting) -> bool:
        return self.given(setting) is not None

    def is_deferred(self, *settings: Setting) -> bool:
        return any(self.given(s) in self._deferred for s in settings if self.given(s))

    def read(self, setting: Setting, parse: Callable[[str], _T], default: _T) -> _T:
        """`parse` of the value given, `default` when absent, blank or deferred."""
        name = self.given(setting)
        if name is None or name in self._deferred:
            if setting.required and name is None:
                raise self.error(setting.name, f"{self._type} needs it: {setting.description}")
            return default
        raw = self._metadata[name]
        try:
            return parse(raw)
        except SettingValueError as exc:
            shown = "" if setting.secret or name in self._redacted else f" (got {raw!r})"
            raise self.error(name, f"{exc}{shown}") from None

    def text(self, setting: Setting) -> str | None:
        """A string setting as given, or None; blanks around it are removed unless it is a secret."""
        return self.read(setting, lambda raw: raw if setting.secret else raw.strip(), None)
