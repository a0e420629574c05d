"""
The `StateStoreComponent` model: parsing, defaults and validation of component documents.

Accepts statecar's own `StateStoreComponent` (`statecar.io/v1alpha1`) and Dapr's `Component`
(`dapr.io/v1alpha1`, `spec.type: state.*`) so a Dapr user's components folder carries over.
Pure: callers read files or the API; this module only turns decoded documents into frozen
objects, or into a `ComponentError` that names the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from statecar_contract.errors import ComponentError
from statecar_contract.settings import (
    BACKENDS,
    COMMON_METADATA,
    COMMON_REFUSED,
    COMMON_SETTINGS,
    ENCRYPTION_SETTINGS,
    BackendSettings,
    read_settings,
)

if TYPE_CHECKING:
    from statecar_contract.settings.encryption import EncryptionSettings

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "BACKEND_METADATA",
    "COMMON_METADATA",
    "CONCURRENCY_VALUES",
    "CONSISTENCY_VALUES",
    "DAPR_API_VERSION",
    "DAPR_COMPONENTS_RESOURCE",
    "KIND",
    "PLURAL",
    "REQUIRED_METADATA",
    "ComponentError",
    "ComponentSpec",
    "Concurrency",
    "Consistency",
    "MetadataItem",
    "ResolvedComponent",
    "SecretKeyRef",
    "encryption_settings",
    "is_state_component",
    "parse_component",
    "resolve",
    "validate_backend_metadata",
    "validate_key_prefix",
]

API_GROUP: Final = "statecar.io"
API_VERSION: Final = "v1alpha1"
KIND: Final = "StateStoreComponent"
PLURAL: Final = "statestorecomponents"
DAPR_API_VERSION: Final = "dapr.io/v1alpha1"
#: Dapr's Component resource in Kubernetes (components.dapr.io): group, version, plural.
DAPR_COMPONENTS_RESOURCE: Final = ("dapr.io", "v1alpha1", "components")

Concurrency = Literal["first-write", "last-write"]
Consistency = Literal["eventual", "strong"]
CONCURRENCY_VALUES: Final[tuple[str, ...]] = ("first-write", "last-write")
CONSISTENCY_VALUES: Final[tuple[str, ...]] = ("eventual", "strong")

if TYPE_CHECKING:
    #: Backend types and the metadata names each one implements, every alias included, derived
    #: from the settings classes (`statecar_contract.settings`). Unknown names are an error (a
    #: typo such as `redishost` would otherwise be ignored silently, as daprd does).
    BACKEND_METADATA: Mapping[str, frozenset[str]]
    #: Metadata a backend cannot start without (by its main name; an alias counts too).
    REQUIRED_METADATA: Mapping[str, frozenset[str]]


def _metadata_names(backend: type[BackendSettings]) -> frozenset[str]:
    return frozenset(name for setting in backend.SETTINGS for name in setting.names)


def __getattr__(name: str) -> object:
    """`BACKEND_METADATA` and `REQUIRED_METADATA`, built when first asked for: they read every
    backend's settings class, which a sidecar need not import (`settings.BACKENDS`)."""
    if name == "BACKEND_METADATA":
        value: Mapping[str, frozenset[str]] = {
            kind: _metadata_names(backend) for kind, backend in BACKENDS.items()
        }
    elif name == "REQUIRED_METADATA":
        value = {
            kind: frozenset(s.name for s in backend.SETTINGS if s.required)
            for kind, backend in BACKENDS.items()
            if any(s.required for s in backend.SETTINGS)
        }
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class SecretKeyRef:
    """A metadata value kept in a Kubernetes Secret (or, locally, an env var / secrets file)."""

    name: str
    key: str


@dataclass(frozen=True)
class MetadataItem:
    """One `spec.metadata` entry: exactly one of `value` and `secret_key_ref` is set."""

    name: str
    value: str | None = None
    secret_key_ref: SecretKeyRef | None = None


