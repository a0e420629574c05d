"""
What a test does when a tool or server it needs is missing: skip with the reason, or fail.

`make test` (and CI) sets `STATECAR_REQUIRE_SERVERS=1`: there a missing `redis-server`,
PostgreSQL, `helm`, `openssl` or `node` is a failure, never a silent skip. A developer's plain
`pytest` run skips those tests and prints why (`-ra`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE_ENV = "STATECAR_REQUIRE_SERVERS"


def servers_required() -> bool:
    """Whether a missing tool fails the run (`STATECAR_REQUIRE_SERVERS` or `CI` set, not 0)."""
    return any(os.environ.get(name, "") not in ("", "0") for name in (REQUIRE_ENV, "CI"))


def unavailable(reason: str) -> NoReturn:
    """Fail the calling test (or fixture) when servers are required, skip it otherwise."""
    if servers_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV} is set: nothing may be skipped)", pytrace=False)
    pytest.skip(reason)


def require(
    binary: str, *, env: str | None = None, also_in: Iterable[Path] = (), hint: str = ""
) -> str:
    """The path of `binary`: from the variable `env` if set, else from `also_in`, else PATH.

    When none is found the calling test is skipped, or failed (see `unavailable`); `hint` says
    how to install it.
    """
    if env and os.environ.get(env):
        return os.environ[env]
    for directory in also_in:
        candidate = directory / binary
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(binary)
    if found is None:
        unavailable(f"{binary} not found" + (f" ({hint})" if hint else ""))
    return found
