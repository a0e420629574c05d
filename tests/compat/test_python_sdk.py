"""
The official Dapr Python SDK (`dapr` 1.19.0, `DaprClient`, which does state only over gRPC)
works against statecar unchanged, on Redis and SQLite, with and without an API token.

`python_sdk/scenario.py` runs in the SDK's own venv (pinned in `python_sdk/requirements.txt`)
with nothing but DAPR_GRPC_PORT and DAPR_HTTP_PORT set (plus DAPR_API_TOKEN for the sidecar that
has one), as an app started by `statecar run` or the injector would be; `grpc_scenario.check`
asserts every step of issue 9's Proof list. Raw HTTP then confirms what the SDK stored.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from tests.compat.conftest import API_TOKEN, APP_ID, COMPAT_STORES
from tests.compat.grpc_scenario import Report, doc, run_scenario, sdk_env
from tests.compat.sdk_install import installed
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.compat

SCENARIO = Path(__file__).parent / "python_sdk" / "scenario.py"
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def python_sdk() -> str:
    return installed("python")


def run(python: str, sidecar: SidecarProcess, token: str | None, store: str) -> Report:
    return run_scenario([python, str(SCENARIO)], sidecar, token, store, app_id=APP_ID)


@pytest.mark.parametrize("store", COMPAT_STORES)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_the_python_sdk_runs_the_whole_scenario(
    python_sdk: str,
    compat_sidecar: SidecarProcess,
    open_sidecar: SidecarProcess,
    store: str,
    with_token: bool,
) -> None:
    sidecar = compat_sidecar if with_token else open_sidecar
    report = run(python_sdk, sidecar, API_TOKEN if with_token else None, store)
    # What the SDK stored is what HTTP reads, byte for byte, with the same ETag.
    headers = {"dapr-api-token": API_TOKEN} if with_token else {}
    answer = httpx.get(
        f"{sidecar.url}/v1.0/state/{store}/{report.run}-t1", headers=headers, timeout=10
    )
    assert answer.status_code == 200
    assert answer.content == doc(report.run, "blue", 10)
    last = report.ok("afterStaleTransaction")[0]
    assert answer.headers["etag"] == last["etag"]


def test_a_wrong_or_missing_token_is_unauthenticated_and_writes_nothing(
    python_sdk: str, compat_sidecar: SidecarProcess, compat_api: httpx.Client
) -> None:
    probe = (
        "import sys\n"
        "from dapr.clients import DaprClient\n"
        "from dapr.clients.exceptions import DaprGrpcError\n"
        "with DaprClient() as c:\n"
        "    try:\n"
        "        c.save_state('sqlite', sys.argv[1], b'x')\n"
        "    except DaprGrpcError as e:\n"
        "        print(e.code().name, e.details())\n"
    )
    for token in ("wrong-token", None):
        key = f"py-unauth-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            [python_sdk, "-c", probe, key],
            env=sdk_env(compat_sidecar, token),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.stdout.startswith("UNAUTHENTICATED Unauthorized"), done.stdout + done.stderr
        assert compat_api.get(f"/v1.0/state/sqlite/{key}").status_code == 204


def test_grpc_calls_are_counted_under_daprds_metric_names(
    python_sdk: str, open_sidecar: SidecarProcess
) -> None:
    run(python_sdk, open_sidecar, None, "sqlite")
    exposition = httpx.get(f"{open_sidecar.ops_url}/metrics", timeout=10).text
    assert (
        'dapr_grpc_io_server_completed_rpcs{app_id="jscompat",'
        'grpc_server_method="/dapr.proto.runtime.v1.Dapr/GetState",grpc_server_status="OK"}'
    ) in exposition
    assert 'grpc_server_status="ABORTED"' in exposition
    assert "dapr_grpc_io_server_server_latency_bucket" in exposition