@dataclass(frozen=True)
class ComponentSpec:
    """A state store component as declared, before secrets are resolved."""

    name: str
    type: str
    version: str = "v1"
    namespace: str | None = None
    metadata: tuple[MetadataItem, ...] = ()
    concurrency: Concurrency = "last-write"
    consistency: Consistency = "eventual"
    #: When true, a request naming another concurrency/consistency is rejected instead of winning.
    enforce: bool = False
    key_prefix: str = "appid"
    scopes: tuple[str, ...] = ()
    generation: int | None = None

    @property
    def secret_refs(self) -> tuple[SecretKeyRef, ...]:
        return tuple(m.secret_key_ref for m in self.metadata if m.secret_key_ref is not None)

    def in_scope(self, app_id: str) -> bool:
        """Empty scopes mean every app of the namespace may use the component."""
        return not self.scopes or app_id in self.scopes


@dataclass(frozen=True)
class ResolvedComponent:
    """A component with every secret resolved: what the sidecar needs to open a store."""

    name: str
    type: str
    version: str = "v1"
    metadata: Mapping[str, str] = field(default_factory=dict)
    concurrency: Concurrency = "last-write"
    consistency: Consistency = "eventual"
    enforce: bool = False
    key_prefix: str = "appid"
    scopes: tuple[str, ...] = ()
    #: The secret each encryption key came from, by setting name: daprd tags every encrypted
    #: value with it (`settings.encryption`), so it travels with the key (in the wiring too).
    key_names: Mapping[str, str] = field(default_factory=dict)

    def in_scope(self, app_id: str) -> bool:
        return not self.scopes or app_id in self.scopes

    def settings(self) -> BackendSettings:
        """The backend's typed settings (a ComponentError when the metadata is invalid)."""
        return read_settings(self.type, self.metadata, component=self.name)

    def encryption(self, *, source: str | None = None) -> EncryptionSettings | None:
        """The store's encryption keys, or None when it is not encrypted (ComponentError)."""
        return encryption_settings(
            self.metadata, self.key_names, component=self.name, source=source
        )


def encryption_settings(
    metadata: Mapping[str, str],
    key_names: Mapping[str, str],
    *,
    component: str | None = None,
    source: str | None = None,
    deferred: Collection[str] = (),
) -> EncryptionSettings | None:
    """`EncryptionSettings.from_metadata`, without importing it for a component that names no
    encryption setting (None then, as it would answer): most components, at every start."""
    if not any(n in metadata or n in deferred for n in ENCRYPTION_SETTINGS):
        return None
    from statecar_contract.settings.encryption import EncryptionSettings

    return EncryptionSettings.from_metadata(
        metadata, key_names, component=component, source=source, deferred=deferred
    )


def _expect_mapping(value: object, field_path: str, source: str | None) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ComponentError(field_path, f"must be an object, got {_kind(value)}", source=source)
    return value


def _expect_str(value: object, field_path: str, source: str | None) -> str:
    if not isinstance(value, str) or not value:
        raise ComponentError(
            field_path, f"must be a non-empty string, got {_kind(value)}", source=source
        )
    return value


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _scalar_to_str(value: object, field_path: str, source: str | None) -> str:
    # Dapr metadata values are strings, but YAML turns `6379` and `true` into numbers and booleans.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ComponentError(field_path, f"must be a string, got {_kind(value)}", source=source)


