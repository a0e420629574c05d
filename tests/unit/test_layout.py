"""
The repository's shape is part of the architecture (design.md, "Layout"): source folders, not
packages, so `import operator` stays the standard library's; one console script.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_source_folders_are_not_packages() -> None:
    for folder in ("operator", "sidecar", "contract", "cli"):
        assert not (ROOT / folder / "__init__.py").exists(), (
            f"{folder}/__init__.py would shadow or confuse imports"
        )


def test_import_operator_is_the_standard_library() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, statecar_operator; print(operator.__file__); print(operator.itemgetter)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "lib/python3" in result.stdout.splitlines()[0]


def test_one_console_script_with_subcommands() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"statecar": "statecar_cli.main:main"}
    from statecar_cli.main import build_parser

    subcommands = next(
        a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    assert {"sidecar", "run", "operator", "inject", "version"} <= set(subcommands)


def test_the_sidecar_does_not_load_kopf_and_the_operator_does_not_load_fastapi() -> None:
    probe = (
        "import sys, statecar_sidecar.server; assert 'kopf' not in sys.modules;"
        "import statecar_contract.components; print('ok')"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "ok"
    )
    importlib.import_module("statecar_contract.wiring")
