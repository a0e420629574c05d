"""
The official Dapr Java SDK (`io.dapr:dapr-sdk` 1.17.1 from Maven Central, pinned in
`java_sdk/pom.xml`) runs the same gRPC scenario as the Python and Go SDKs, unchanged, on Redis
and SQLite, with and without an API token. One difference, the SDK's: it tags every value
`contentType: application/json`, so its first value is JSON (still kept byte for byte). Built once outside the checkout (`~/.m2`, and
`scripts/compat-sdks.sh java` caches the compiled runner).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tests.compat.conftest import API_TOKEN, APP_ID, COMPAT_STORES
from tests.compat.grpc_scenario import JSON_RAW, run_scenario
from tests.compat.sdk_install import _require, installed
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def java_command() -> list[str]:
    java = shutil.which("java")
    if java is None:
        _require("java is not installed: the Java SDK compat tier needs a JDK 17")
    folder = Path(installed("java"))
    classpath = f"{folder / 'target' / 'classes'}:{(folder / 'classpath.txt').read_text().strip()}"
    return [java, "-cp", classpath, "statecar.Scenario"]


@pytest.mark.parametrize("store", COMPAT_STORES)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_the_java_sdk_runs_the_whole_scenario(
    java_command: list[str],
    compat_sidecar: SidecarProcess,
    open_sidecar: SidecarProcess,
    store: str,
    with_token: bool,
) -> None:
    sidecar = compat_sidecar if with_token else open_sidecar
    run_scenario(
        java_command,
        sidecar,
        API_TOKEN if with_token else None,
        store,
        app_id=APP_ID,
        raw=JSON_RAW,
    )
