"""
Issue 14's Proof, against `statecar daprd` started with exactly the argv and env `dapr run` gives
daprd (tests/support/dapr_run.py), over the `~/.dapr/config.yaml` a user turns error codes on in:

readiness on /v1.0/healthz; daprd's error bodies and gRPC details for a missing store, an illegal
key and malformed JSON (dapr pkg/api/errors/state.go, pkg/messages/errorcodes); the error-code
metric; TTL expiry with `ttlExpireTime` in RFC 3339 on both transports; a hot reload of the
resources folder; exit 0 on SIGINT. The fuzzing (test_fuzz.py), the bounded shutdown
(test_shutdown.py) and the memory bound (test_memory.py) have their own modules.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from tests.support import processes
from tests.support.dapr_run import DEFAULT_CONFIG, Daprd, dapr_home, dapr_run_argv, free_ports

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

APP_ID = "checkout"
#: dapr init's configuration with `spec.metrics.recordErrorCodes` turned on by the user.
CONFIG = DEFAULT_CONFIG + "  metrics:\n    enabled: true\n    recordErrorCodes: true\n"
COMPONENT = (
    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
    "spec:\n  type: state.in-memory\n  version: v1\n"
)
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RESOURCE_INFO = "type.googleapis.com/google.rpc.ResourceInfo"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


@dataclass
class Dropin:
    daprd: Daprd
    ports: dict[str, int]
    resources: Path
    http: httpx.Client
    stub: dapr_pb2_grpc.DaprStub


@pytest.fixture(scope="module")
def dropin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dropin]:
    home = dapr_home(tmp_path_factory.mktemp("dapr-run"), CONFIG)
    resources = home / "components"
    resources.mkdir()
    (resources / "statestore.yaml").write_text(COMPONENT.format(name="statestore"))
    ports = free_ports()
    daprd = Daprd(
        home, dapr_run_argv(home, resources, APP_ID, ports), {"DAPR_HOST_IP": "127.0.0.1"}
    )
    url = f"http://127.0.0.1:{ports['http']}"
    try:
        daprd.wait_ready(url)
        with (
            httpx.Client(base_url=url, timeout=10) as http,
            grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel,
        ):
            yield Dropin(daprd, ports, resources, http, dapr_pb2_grpc.DaprStub(channel))
    finally:
        processes.stop(daprd.process)


def _grpc_status(call: Callable[[], object]) -> tuple[grpc.StatusCode, dict[str, Any]]:
    """A failed call's code and its details by type: ErrorInfo, ResourceInfo, BadRequest."""
    with pytest.raises(grpc.RpcError) as failed:
        call()
    error: Any = failed.value
    details: dict[str, Any] = {}
    for metadatum in error.trailing_metadata() or ():
        if metadatum.key != "grpc-status-details-bin":
            continue
        detail: any_pb2.Any
        for detail in status_pb2.Status.FromString(metadatum.value).details:
            for kind in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.ResourceInfo,
                error_details_pb2.BadRequest,
            ):
                message = kind()
                if detail.Unpack(message):
                    details[kind.DESCRIPTOR.full_name] = message
    return error.code(), details