def _parse_metadata(
    items: object, *, source: str | None, allow_secret_refs: bool = True
) -> tuple[MetadataItem, ...]:
    if items is None:
        return ()
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ComponentError(
            "spec.metadata", "must be a list of {name, value} entries", source=source
        )
    parsed: list[MetadataItem] = []
    seen: set[str] = set()
    for index, raw in enumerate(items):
        path = f"spec.metadata[{index}]"
        entry = _expect_mapping(raw, path, source)
        name = _expect_str(entry.get("name"), f"{path}.name", source)
        if name in seen:
            raise ComponentError(
                f"{path}.name", f"'{name}' is listed twice; keep one", source=source
            )
        seen.add(name)
        has_value = "value" in entry and entry["value"] is not None
        ref_raw = entry.get("secretKeyRef")
        if has_value and ref_raw is not None:
            raise ComponentError(
                path, f"'{name}' sets both value and secretKeyRef; keep exactly one", source=source
            )
        if ref_raw is not None:
            if not allow_secret_refs:
                raise ComponentError(f"{path}.secretKeyRef", "is not allowed here", source=source)
            ref = _expect_mapping(ref_raw, f"{path}.secretKeyRef", source)
            secret_name = _expect_str(ref.get("name"), f"{path}.secretKeyRef.name", source)
            # As daprd: a secretKeyRef without a key reads the key named like the secret.
            secret = SecretKeyRef(
                name=secret_name,
                key=secret_name
                if ref.get("key") is None
                else _expect_str(ref.get("key"), f"{path}.secretKeyRef.key", source),
            )
            parsed.append(MetadataItem(name=name, secret_key_ref=secret))
        elif has_value:
            parsed.append(
                MetadataItem(
                    name=name, value=_scalar_to_str(entry["value"], f"{path}.value", source)
                )
            )
        else:
            raise ComponentError(
                path, f"'{name}' needs a value or a secretKeyRef {{name, key}}", source=source
            )
    return tuple(parsed)


def _choice(
    value: object, field_path: str, allowed: tuple[str, ...], default: str, source: str | None
) -> str:
    if value is None or value == "":
        return default
    if value not in allowed:
        options = ", ".join(allowed)
        raise ComponentError(field_path, f"must be one of {options}, got {value!r}", source=source)
    return str(value)


def validate_key_prefix(
    prefix: str, field_path: str = "spec.keyPrefix", source: str | None = None
) -> str:
    # Dapr lower-cases a custom prefix and forbids the separator inside it (dapr/dapr
    # pkg/components/state/state_config.go); we keep both rules so stored keys match daprd's.
    if "||" in prefix:
        raise ComponentError(field_path, f"'{prefix}' must not contain '||'", source=source)
    if not prefix:
        return "appid"
    return prefix.lower()


def validate_backend_metadata(
    component_type: str, names: Sequence[str], source: str | None = None
) -> None:
    """Reject metadata names the backend does not implement, and missing required ones."""
    backend = BACKENDS.get(component_type)
    if backend is None:
        options = ", ".join(sorted(BACKENDS))
        raise ComponentError(
            "spec.type",
            f"'{component_type}' is not a state store statecar serves; use one of {options}",
            source=source,
        )
    known = _metadata_names(backend)  # BACKEND_METADATA's row, without every other backend
    common = {n for s in COMMON_SETTINGS for n in s.names} | COMMON_METADATA
    refused = {r.name: r.reason for r in (*backend.REFUSED, *COMMON_REFUSED)}
    for index, name in enumerate(names):
        if name in known or name in common:
            continue
        if name in refused:
            raise ComponentError(
                f"spec.metadata[{index}].name", f"'{name}': {refused[name]}", source=source
            )
        hint = ", ".join(sorted(known)) or "none"
        raise ComponentError(
            f"spec.metadata[{index}].name",
            f"'{name}' is not a setting of {component_type} (known: {hint})",
            source=source,
        )
    missing = sorted(
        s.name for s in backend.SETTINGS if s.required and not set(s.names) & set(names)
    )
    if missing:
        raise ComponentError(
            "spec.metadata",
            f"{component_type} needs {', '.join(missing)}; add it as a metadata entry",
            source=source,
        )


#: (type, spec.version) -> daprd's table layout, the `layout` setting a Dapr `Component` gets
#: when it names none: a database daprd wrote for that component is then served as it is.
_DAPR_LAYOUTS: Final[Mapping[tuple[str, str], str]] = {
    ("state.postgresql", "v1"): "dapr-v1",
    ("state.postgresql", "v2"): "dapr-v2",
    ("state.sqlite", "v1"): "dapr",
}


