"""
Where the sidecar's components come from: a wiring file (in a pod) or a folder of YAML files.

In a pod the operator has already resolved every secret into the wiring Secret. Locally
(`statecar sidecar --components-path DIR`, `statecar run`) a `secretKeyRef {name, key}` resolves
from, in order: the secrets file (`--secrets-file`/`STATECAR_SECRETS_FILE`, YAML or JSON
`{secret-name: {key: value}}`), then the environment variable `<NAME>_<KEY>` (upper-cased,
non-alphanumerics as `_`; e.g. `redis-auth`/`password` → `REDIS_AUTH_PASSWORD`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
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

YAML_SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's loader when PyYAML was built with it: the pure-Python one costs ~1 ms per file.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LoadedComponents:
    components: tuple[ResolvedComponent, ...]
    fingerprint: str  # changes whenever the sources change; the reloader compares it


def secret_env_name(ref: SecretKeyRef) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", f"{ref.name}_{ref.key}").upper()


def _load_secrets_file(path: Path) -> dict[str, dict[str, str]]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ComponentError("secrets file", f"cannot read it: {exc}", source=str(path)) from exc
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ComponentError(
            "secrets file", "must map secret names to {key: value} objects", source=str(path)
        )
    return {str(n): {str(k): str(v) for k, v in keys.items()} for n, keys in document.items()}


def _resolve_locally(
    refs: tuple[SecretKeyRef, ...],
    secrets_file: Path | None,
    environ: Mapping[str, str],
    source: str,
) -> dict[SecretKeyRef, str]:
    file_secrets = _load_secrets_file(secrets_file) if secrets_file else {}
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
    digest = hashlib.sha256()
    components: dict[str, ResolvedComponent] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()):
        text = path.read_text(encoding="utf-8")
        digest.update(path.name.encode() + b"\0" + text.encode())
        try:
            documents = list(yaml.load_all(text, Loader=_YAML_LOADER))
        except yaml.YAMLError as exc:
            raise ComponentError("(yaml)", f"is not valid YAML: {exc}", source=str(path)) from exc
        for document in documents:
            if not is_state_component(document):
                continue
            spec = parse_component(document, source=str(path))
            if spec.name in components:
                raise ComponentError(
                    "metadata.name",
                    f"a component named {spec.name!r} is defined twice",
                    source=str(path),
                )
            secrets = _resolve_locally(spec.secret_refs, secrets_file, environ, str(path))
            components[spec.name] = resolve(spec, secrets, source=str(path))
    if secrets_file is not None and secrets_file.exists():
        digest.update(secrets_file.read_bytes())
    return LoadedComponents(tuple(components.values()), digest.hexdigest())


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
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ComponentError("wiring file", f"cannot be read: {exc}", source=str(path)) from exc
    document = wiring.decode(data)
    return LoadedComponents(document.components, hashlib.sha256(data).hexdigest())
