"""
The official Dapr JavaScript SDK (`@dapr/dapr` 3.18.0, pinned by `js/package-lock.json`) in its
gRPC mode runs the same scenario as the Python, Go and Java SDKs, on Redis and SQLite, with and
without an API token (`js/grpc_scenario.js`). This SDK sends string values as UTF-8 and hands
values back JSON-parsed, so the check compares through `js_view`; its first value is text that
is not JSON, which comes back exactly.
"""

from __future__ import annotations

import pytest
from tests.compat.conftest import API_TOKEN, APP_ID, COMPAT_STORES, JS_DIR
from tests.compat.grpc_scenario import js_view, run_scenario
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.compat

RAW_TEXT = "price: 1.10 <&> ünïcødé\n".encode()


@pytest.mark.parametrize("store", COMPAT_STORES)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_the_js_sdk_in_grpc_mode_runs_the_whole_scenario(
    node: str,
    compat_sidecar: SidecarProcess,
    open_sidecar: SidecarProcess,
    store: str,
    with_token: bool,
) -> None:
    sidecar = compat_sidecar if with_token else open_sidecar
    run_scenario(
        [node, str(JS_DIR / "grpc_scenario.js")],
        sidecar,
        API_TOKEN if with_token else None,
        store,
        app_id=APP_ID,
        raw=RAW_TEXT,
        view=js_view,
    )
