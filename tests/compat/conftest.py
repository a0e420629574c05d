"""
The compat tier's world: the official Dapr JavaScript SDK (`@dapr/dapr`, pinned in
`tests/compat/js/package.json` + `package-lock.json`) installed with `npm ci`, and one real
`statecar sidecar` with an API token serving a Redis store (on the session's real Redis primary,
shared with the conformance tier's fixture) and a SQLite store.

Tools are never silently missing in CI: without `node`/`npm` (or if `npm ci` fails) the tier
FAILS when `CI` (or `STATECAR_REQUIRE_SERVERS`) is set, and only skips, with the reason, locally.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.conformance.conftest import redis_primary  # noqa: F401  (a fixture, used by name)
from tests.support import redis_server
from tests.support.require import require
from tests.support.sidecar import SidecarProcess

JS_DIR = Path(__file__).parent / "js"
SDK_PACKAGE = "@dapr/dapr"
SDK_VERSION = "3.18.0"
APP_ID = "jscompat"
API_TOKEN = "compat-token-0123456789"  # a throwaway token for a loopback sidecar
COMPAT_STORES = ("redis", "sqlite")
NPM_TIMEOUT_S = 600


def _installed_sdk_version() -> str | None:
    manifest = JS_DIR / "node_modules" / SDK_PACKAGE / "package.json"
    if not manifest.is_file():
        return None
    return str(json.loads(manifest.read_text())["version"])


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` binary, with the pinned SDK installed next to scenario.js (`npm ci` if needed)."""
    node_bin = require("node", hint="the JS SDK compat tier needs Node.js 20 and npm")
    if _installed_sdk_version() != SDK_VERSION:
        npm = require("npm", hint=f"it installs {SDK_PACKAGE}@{SDK_VERSION}")
        try:
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=JS_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`npm ci` in {JS_DIR} did not finish within {NPM_TIMEOUT_S} s")
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {JS_DIR} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        installed = _installed_sdk_version()
        if installed != SDK_VERSION:
            pytest.fail(f"`npm ci` installed {SDK_PACKAGE} {installed}, expected {SDK_VERSION}")
    return node_bin


def _component(name: str, type_: str, metadata: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": name},
        "spec": {"type": type_, "metadata": [{"name": k, "value": v} for k, v in metadata.items()]},
    }


@pytest.fixture(scope="session")
def compat_sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    redis_primary: redis_server.RedisProcess,  # noqa: F811
) -> Iterator[SidecarProcess]:
    """A sidecar whose token comes from DAPR_API_TOKEN, the variable the SDK reads too."""
    folder = tmp_path_factory.mktemp("compat-components")
    documents = [
        _component("redis", "state.redis", {"redisHost": redis_primary.address}),
        _component("sqlite", "state.sqlite", {"connectionString": str(folder / "state.db")}),
    ]
    (folder / "components.yaml").write_text(yaml.safe_dump_all(documents))
    process = SidecarProcess(
        app_id=APP_ID, components_path=folder, env={"DAPR_API_TOKEN": API_TOKEN}
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def open_sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    redis_primary: redis_server.RedisProcess,  # noqa: F811
) -> Iterator[SidecarProcess]:
    """The compat sidecar's stores without an API token (the gRPC SDK tiers run on both)."""
    folder = tmp_path_factory.mktemp("compat-open-components")
    documents = [
        _component("redis", "state.redis", {"redisHost": redis_primary.address}),
        _component("sqlite", "state.sqlite", {"connectionString": str(folder / "state.db")}),
    ]
    (folder / "components.yaml").write_text(yaml.safe_dump_all(documents))
    # recordErrorCodes on, as a daprd Configuration would set it: the gRPC tier counts errors.
    process = SidecarProcess(
        app_id=APP_ID, components_path=folder, env={"STATECAR_RECORD_ERROR_CODES": "true"}
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def compat_api(compat_sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    """A raw HTTP client that sends the right token, to cross-check what the SDK did."""
    with httpx.Client(
        base_url=compat_sidecar.url, timeout=10, headers={"dapr-api-token": API_TOKEN}
    ) as client:
        yield client
