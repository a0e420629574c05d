"""
`statecar inject -f manifests.yaml`: the webhook's injection, offline (like `istioctl kube-inject`).

Reads multi-document YAML (files or `-` for stdin), injects every pod and pod template that asks
for it with the same `plan_injection`/`apply_injection` the webhook runs, and prints the result.
Components come from `--components-dir`/`--component-file` and from StateStoreComponents (or
Dapr state Components) in the manifests themselves. Workload templates are injected too (the
webhook only sees their pods), with the workload's name as the default app id. Why a pod was
skipped goes to stderr; a bad annotation is an error (exit 1, nothing printed).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from statecar_operator.injection import InjectionError, Skip, apply_injection, plan_injection
from statecar_operator.settings import InjectorSettings, SettingsError

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


class CliError(Exception):
    pass


def main(argv: Sequence[str]) -> int:
    """Entry point of `statecar inject`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="statecar inject",
        description="Print manifests with the statecar sidecar injected, offline.",
    )
    parser.add_argument(
        "-f", "--filename", action="append", required=True, help="manifest file, or - for stdin"
    )
    parser.add_argument(
        "-n", "--namespace", help="namespace of objects that name none (default: default)"
    )
    parser.add_argument("--components-dir", action="append", default=[], type=Path)
    parser.add_argument("--component-file", action="append", default=[], type=Path)
    parser.add_argument("--image", help="sidecar image (default: STATECAR_OPERATOR_SIDECAR_IMAGE)")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(list(argv))
    try:
        settings = InjectorSettings.from_env()
        if args.image:
            settings = dataclasses.replace(settings, image=args.image)
        documents = [d for name in args.filename for d in _load(name)]
        components = _components(args.components_dir, args.component_file, documents)
        injected, notes = inject_documents(
            documents, components=components, settings=settings, namespace=args.namespace
        )
    except (CliError, SettingsError, InjectionError) as exc:
        print(f"statecar inject: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"statecar inject: {note}", file=sys.stderr)
    text = yaml.safe_dump_all(injected, sort_keys=False)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


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
        raise CliError("\n".join(errors))
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


def _load(name: str) -> list[Any]:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{name} is not YAML: {exc}") from None


def _components(
    directories: Sequence[Path], files: Sequence[Path], documents: Sequence[Any]
) -> list[ComponentSpec]:
    paths = [*files]
    for directory in directories:
        if not directory.is_dir():
            raise CliError(f"--components-dir {directory}: not a directory")
        paths.extend(
            sorted(p for p in directory.iterdir() if p.suffix in {".yaml", ".yml", ".json"})
        )
    found: list[tuple[str, Any]] = [(str(p), d) for p in paths for d in _load(str(p))]
    found.extend(("manifests", d) for d in documents)
    specs: list[ComponentSpec] = []
    for source, document in found:
        if not is_state_component(document):
            continue
        try:
            specs.append(parse_component(document, source=source))
        except ComponentError as exc:
            raise CliError(str(exc)) from None
    return specs
