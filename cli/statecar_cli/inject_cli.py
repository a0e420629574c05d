"""
`statecar inject -f manifests.yaml`: print manifests with the sidecar injected, offline.

The flags only; the injection is the webhook's own (`statecar_operator.injection.offline`).
Why a pod was skipped goes to stderr; a bad annotation or a malformed manifest is an error of one
line per object (exit 1, nothing printed), never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from statecar_operator.injection.offline import (
    ManifestError,
    inject_documents,
    load_components,
    load_documents,
)
from statecar_operator.injection.plan import InjectionError
from statecar_operator.settings import InjectorSettings, SettingsError


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--dapr-annotations",
        action="store_true",
        help="honour dapr.io/* annotations as the operator does with "
        "STATECAR_OPERATOR_SIDECAR_DAPR_ANNOTATIONS (offline, Dapr's injector counts as absent)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    """Entry point of `statecar inject`; returns the exit code."""
    args = build_parser().parse_args(list(argv))
    try:
        settings = InjectorSettings.from_env()
        if args.image:
            settings = dataclasses.replace(settings, image=args.image)
        if args.dapr_annotations:
            settings = dataclasses.replace(settings, dapr_annotations=True)
        documents = [d for name in args.filename for d in load_documents(name)]
        components = load_components(args.components_dir, args.component_file, documents)
        injected, notes = inject_documents(
            documents, components=components, settings=settings, namespace=args.namespace
        )
    except (ManifestError, SettingsError, InjectionError) as exc:
        print(f"statecar inject: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  # hostile input gets one line, never a traceback
        print(
            f"statecar inject: cannot inject these manifests ({type(exc).__name__}: {exc}); "
            "if they are valid Kubernetes objects, please report it",
            file=sys.stderr,
        )
        return 1
    for note in notes:
        print(f"statecar inject: {note}", file=sys.stderr)
    text = yaml.safe_dump_all(injected, sort_keys=False)
    try:
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
    except OSError as exc:
        print(f"statecar inject: cannot write {args.output or 'stdout'}: {exc}", file=sys.stderr)
        return 1
    return 0
