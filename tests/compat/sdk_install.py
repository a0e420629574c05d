"""
Test helper (not a test module): the gRPC compat tier's SDK runners, installed once and cached
outside the checkout by `scripts/compat-sdks.sh` (bootstrap runs it; a test runs it if needed).

Same rule as the rest of the compat tier: in CI (`CI` or `STATECAR_REQUIRE_SERVERS`) an SDK that
cannot be installed FAILS the tier; locally it skips with the reason.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compat-sdks.sh"
INSTALL_TIMEOUT_S = 900


def _require(reason: str) -> NoReturn:
    if os.environ.get("CI") or os.environ.get("STATECAR_REQUIRE_SERVERS"):
        pytest.fail(reason)
    pytest.skip(reason)


@functools.cache
def _install(sdk: str) -> tuple[str | None, str]:
    try:
        done = subprocess.run(
            ["bash", str(SCRIPT), sdk],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    for line in done.stdout.splitlines():
        name, _, path = line.partition("=")
        if name == sdk and done.returncode == 0:
            return path, ""
    return None, f"exit {done.returncode}:\n{done.stderr[-4000:]}"


def installed(sdk: str) -> str:
    """The runner of `sdk` ("python", "go", "java"): a path the tests execute."""
    path, problem = _install(sdk)
    if path is None:
        _require(f"cannot install the {sdk} SDK runner with {SCRIPT.name} {sdk}: {problem}")
    return path
