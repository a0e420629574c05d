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
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

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


#: Deeper than any Kubernetes object nests (a CRD's schema reaches ~30): a deeper document is
#: hostile or broken, and would exhaust the stack of the YAML reader, the injector or the printer.
MAX_DEPTH: Final = 100


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
    if not isinstance(metadata, Mapping):
        metadata = {}  # plan_injection names the problem, for the kinds that have pods
    name = str(metadata.get("name") or metadata.get("generateName") or "?")
    ns = namespace or str(metadata.get("namespace") or "default")
    if kind == "List":
        items = document.get("items") or []
        if not isinstance(items, list):
            raise ManifestError(f"List/{name}: items must be a list of objects")
        for item in items:
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
    """
    The non-empty YAML documents of file `name` (`-`: standard input).

    Whatever is wrong with the file is a one-line `ManifestError`: unreadable, not UTF-8, not
    YAML (with the line and column), nested deeper than `MAX_DEPTH` or holding itself.
    """
    label = "standard input" if name == "-" else name
    try:
        if name == "-":
            # Bytes, so bad UTF-8 is our error; a text stream (a test's StringIO) is taken as is.
            stream = getattr(sys.stdin, "buffer", None)
            data = stream.read() if stream is not None else sys.stdin.read().encode()
        else:
            data = Path(name).read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {label}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{label} is not UTF-8 text (byte {exc.start})") from None
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError(f"{label} is not YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ManifestError(f"{label} nests deeper than {MAX_DEPTH} levels") from None
    for index, document in enumerate(documents, 1):
        problem = _nesting_problem(document)
        if problem is not None:
            raise ManifestError(f"{label}: document {index} {problem}")
    return documents


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The YAML error on one line: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def _nesting_problem(document: Any) -> str | None:
    """
    Why `document` is too deep to handle (None if it is not).

    YAML aliases make a document a graph: each node's depth is computed once (a "billion laughs"
    document costs its size, not its expansion), and a node inside itself is a cycle.
    """
    depths: dict[int, int] = {}
    open_nodes: set[int] = set()

    def depth(node: Any, level: int) -> int:
        if not isinstance(node, (Mapping, list)):
            return 0
        key = id(node)
        if key in depths:
            return depths[key]
        if key in open_nodes:
            raise ManifestError("")  # a cycle: caught below
        if level > MAX_DEPTH:
            raise RecursionError
        open_nodes.add(key)
        children = node.values() if isinstance(node, Mapping) else node
        deepest = 1 + max((depth(child, level + 1) for child in children), default=0)
        open_nodes.discard(key)
        depths[key] = deepest
        return deepest

    try:
        deepest = depth(document, 1)
    except RecursionError:
        return f"nests deeper than {MAX_DEPTH} levels"
    except ManifestError:
        return "contains itself (a YAML alias to one of its own parents)"
    return f"nests deeper than {MAX_DEPTH} levels" if deepest > MAX_DEPTH else None


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
