"""
Where the sidecar's components come from: a wiring file (in a pod) or a folder of YAML files.

In a pod the operator has already resolved every secret into the wiring Secret. Locally
(`statecar sidecar --components-path DIR`, `statecar run`) a `secretKeyRef {name, key}` resolves
from, in order: the secrets file (`--secrets-file`/`STATECAR_SECRETS_FILE`, YAML or JSON
`{secret-name: {key: value}}`), then the environment variable `<NAME>_<KEY>` (upper-cased,
non-alphanumerics as `_`; e.g. `redis-auth`/`password` → `REDIS_AUTH_PASSWORD`).

Components fail one at a time: a document that does not parse, a secret that is missing or a
setting the backend refuses (`redisPort: abc`) becomes a `FailedComponent` naming the component,
the file and the field, and every other component still loads. Only a source that cannot be
read at all (a missing folder, a secrets file of the wrong shape, a corrupt wiring file) raises.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from statecar_contract import wiring
from statecar_contract.components import (
    ComponentError,
    ResolvedComponent,
    SecretKeyRef,
    is_state_component,
    parse_component,
    resolve,
)
from statecar_contract.settings import read_settings

YAML_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's loader when PyYAML was built with it: the pure-Python one costs ~1 ms per file.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class FailedComponent:
    """A declared component that cannot be used as written; the others load without it.

    `name` is None when the file itself is unreadable (invalid YAML): then every component
    that came from `source` keeps its previous version, if it had one.
    """

    name: str | None
    source: str
    error: ComponentError
    type: str | None = None
    scopes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """How health, metadata and the logs name it: the component, else its file."""
        return self.name or self.source

    @property
    def reason(self) -> str:
        """The error, naming the file and the field (`<file>: spec.metadata.redisPort: ...`)."""
        return str(self.error)


@dataclass(frozen=True)
class LoadedComponents:
    components: tuple[ResolvedComponent, ...]
    fingerprint: str  # changes whenever the sources change; the reloader compares it
    failed: tuple[FailedComponent, ...] = ()
    #: The file each component came from, by component name.
    sources: Mapping[str, str] = field(default_factory=dict)


def secret_env_name(ref: SecretKeyRef) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", f"{ref.name}_{ref.key}").upper()


def _load_secrets_file(path: Path) -> dict[str, dict[str, str]]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ComponentError("secrets file", f"cannot read it: {exc}", source=str(path)) from exc
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ComponentError(
            "secrets file", "must map secret names to {key: value} objects", source=str(path)
        )
    return {str(n): {str(k): str(v) for k, v in keys.items()} for n, keys in document.items()}


def _resolve_locally(
    refs: tuple[SecretKeyRef, ...],
    secrets_file: Path | None,
    file_secrets: Mapping[str, Mapping[str, str]] | ComponentError,
    environ: Mapping[str, str],
    source: str,
) -> dict[SecretKeyRef, str]:
    if refs and isinstance(file_secrets, ComponentError):
        raise file_secrets
    if isinstance(file_secrets, ComponentError):
        return {}
    values: dict[SecretKeyRef, str] = {}
    for ref in refs:
        if ref.key in file_secrets.get(ref.name, {}):
            values[ref] = file_secrets[ref.name][ref.key]
        elif secret_env_name(ref) in environ:
            values[ref] = environ[secret_env_name(ref)]
        else:
            where = f"the secrets file {secrets_file} or " if secrets_file else ""
            raise ComponentError(
                "secretKeyRef",
                f"secret {ref.name}/{ref.key} not found: set it in {where}"
                f"the environment variable {secret_env_name(ref)}",
                source=source,
            )
    return values


def load_folder(
    folder: Path, *, secrets_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> LoadedComponents:
    """Every state component in `folder`'s YAML files (other kinds of document are skipped)."""
    environ = environ or {}
    if not folder.is_dir():
        raise ComponentError(
            "components path", "is not a folder; create it or fix the path", source=str(folder)
        )
    # A secrets file that cannot be read fails only the components that take a secret from it.
    file_secrets: dict[str, dict[str, str]] | ComponentError = {}
    if secrets_file is not None:
        try:
            file_secrets = _load_secrets_file(secrets_file)
        except ComponentError as exc:
            file_secrets = exc
    digest = hashlib.sha256()
    components: dict[str, ResolvedComponent] = {}
    sources: dict[str, str] = {}
    failed: list[FailedComponent] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()):
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            digest.update(path.name.encode() + b"\0unreadable")
            error = ComponentError("(file)", f"cannot be read: {exc}", source=source)
            failed.append(FailedComponent(None, source, error))
            continue
        digest.update(path.name.encode() + b"\0" + text.encode())
        try:
            documents = list(yaml.load_all(text, Loader=_YAML_LOADER))
        except (yaml.YAMLError, RecursionError) as exc:
            error = ComponentError("(yaml)", f"is not valid YAML: {exc}", source=source)
            failed.append(FailedComponent(None, source, error))
            continue
        for document in documents:
            if not is_state_component(document):
                continue
            try:
                spec = parse_component(document, source=source)
                if spec.name in components:
                    raise ComponentError(
                        "metadata.name",
                        f"a component named {spec.name!r} is defined twice"
                        f" (first in {sources[spec.name]}); rename or remove one",
                        source=source,
                    )
                secrets = _resolve_locally(
                    spec.secret_refs, secrets_file, file_secrets, environ, source
                )
                components[spec.name] = resolve(spec, secrets, source=source)
                sources[spec.name] = source
            except ComponentError as exc:
                failed.append(_failed(document, source, exc))
            except Exception as exc:  # noqa: BLE001 -- one odd document must not hide the others
                error = ComponentError("(document)", f"cannot be read: {exc!r}", source=source)
                failed.append(_failed(document, source, error))
    if secrets_file is not None and secrets_file.exists():
        digest.update(secrets_file.read_bytes())
    return LoadedComponents(tuple(components.values()), digest.hexdigest(), tuple(failed), sources)


