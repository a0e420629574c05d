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
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
# PyYAML is imported by the first YAML file read, not at start: ~10 ms of a cold start that a
# pod, whose components come in the operator's JSON wiring file (wiring.py, orjson), never needs.
DAPR_API_VERSION = "dapr.io/v1alpha1"
#: daprd's local secret stores: `auth.secretStore` names one of these to resolve a secretKeyRef.
LOCAL_SECRET_STORES = ("secretstores.local.file", "secretstores.local.env")


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
    #: A Dapr Component without `spec.ignoreErrors: true`: daprd refuses to start with it.
    fatal: bool = False

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
    """What one read of the components folder found: the state stores, and what failed."""

    components: tuple[ResolvedComponent, ...]
    fingerprint: str  # changes whenever the sources change; the reloader compares it
    failed: tuple[FailedComponent, ...] = ()
    #: The file each component came from, by component name.
    sources: Mapping[str, str] = field(default_factory=dict)
    #: Dapr Components of other types (`pubsub.redis`, `secretstores.local.file`...): name, type.
    skipped: tuple[tuple[str, str], ...] = ()
    #: State components that failed with `spec.ignoreErrors: true`: skipped, with a warning.
    ignored: tuple[FailedComponent, ...] = ()
    #: Files read besides the folders (local.file secret stores'): the reloader watches them too.
    watched: tuple[Path, ...] = ()


def secret_env_name(ref: SecretKeyRef) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", f"{ref.name}_{ref.key}").upper()


def _load_secrets_file(path: Path) -> dict[str, dict[str, str]]:
    import yaml  # on first use (YAML_SUFFIXES)

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


def _flatten(value: object, prefix: str, separator: str, into: dict[str, str]) -> None:
    """components-contrib's local file store: nested keys joined by `nestedSeparator`."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}{separator}{key}" if prefix else str(key), separator, into)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}{separator}{index}" if prefix else str(index), separator, into)
    elif isinstance(value, bool):
        into[prefix] = "true" if value else "false"
    elif value is None:
        into[prefix] = ""
    else:
        into[prefix] = str(value)


@dataclass(frozen=True)
class LocalSecretStore:
    """A `secretstores.local.file` or `secretstores.local.env` component, as daprd reads it.

    local.file (`secretsFile`, `nestedSeparator` default ":", `multiValued` default false): with
    multiValued false every leaf of the file is one secret, named by its path joined with the
    separator, whose only key is its name; with multiValued true each top-level key is a secret
    and its nested leaves are that secret's keys. local.env: the secret `NAME` is the environment
    variable `<prefix>NAME`, with one key, its name. A secretKeyRef without `key` uses its name.
    """

    name: str
    type: str
    source: str
    secrets: Mapping[str, Mapping[str, str]] | None = None  # local.file
    prefix: str = ""  # local.env
    error: ComponentError | None = None
    path: str | None = None  # local.file's secretsFile

    def get(self, ref: SecretKeyRef, environ: Mapping[str, str]) -> str | None:
        if self.error is not None:
            raise self.error
        if self.type == "secretstores.local.env":
            value = environ.get(self.prefix + ref.name)
            return value if value is not None and ref.key in ("", ref.name) else None
        return (self.secrets or {}).get(ref.name, {}).get(ref.key or ref.name)


def _metadata_values(spec: Mapping[str, object]) -> dict[str, str]:
    items = spec.get("metadata")
    values: dict[str, str] = {}
    if isinstance(items, list):
        for item in items:
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                raw = item.get("value")
                values[item["name"]] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return values


def _secret_store(document: Mapping[str, object], source: str) -> LocalSecretStore:
    meta, spec = document.get("metadata"), document.get("spec")
    assert isinstance(meta, Mapping)
    assert isinstance(spec, Mapping)
    name, type_ = str(meta.get("name")), str(spec.get("type"))
    values = _metadata_values(spec)
    if type_ == "secretstores.local.env":
        return LocalSecretStore(name, type_, source, prefix=values.get("prefix", ""))
    path = values.get("secretsFile")
    if not path:
        error = ComponentError(
            "spec.metadata.secretsFile", f"secret store {name!r} needs it", source=source
        )
        return LocalSecretStore(name, type_, source, error=error)
    if not Path(path).exists():
        error = ComponentError(
            "spec.metadata.secretsFile",
            f"secret store {name!r}: {path} does not exist",
            source=source,
        )
        return LocalSecretStore(name, type_, source, error=error, path=path)
    separator = values.get("nestedSeparator") or ":"
    multi = values.get("multiValued", "false").strip().lower() == "true"
    import yaml  # on first use (YAML_SUFFIXES)

    try:
        document_ = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        error = ComponentError(
            "spec.metadata.secretsFile",
            f"secret store {name!r} cannot read {path}: {exc}",
            source=source,
        )
        return LocalSecretStore(name, type_, source, error=error, path=path)
    if not isinstance(document_, Mapping):
        error = ComponentError(
            "spec.metadata.secretsFile",
            f"secret store {name!r}: {path} must hold a JSON object",
            source=source,
        )
        return LocalSecretStore(name, type_, source, error=error, path=path)
    secrets: dict[str, dict[str, str]] = {}
    if multi:
        for key, value in document_.items():
            data: dict[str, str] = {}
            if isinstance(value, Mapping | list):
                _flatten(value, "", separator, data)
            else:
                _flatten(value, str(key), separator, data)
            secrets[str(key)] = data
    else:
        flat: dict[str, str] = {}
        _flatten(document_, "", separator, flat)
        secrets = {key: {key: value} for key, value in flat.items()}
    return LocalSecretStore(name, type_, source, secrets=secrets, path=path)


def _resolve_from_store(
    document: Mapping[str, object],
    refs: tuple[SecretKeyRef, ...],
    stores: Mapping[str, LocalSecretStore],
    environ: Mapping[str, str],
    source: str,
) -> dict[SecretKeyRef, str] | None:
    """daprd's `auth.secretStore`; None when the component names none (then the local rules)."""
    auth = document.get("auth")
    store_name = auth.get("secretStore") if isinstance(auth, Mapping) else None
    if not store_name:
        return None
    store = stores.get(str(store_name))
    if store is None:
        raise ComponentError(
            "auth.secretStore",
            f"no secret store named {store_name!r} among the resources; statecar reads"
            f" {' and '.join(LOCAL_SECRET_STORES)} components",
            source=source,
        )
    values: dict[SecretKeyRef, str] = {}
    for ref in refs:
        value = store.get(ref, environ)
        if value is None:
            raise ComponentError(
                "secretKeyRef",
                f"secret store {store.name!r} ({store.type}) has no secret {ref.name!r}"
                f" with key {ref.key or ref.name!r}",
                source=source,
            )
        values[ref] = value
    return values