def _with_layout(
    metadata: tuple[MetadataItem, ...],
    component_type: str,
    version: str,
    *,
    dapr: bool,
    source: str | None,
) -> tuple[MetadataItem, ...]:
    """Check `spec.version`, and give a Dapr `Component` daprd's layout of its version.

    `spec.version: v2` exists for `state.postgresql` only: daprd's v2 table layout (components-
    contrib `state/postgresql/v2`), so it needs `layout: dapr-v2`, which it implies.
    """
    if version not in ("v1", "v2") or (version == "v2" and component_type != "state.postgresql"):
        raise ComponentError(
            "spec.version",
            f"{component_type} has only v1 (state.postgresql also v2), got {version!r}",
            source=source,
        )
    given = next((m for m in metadata if m.name == "layout"), None)
    if version == "v2":
        if given is not None and given.value not in (None, "dapr-v2"):
            raise ComponentError(
                "spec.metadata.layout",
                "spec.version v2 is daprd's v2 table layout: set layout to dapr-v2 or remove it",
                source=source,
            )
        if given is None:
            return (*metadata, MetadataItem(name="layout", value="dapr-v2"))
    layout = _DAPR_LAYOUTS.get((component_type, version))
    if dapr and given is None and layout is not None:
        return (*metadata, MetadataItem(name="layout", value=layout))
    return metadata


def parse_component(document: object, *, source: str | None = None) -> ComponentSpec:
    """Parse a `StateStoreComponent` or a Dapr `Component` (state.*) document."""
    doc = _expect_mapping(document, "(document)", source)
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    meta = _expect_mapping(doc.get("metadata", {}), "metadata", source)
    name = _expect_str(meta.get("name"), "metadata.name", source)
    if api_version == DAPR_API_VERSION and kind == "Component":
        # What Kubernetes allows a components.dapr.io name: a DNS subdomain.
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise ComponentError(
                "metadata.name",
                f"'{name}' must be a DNS subdomain (lower-case letters, digits, '-' and '.',"
                " at most 253)",
                source=source,
            )
    elif not _DNS_LABEL.match(name) or len(name) > 63:
        raise ComponentError(
            "metadata.name",
            f"'{name}' must be a DNS label (lower-case letters, digits and '-', at most 63)",
            source=source,
        )
    namespace = meta.get("namespace")
    generation = meta.get("generation")
    spec = _expect_mapping(doc.get("spec"), "spec", source)
    component_type = _expect_str(spec.get("type"), "spec.type", source)
    version = str(spec.get("version") or "v1")
    metadata = _parse_metadata(spec.get("metadata"), source=source)
    metadata = _with_layout(
        metadata,
        component_type,
        version,
        dapr=api_version == DAPR_API_VERSION and kind == "Component",
        source=source,
    )
    names = [m.name for m in metadata]
    validate_backend_metadata(component_type, names, source)
    # The values given in the document are checked now, by the backend's settings class; a
    # secretKeyRef's value is checked when it is resolved (`resolve`).
    read_settings(
        component_type,
        {m.name: m.value for m in metadata if m.value is not None},
        component=name,
        source=source,
        deferred=[m.name for m in metadata if m.secret_key_ref is not None],
    )
    encryption_settings(
        {m.name: m.value for m in metadata if m.value is not None},
        {},
        component=name,
        source=source,
        deferred=[m.name for m in metadata if m.secret_key_ref is not None],
    )

    if api_version == DAPR_API_VERSION and kind == "Component":
        # Dapr keeps the key prefix in metadata and has no concurrency/consistency defaults.
        prefix_items = [m for m in metadata if m.name == "keyPrefix"]
        key_prefix = prefix_items[0].value or "appid" if prefix_items else "appid"
        scopes_raw = doc.get("scopes")
        return ComponentSpec(
            name=name,
            type=component_type,
            version=version,
            namespace=str(namespace) if namespace else None,
            metadata=tuple(m for m in metadata if m.name not in COMMON_METADATA),
            key_prefix=validate_key_prefix(key_prefix, "spec.metadata.keyPrefix", source),
            scopes=_parse_scopes(scopes_raw, "scopes", source),
        )
    if api_version != f"{API_GROUP}/{API_VERSION}" or kind != KIND:
        raise ComponentError(
            "apiVersion/kind",
            f"expected {API_GROUP}/{API_VERSION} {KIND} (or {DAPR_API_VERSION} Component), "
            f"got {api_version} {kind}",
            source=source,
        )
    if "keyPrefix" in names:
        raise ComponentError(
            "spec.metadata",
            "keyPrefix is a field of spec here: move it to spec.keyPrefix",
            source=source,
        )
    key_prefix_raw = spec.get("keyPrefix", "appid")
    if not isinstance(key_prefix_raw, str):
        raise ComponentError("spec.keyPrefix", "must be a string", source=source)
    enforce = spec.get("enforce", False)
    if not isinstance(enforce, bool):
        raise ComponentError(
            "spec.enforce", f"must be true or false, got {enforce!r}", source=source
        )
    return ComponentSpec(
        name=name,
        type=component_type,
        version=version,
        namespace=str(namespace) if namespace else None,
        metadata=tuple(m for m in metadata if m.name not in COMMON_METADATA),
        concurrency=_choice(
            spec.get("concurrency"), "spec.concurrency", CONCURRENCY_VALUES, "last-write", source
        ),  # type: ignore[arg-type]  # narrowed by the allowed values
        consistency=_choice(
            spec.get("consistency"), "spec.consistency", CONSISTENCY_VALUES, "eventual", source
        ),  # type: ignore[arg-type]  # narrowed by the allowed values
        enforce=enforce,
        key_prefix=validate_key_prefix(key_prefix_raw, "spec.keyPrefix", source),
        scopes=_parse_scopes(spec.get("scopes"), "spec.scopes", source),
        generation=generation if isinstance(generation, int) else None,
    )