def _by_type(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {detail["@type"]: detail for detail in body.get("details", [])}


def test_ready_on_healthz_on_the_http_and_metrics_ports(dropin: Dropin) -> None:
    assert dropin.http.get("/v1.0/healthz").status_code == 204
    metrics = f"http://127.0.0.1:{dropin.ports['metrics']}"
    assert httpx.get(f"{metrics}/v1.0/healthz").status_code == 204
    assert dropin.http.get("/v1.0/healthz/outbound").status_code == 204


def test_a_missing_store_gets_daprds_error_on_both_transports(dropin: Dropin) -> None:
    """errors.StateStore(name).NotFound(appID): no ResourceInfo, ErrorInfo with the app id."""
    answer = dropin.http.get("/v1.0/state/nosuchstore/k")
    assert answer.status_code == 400
    body = answer.json()
    assert body["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    assert body["message"].startswith("state store nosuchstore is not found")
    assert list(_by_type(body)) == [ERROR_INFO]
    info = _by_type(body)[ERROR_INFO]
    assert (info["reason"], info["domain"], info["metadata"]) == (
        "DAPR_STATE_NOT_FOUND",
        "dapr.io",
        {"appID": APP_ID},
    )
    code, details = _grpc_status(
        lambda: dropin.stub.GetState(state_pb2.GetStateRequest(store_name="nosuchstore", key="k"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(details) == ["google.rpc.ErrorInfo"]
    grpc_info = details["google.rpc.ErrorInfo"]
    assert (grpc_info.reason, grpc_info.domain, dict(grpc_info.metadata)) == (
        "DAPR_STATE_NOT_FOUND",
        "dapr.io",
        {"appID": APP_ID},
    )


def test_an_illegal_key_gets_daprds_error_on_both_transports(dropin: Dropin) -> None:
    """errors.StateStore(name).InvalidKeyName: BadRequest, ResourceInfo and ErrorInfo."""
    message = "input key/keyPrefix 'a||b' can't contain '||'"
    answer = dropin.http.get("/v1.0/state/statestore/a||b")
    assert answer.status_code == 400
    body = answer.json()
    assert (body["errorCode"], body["message"]) == ("ERR_MALFORMED_REQUEST", message)
    details = _by_type(body)
    assert details[BAD_REQUEST]["field_violations"] == [{"field": "a||b", "description": message}]
    resource = details[RESOURCE_INFO]
    assert (resource["resource_type"], resource["resource_name"]) == ("state", "statestore")
    assert (details[ERROR_INFO]["reason"], details[ERROR_INFO]["domain"]) == (
        "DAPR_STATE_ILLEGAL_KEY",
        "dapr.io",
    )
    code, grpc_details = _grpc_status(
        lambda: dropin.stub.SaveState(
            state_pb2.SaveStateRequest(
                store_name="statestore", states=[common_pb2.StateItem(key="a||b", value=b"1")]
            )
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    violation = grpc_details["google.rpc.BadRequest"].field_violations[0]
    assert (violation.field, violation.description) == ("a||b", message)
    grpc_resource = grpc_details["google.rpc.ResourceInfo"]
    assert (grpc_resource.resource_type, grpc_resource.resource_name) == ("state", "statestore")
    assert grpc_details["google.rpc.ErrorInfo"].reason == "DAPR_STATE_ILLEGAL_KEY"


def test_malformed_json_gets_daprds_error_on_both_transports(dropin: Dropin) -> None:
    """A save's or a transaction's body: ERR_MALFORMED_REQUEST (http.go onPostState,
    onPostStateTransaction); a query's: ERR_STATE_QUERY with ResourceInfo and ErrorInfo, over
    HTTP and gRPC alike (universal/state_query.go: `QueryFailed`)."""
    for path in ("/v1.0/state/statestore", "/v1.0/state/statestore/transaction"):
        answer = dropin.http.post(
            path, content=b'[{"key": "k", "value": ', headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    query = dropin.http.post("/v1.0-alpha1/state/statestore/query", content=b'{"filter": ')
    assert query.status_code == 500
    body = query.json()
    assert body["errorCode"] == "ERR_STATE_QUERY"
    assert body["message"].startswith(
        "state store statestore query failed: failed to parse JSON query body"
    )
    details = _by_type(body)
    assert details[RESOURCE_INFO]["resource_name"] == "statestore"
    assert details[ERROR_INFO]["reason"] == "DAPR_STATE_QUERY_FAILED"
    code, grpc_details = _grpc_status(
        lambda: dropin.stub.QueryStateAlpha1(
            state_pb2.QueryStateRequest(store_name="statestore", query='{"filter": ')
        )
    )
    assert code == grpc.StatusCode.INTERNAL
    assert grpc_details["google.rpc.ResourceInfo"].resource_name == "statestore"
    assert grpc_details["google.rpc.ErrorInfo"].reason == "DAPR_STATE_QUERY_FAILED"


def _error_count(dropin: Dropin, code: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{dropin.ports['metrics']}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("dapr_error_code_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if labels.get("error_code") == code:
                assert labels.get("app_id") == APP_ID, line
                assert labels.get("category") == "state", line
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_config_files_record_error_codes_counts_errors_of_both_transports(
    dropin: Dropin,
) -> None:
    before = _error_count(dropin, "ERR_STATE_STORE_NOT_FOUND")
    for _ in range(2):
        assert dropin.http.get("/v1.0/state/missing/k").status_code == 400
    _grpc_status(
        lambda: dropin.stub.GetState(state_pb2.GetStateRequest(store_name="missing", key="k"))
    )
    assert _error_count(dropin, "ERR_STATE_STORE_NOT_FOUND") == before + 3


def _rfc3339(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_ttl_expires_and_its_expiry_is_reported_in_rfc_3339_on_both_transports(
    dropin: Dropin,
) -> None:
    saved_at = datetime.now(UTC)
    item = {"key": "ttl", "value": "soon gone", "metadata": {"ttlInSeconds": "2"}}
    assert dropin.http.post("/v1.0/state/statestore", json=[item]).status_code == 204
    answer = dropin.http.get("/v1.0/state/statestore/ttl")
    expires = _rfc3339(answer.headers["metadata.ttlExpireTime"])
    assert 1 <= (expires - saved_at).total_seconds() <= 3
    [bulk] = dropin.http.post("/v1.0/state/statestore/bulk", json={"keys": ["ttl"]}).json()
    assert _rfc3339(bulk["metadata"]["ttlExpireTime"]) == expires
    got = dropin.stub.GetState(state_pb2.GetStateRequest(store_name="statestore", key="ttl"))
    assert _rfc3339(got.metadata["ttlExpireTime"]) == expires
    deadline = time.monotonic() + 10
    while dropin.http.get("/v1.0/state/statestore/ttl").status_code != 204:
        assert time.monotonic() < deadline, "the key outlived its TTL"
        time.sleep(0.1)
    assert datetime.now(UTC) >= expires
    got = dropin.stub.GetState(state_pb2.GetStateRequest(store_name="statestore", key="ttl"))
    assert (got.data, got.etag) == (b"", "")


def _wait(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


def test_an_edit_of_the_resources_folder_is_served_without_a_restart(dropin: Dropin) -> None:
    def listed() -> set[str]:
        return {c["name"] for c in dropin.http.get("/v1.0/metadata").json()["components"]}

    (dropin.resources / "orders.yaml").write_text(COMPONENT.format(name="orders"))
    _wait(lambda: "orders" in listed())
    assert (
        dropin.http.post("/v1.0/state/orders", json=[{"key": "k", "value": 1}]).status_code == 204
    )
    got = dropin.stub.GetState(state_pb2.GetStateRequest(store_name="orders", key="k"))
    assert got.data == b"1"
    (dropin.resources / "orders.yaml").unlink()
    _wait(lambda: listed() == {"statestore"})
    assert dropin.http.get("/v1.0/state/orders/k").json()["errorCode"] == (
        "ERR_STATE_STORE_NOT_FOUND"
    )


def test_sigint_exits_0(dropin: Dropin) -> None:
    """Last in the module: Ctrl-C, which `dapr run` forwards to daprd."""
    dropin.daprd.process.send_signal(signal.SIGINT)
    assert dropin.daprd.process.wait(timeout=20) == 0, dropin.daprd.log
