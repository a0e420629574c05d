"""
The official Dapr Go SDK (`github.com/dapr/go-sdk` v1.11.0 from the Go module proxy, pinned by
`go_sdk/go.mod` + `go.sum`) runs the same gRPC scenario as the Python SDK, unchanged, on Redis
and SQLite, with and without an API token. The runner is built once and cached outside the
checkout (`scripts/compat-sdks.sh go`).
"""

from __future__ import annotations

import pytest
from tests.compat.conftest import API_TOKEN, APP_ID, COMPAT_STORES
from tests.compat.grpc_scenario import run_scenario
from tests.compat.sdk_install import installed
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def go_runner() -> str:
    return installed("go")


@pytest.mark.parametrize("store", COMPAT_STORES)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_the_go_sdk_runs_the_whole_scenario(
    go_runner: str,
    compat_sidecar: SidecarProcess,
    open_sidecar: SidecarProcess,
    store: str,
    with_token: bool,
) -> None:
    sidecar = compat_sidecar if with_token else open_sidecar
    run_scenario([go_runner], sidecar, API_TOKEN if with_token else None, store, app_id=APP_ID)