def _parse_scopes(raw: object, field_path: str, source: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ComponentError(field_path, "must be a list of app ids", source=source)
    return tuple(_expect_str(s, f"{field_path}[{i}]", source) for i, s in enumerate(raw))


def is_state_component(document: object) -> bool:
    """True for documents this module parses; other YAML in a components folder is skipped."""
    if not isinstance(document, Mapping):
        return False
    if document.get("kind") == KIND and document.get("apiVersion") == f"{API_GROUP}/{API_VERSION}":
        return True
    spec = document.get("spec")
    return (
        document.get("kind") == "Component"
        and document.get("apiVersion") == DAPR_API_VERSION
        and isinstance(spec, Mapping)
        and str(spec.get("type", "")).startswith("state.")
    )


def resolve(
    spec: ComponentSpec, secrets: Mapping[SecretKeyRef, str], *, source: str | None = None
) -> ResolvedComponent:
    """Replace every secretKeyRef by its value, then check the settings with every value known.

    A missing secret, or a secret value the backend cannot use (`redisPort` set to `abc`),
    raises ComponentError (naming `source`, the file, when given, else the component);
    messages never quote a value that came from a secret.
    """
    values: dict[str, str] = {}
    for index, item in enumerate(spec.metadata):
        if item.secret_key_ref is not None:
            ref = item.secret_key_ref
            if ref not in secrets:
                raise ComponentError(
                    f"spec.metadata[{index}].secretKeyRef",
                    f"secret '{ref.name}' has no key '{ref.key}' (or does not exist); create it or fix the reference",
                    source=source,
                )
            values[item.name] = secrets[ref]
        else:
            values[item.name] = item.value or ""
    read_settings(
        spec.type,
        values,
        component=spec.name,
        source=source,
        redacted=[m.name for m in spec.metadata if m.secret_key_ref is not None],
    )
    key_names = {
        m.name: m.secret_key_ref.name
        for m in spec.metadata
        if m.name in ENCRYPTION_SETTINGS and m.secret_key_ref is not None
    }
    encryption_settings(values, key_names, component=spec.name, source=source)
    return ResolvedComponent(
        name=spec.name,
        type=spec.type,
        version=spec.version,
        metadata=values,
        concurrency=spec.concurrency,
        consistency=spec.consistency,
        enforce=spec.enforce,
        key_prefix=spec.key_prefix,
        scopes=spec.scopes,
        key_names=key_names,
    )