def _failed(document: object, source: str, error: ComponentError) -> FailedComponent:
    """What can be read of a component that failed: its name, type and scopes, if well formed."""
    assert isinstance(document, Mapping)  # is_state_component accepted it
    meta, spec = document.get("metadata"), document.get("spec")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    type_ = spec.get("type") if isinstance(spec, Mapping) else None
    scopes = document.get("scopes") if document.get("kind") == "Component" else None
    if scopes is None and isinstance(spec, Mapping):
        scopes = spec.get("scopes")
    return FailedComponent(
        name if isinstance(name, str) and name else None,
        source,
        error,
        type_ if isinstance(type_, str) else None,
        tuple(s for s in scopes if isinstance(s, str)) if isinstance(scopes, list) else (),
    )


def stat_fingerprint(*paths: Path | None) -> str:
    """Cheap change detection for the reloader: names, sizes, mtimes and inodes, no parsing.

    The kubelet updates a mounted Secret by swapping a symlink (new inode and mtime), and
    editors replace or rewrite files, so any edit changes this; only then is anything re-read.
    """
    parts: list[str] = []
    for path in paths:
        if path is None:
            continue
        entries = sorted(path.iterdir()) if path.is_dir() else [path]
        for entry in entries:
            try:
                info = entry.stat()
            except OSError:
                parts.append(f"{entry}:missing")
                continue
            parts.append(f"{entry}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_wiring_file(path: Path) -> LoadedComponents:
    """The wiring's components. No file in an existing folder is no component yet: the operator
    mounts its Secret `optional` and writes it only once a component exists (then the kubelet
    fills the folder and the reloader picks the file up); a missing folder is a mistake."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        if path.parent.is_dir():
            return LoadedComponents((), f"absent:{path}")
        raise ComponentError("wiring file", f"cannot be read: {exc}", source=str(path)) from exc
    except OSError as exc:
        raise ComponentError("wiring file", f"cannot be read: {exc}", source=str(path)) from exc
    document = wiring.decode(data)
    # The operator checked each component, but a secret's value is only known here (a
    # `redisPort` of `abc` in the Secret): such a component fails alone, as in a folder.
    components: list[ResolvedComponent] = []
    failed: list[FailedComponent] = []
    for component in document.components:
        try:
            read_settings(
                component.type,
                component.metadata,
                component=component.name,
                source=f"{path} (component {component.name})",
                # Every value came from a Secret: a message never quotes one.
                redacted=list(component.metadata),
            )
        except ComponentError as exc:
            failed.append(
                FailedComponent(component.name, str(path), exc, component.type, component.scopes)
            )
        else:
            components.append(component)
    return LoadedComponents(
        tuple(components),
        hashlib.sha256(data).hexdigest(),
        tuple(failed),
        {c.name: str(path) for c in document.components},
    )