def _ignore_errors(document: Mapping[str, object]) -> bool:
    spec = document.get("spec")
    raw = spec.get("ignoreErrors") if isinstance(spec, Mapping) else None
    return raw is True or (isinstance(raw, str) and raw.strip().lower() == "true")


def _is_dapr_component(document: object) -> bool:
    return (
        isinstance(document, Mapping)
        and document.get("kind") == "Component"
        and document.get("apiVersion") == DAPR_API_VERSION
    )


def _component_files(folders: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise ComponentError(
                "components path", "is not a folder; create it or fix the path", source=str(folder)
            )
        files.extend(
            sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
        )
    return files


def load_folder(
    folder: Path, *, secrets_file: Path | None = None, environ: Mapping[str, str] | None = None
) -> LoadedComponents:
    """Every state component in `folder`'s YAML files (other kinds of document are skipped)."""
    return load_folders([folder], secrets_file=secrets_file, environ=environ)


def load_folders(
    folders: Iterable[Path],
    *,
    secrets_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedComponents:
    """Every state component in the folders' YAML files, as daprd reads `--resources-path`.

    A file may hold several documents, of any kind and type: Dapr Components that are not state
    stores are skipped (`skipped`; the reloader logs them), local secret stores resolve the
    secretKeyRefs of components that name them in `auth.secretStore`, and a state component
    that fails with `spec.ignoreErrors: true` is skipped (`ignored`; the reloader warns).
    """
    environ = environ or {}
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
    ignored: list[FailedComponent] = []
    skipped: list[tuple[str, str]] = []
    parsed: list[tuple[str, list[object]]] = []
    for path in _component_files(folders):
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            digest.update(path.name.encode() + b"\0unreadable")
            error = ComponentError("(file)", f"cannot be read: {exc}", source=source)
            failed.append(FailedComponent(None, source, error))
            continue
        digest.update(source.encode() + b"\0" + text.encode())
        import yaml  # on first use (YAML_SUFFIXES)

        # libyaml's loader when PyYAML was built with it: the pure-Python one costs ~1 ms a file.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            parsed.append((source, list(yaml.load_all(text, Loader=loader))))
        except (yaml.YAMLError, RecursionError) as exc:
            error = ComponentError("(yaml)", f"is not valid YAML: {exc}", source=source)
            failed.append(FailedComponent(None, source, error))
    stores: dict[str, LocalSecretStore] = {}
    watched: list[Path] = []
    for source, documents in parsed:
        for document in documents:
            if not _is_dapr_component(document) or is_state_component(document):
                continue
            assert isinstance(document, Mapping)
            meta, spec = document.get("metadata"), document.get("spec")
            name = meta.get("name") if isinstance(meta, Mapping) else None
            type_ = spec.get("type") if isinstance(spec, Mapping) else None
            skipped.append((str(name), str(type_)))
            if type_ in LOCAL_SECRET_STORES and isinstance(name, str):
                store = stores[name] = _secret_store(document, source)
                if store.path is not None:
                    watched.append(Path(store.path))
                if store.secrets is not None:
                    digest.update(json.dumps(store.secrets, sort_keys=True).encode())
    for source, documents in parsed:
        for document in documents:
            if not is_state_component(document):
                continue
            assert isinstance(document, Mapping)
            try:
                spec = parse_component(document, source=source)
                if spec.name in components:
                    raise ComponentError(
                        "metadata.name",
                        f"a component named {spec.name!r} is defined twice"
                        f" (first in {sources[spec.name]}); rename or remove one",
                        source=source,
                    )
                secrets = _resolve_from_store(document, spec.secret_refs, stores, environ, source)
                if secrets is None:
                    secrets = _resolve_locally(
                        spec.secret_refs, secrets_file, file_secrets, environ, source
                    )
                components[spec.name] = resolve(spec, secrets, source=source)
                sources[spec.name] = source
            except Exception as exc:  # noqa: BLE001 -- one odd document must not hide the others
                error = (
                    exc
                    if isinstance(exc, ComponentError)
                    else ComponentError("(document)", f"cannot be read: {exc!r}", source=source)
                )
                failure = _failed(document, source, error)
                (ignored if _ignore_errors(document) else failed).append(failure)
    if secrets_file is not None and secrets_file.exists():
        digest.update(secrets_file.read_bytes())
    return LoadedComponents(
        tuple(components.values()),
        digest.hexdigest(),
        tuple(failed),
        sources,
        tuple(skipped),
        tuple(ignored),
        tuple(watched),
    )


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
        fatal=_is_dapr_component(document) and not _ignore_errors(document),
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
        if not path.exists():
            parts.append(f"{path}:missing")
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


def _read_wiring(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        if path.parent.is_dir():
            return None
        raise ComponentError("wiring file", f"cannot be read: {exc}", source=str(path)) from exc
    except OSError as exc:
        raise ComponentError("wiring file", f"cannot be read: {exc}", source=str(path)) from exc


def wiring_files(folder: Path) -> list[Path]:
    """The wiring files of a mounted folder (the kubelet's `..data` links and dirs excluded)."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))


def load_wiring_file(path: Path) -> LoadedComponents:
    """
    The wiring's components, from one file or from a folder of them.

    A folder is what the injected sidecar mounts: its namespace's shared file and its app's own
    (`statecar_contract.wiring`), merged. No file in an existing folder is no component yet: the
    operator mounts its Secrets `optional` and writes them only once a component exists (then
    the kubelet fills the folder and the reloader picks the files up); a missing folder is a
    mistake.
    """
    # Imported with the first wiring file: ~1 ms a sidecar reading a components folder need not pay.
    from statecar_contract import wiring

    files = wiring_files(path) if path.is_dir() else [path]
    raw = [(file, _read_wiring(file)) for file in files]
    present = [(file, data) for file, data in raw if data is not None]
    if not present:
        return LoadedComponents((), f"absent:{path}")
    decoded = [(file, wiring.decode(data)) for file, data in present]
    document = wiring.merge(d for _, d in decoded)
    origin = {c.name: str(file) for file, d in reversed(decoded) for c in d.components}
    digest = hashlib.sha256(b"\0".join(data for _, data in present)).hexdigest()
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
                source=f"{origin.get(component.name, path)} (component {component.name})",
                # Every value came from a Secret: a message never quotes one.
                redacted=list(component.metadata),
            )
            component.encryption(source=f"{path} (component {component.name})")
        except ComponentError as exc:
            failed.append(
                FailedComponent(
                    component.name,
                    origin.get(component.name, str(path)),
                    exc,
                    component.type,
                    component.scopes,
                )
            )
        else:
            components.append(component)
    return LoadedComponents(
        tuple(components),
        digest,
        tuple(failed),
        {c.name: origin.get(c.name, str(path)) for c in document.components},
    )
