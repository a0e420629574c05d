"""
Packaging: pyproject.toml is the only place the version is written, and every program reports
that version; the `operator` extra installs exactly the third-party distributions the operator's
code imports (beyond the base dependencies).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import statecar_contract
import statecar_operator
import statecar_sidecar

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = [ROOT / "contract", ROOT / "sidecar", ROOT / "operator", ROOT / "cli"]


def test_every_program_reports_the_version_pyproject_declares() -> None:
    version = PROJECT["version"]
    assert statecar_contract.__version__ == version
    assert statecar_sidecar.__version__ == version
    assert statecar_operator.__version__ == version
    printed = subprocess.run(
        [sys.executable, "-m", "statecar_cli.main", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert printed.stdout.strip() == f"statecar {version}"


def test_no_module_writes_a_version_of_its_own() -> None:
    written = [
        str(path.relative_to(ROOT))
        for folder in PACKAGES
        for path in folder.rglob("*.py")
        if re.search(r"^__version__\s*=\s*['\"]", path.read_text(), re.MULTILINE)
    ]
    assert written == [], "read the version with importlib.metadata (statecar_contract)"


def _distribution(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return _normalized(match.group(0))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_level_names(folder: Path) -> set[str]:
    """Every module name imported anywhere in `folder`, lazily or through importlib too."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value.split(".")[0])
    return names


def test_the_operator_extra_is_what_the_operator_imports() -> None:
    # The operator runs its own code and the contract's (never the sidecar's: import-linter).
    imported = _imported_top_level_names(ROOT / "operator") | _imported_top_level_names(
        ROOT / "contract"
    )
    third_party = {
        name
        for name in imported
        if name not in sys.stdlib_module_names and not name.startswith("statecar_")
    }
    owners = packages_distributions()
    needed = {_normalized(dist) for name in third_party for dist in owners[name]}
    base = {_distribution(r) for r in PROJECT["dependencies"]}
    extra = {_distribution(r) for r in PROJECT["optional-dependencies"]["operator"]}
    assert extra == needed - base
