"""
The webhook's injection applied offline to manifests (like `istioctl kube-inject`); the
`statecar inject` command (`statecar_cli.inject_cli`) reads its flags and prints the result.

Reads multi-document YAML (files or `-` for stdin) and injects every pod and pod template that
asks for it with the same `plan_injection`/`apply_injection` the webhook runs. Components come
from component files and folders and from StateStoreComponents (or Dapr state Components) in
the manifests themselves. Workload templates are injected too (the webhook only sees their
pods), with the workload's name as the default app id. Why a pod was skipped comes back as a
note; a bad annotation is an error (`ManifestError` lists every one).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from statecar_contract.components import (
    ComponentError,
    ComponentSpec,
    is_state_component,
    parse_component,
)
from statecar_operator.injection.patching import apply_injection
from statecar_operator.injection.plan import InjectionError, Skip, plan_injection
from statecar_operator.settings import InjectorSettings

#: Where each workload kind keeps its pod template.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class ManifestError(Exception):
    """A manifest or component file cannot be read, or pods in it cannot be injected."""


def inject_documents(
    documents: Sequence[Any],
    *,
    components: Sequence[ComponentSpec],
    settings: InjectorSettings,
    namespace: str | None = None,
) -> tuple[list[Any], list[str]]:
    """The documents with every opted-in pod injected, and notes on skips and warnings."""
    notes: list[str] = []
    errors: list[str] = []
    for document in documents:
        for label, pod, hint, ns in _pods(document, namespace):
            try:
                decision = plan_injection(
                    pod,
                    namespace=ns,
                    components_in_namespace=components,
                    settings=settings,
                    owner_name_hint=hint,
                )
            except InjectionError as exc:
                errors.append(f"{label}: {exc}")
                continue
            if isinstance(decision, Skip):
                if decision.notify:
                    notes.append(f"{label}: not injected ({decision.reason}): {decision.message}")
                continue
            notes.extend(f"{label}: warning: {w}" for w in decision.warnings)
            apply_injection(pod, decision)
    if errors:
        raise ManifestError("\n".join(errors))
    return list(documents), notes


def _pods(
    document: Any, namespace: str | None
) -> Iterator[tuple[str, MutableMapping[str, Any], str | None, str]]:
    """(label, pod or template, owner name hint, namespace) for each pod inside `document`."""
    if not isinstance(document, MutableMapping):
        return
    kind = document.get("kind")
    metadata = document.get("metadata") or {}
    name = str(metadata.get("name") or metadata.get("generateName") or "?")
    ns = namespace or str(metadata.get("namespace") or "default")
    if kind == "List":
        for item in document.get("items") or []:
            yield from _pods(item, namespace)
        return
    if kind == "Pod":
        yield f"Pod/{name}", document, None, ns
        return
    path = TEMPLATE_PATHS.get(str(kind))
    if path is None:
        return
    template: Any = document
    for key in path:
        template = template.get(key) if isinstance(template, MutableMapping) else None
    if isinstance(template, MutableMapping):
        yield f"{kind}/{name}", template, name if name != "?" else None, ns


def load_documents(name: str) -> list[Any]:
    """The non-empty YAML documents of file `name` (`-`: standard input)."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{name} is not YAML: {exc}") from None


def load_components(
    directories: Sequence[Path], files: Sequence[Path], documents: Sequence[Any]
) -> list[ComponentSpec]:
    """The state components of `files`, of the folders' YAML/JSON files, and of `documents`."""
    paths = [*files]
    for directory in directories:
        if not directory.is_dir():
            raise ManifestError(f"--components-dir {directory}: not a directory")
        paths.extend(
            sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml", ".json"})
        )
    found: list[tuple[str, Any]] = [(str(p), d) for p in paths for d in load_documents(str(p))]
    found.extend(("manifests", d) for d in documents)
    specs: list[ComponentSpec] = []
    for source, document in found:
        if not is_state_component(document):
            continue
        try:
            specs.append(parse_component(document, source=source))
        except ComponentError as exc:
            raise ManifestError(str(exc)) from None
    return specs
