"""
One behaviour, two transports: the same state operations over HTTP and over gRPC store the same
bytes and follow the same ETag rules, on Redis and SQLite; plus the gRPC port's own surface
(UNIMPLEMENTED for the rest of the Dapr API, health, reflection, token, Shutdown).

The gRPC client here is grpcio with statecar's own generated stubs (`statecar_sidecar._protos`),
the same Dapr v1.18.3 protos the SDKs are built from; the SDK tiers are the other test modules.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tests.compat.conftest import API_TOKEN, COMPAT_STORES
from tests.support.sidecar import SidecarProcess

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import (
    dapr_pb2,
    dapr_pb2_grpc,
    pubsub_pb2,
    state_pb2,
)

pytestmark = pytest.mark.compat

VALUE = b'{"price": 1.10, "html": "<&>", "big": 12345678901234567890, "z": 1, "a": [true, null]}'
FIRST_WRITE = common_pb2.StateOptions(concurrency=common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE)


@pytest.fixture(scope="module")
def stub(open_sidecar: SidecarProcess) -> Iterator[dapr_pb2_grpc.DaprStub]:
    with grpc.insecure_channel(open_sidecar.grpc_address) as channel:
        yield dapr_pb2_grpc.DaprStub(channel)


@pytest.fixture(scope="module")
def http(open_sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_sidecar.url, timeout=10) as client:
        yield client


def grpc_error(call: object) -> tuple[str, str, str]:
    """(code, ErrorInfo reason, message) of a failed call."""
    assert isinstance(call, grpc.RpcError)
    reason = ""
    for metadatum in call.trailing_metadata() or ():
        if metadatum.key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(metadatum.value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason = info.reason
    return call.code().name, reason, call.details() or ""


def health_check(
    channel: grpc.Channel,
) -> grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]:
    """grpc.health.v1.Health/Check over `channel`, through grpcio-health-checking's stub."""
    stub = health_pb2_grpc.HealthStub(channel)
    # types-grpcio-health-checking declares HealthStub's __init__ only, not the Check it sets.
    check: grpc.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ] = stub.Check  # type: ignore[attr-defined]
    return check


def server_reflection_info(
    channel: grpc.Channel,
) -> grpc.StreamStreamMultiCallable[
    reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
]:
    """grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo over `channel`."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    # types-grpcio-reflection types this attribute as `Incomplete` imported from binascii (an
    # exception class there), not as the stream-stream callable the stub sets.
    info: grpc.StreamStreamMultiCallable[
        reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    ] = stub.ServerReflectionInfo  # type: ignore[assignment]
    return info


class Transport:
    """The operations of the comparison, over one transport; each answers an outcome name."""

    def __init__(self, name: str, http: httpx.Client, stub: dapr_pb2_grpc.DaprStub, store: str):
        self.name, self.http, self.stub, self.store = name, http, stub, store

    def save(self, key: str, value: bytes, etag: str | None = None, first: bool = False) -> str:
        if self.name == "http":
            item = b'{"key":"' + key.encode() + b'","value":' + value
            if etag is not None:
                item += b',"etag":"' + etag.encode() + b'"'
            if first:
                item += b',"options":{"concurrency":"first-write"}'
            answer = self.http.post(f"/v1.0/state/{self.store}", content=b"[" + item + b"}]")
            return {204: "ok", 409: "mismatch", 400: "invalid"}.get(answer.status_code, str(answer))
        state = common_pb2.StateItem(key=key, value=value)
        if etag is not None:
            state.etag.value = etag
        if first:
            state.options.CopyFrom(FIRST_WRITE)
        try:
            self.stub.SaveState(state_pb2.SaveStateRequest(store_name=self.store, states=[state]))
        except grpc.RpcError as exc:
            code = grpc_error(exc)[0]
            return {"ABORTED": "mismatch", "INVALID_ARGUMENT": "invalid"}.get(code, code)
        return "ok"

    def get(self, key: str) -> tuple[bytes, str]:
        if self.name == "http":
            answer = self.http.get(f"/v1.0/state/{self.store}/{key}")
            return answer.content, answer.headers.get("etag", "")
        response = self.stub.GetState(state_pb2.GetStateRequest(store_name=self.store, key=key))
        return response.data, response.etag

    def delete(self, key: str, etag: str | None) -> str:
        if self.name == "http":
            headers = {"if-match": etag} if etag else {}
            answer = self.http.delete(f"/v1.0/state/{self.store}/{key}", headers=headers)
            return {204: "ok", 409: "mismatch", 400: "invalid"}.get(answer.status_code, str(answer))
        request = state_pb2.DeleteStateRequest(store_name=self.store, key=key)
        if etag:
            request.etag.value = etag
        try:
            self.stub.DeleteState(request)
        except grpc.RpcError as exc:
            code = grpc_error(exc)[0]
            return {"ABORTED": "mismatch", "INVALID_ARGUMENT": "invalid"}.get(code, code)
        return "ok"

    def transact(self, upserts: list[tuple[str, bytes, str | None]]) -> str:
        if self.name == "http":
            operations = []
            for key, value, etag in upserts:
                request = b'{"key":"' + key.encode() + b'","value":' + value
                if etag:
                    request += b',"etag":"' + etag.encode() + b'"'
                operations.append(b'{"operation":"upsert","request":' + request + b"}}")
            body = b'{"operations":[' + b",".join(operations) + b"]}"
            answer = self.http.post(f"/v1.0/state/{self.store}/transaction", content=body)
            return {204: "ok", 500: "refused"}.get(answer.status_code, str(answer))
        ops = []
        for key, value, etag in upserts:
            item = common_pb2.StateItem(key=key, value=value)
            if etag:
                item.etag.value = etag
            ops.append(state_pb2.TransactionalStateOperation(operationType="upsert", request=item))
        try:
            self.stub.ExecuteStateTransaction(
                state_pb2.ExecuteStateTransactionRequest(storeName=self.store, operations=ops)
            )
        except grpc.RpcError as exc:
            code = grpc_error(exc)[0]
            return "refused" if code == "INTERNAL" else code
        return "ok"


def script(t: Transport, run: str) -> list[object]:
    """The operations, with every observable outcome; both transports must produce the same."""
    key = f"{run}-{t.name}"
    seen: list[object] = [t.save(key, VALUE)]
    value, etag = t.get(key)
    seen += [value, bool(etag)]
    seen.append(t.save(key, b'"second"', etag="999999999", first=True))  # stale
    seen.append(t.save(key, b'"second"', etag="not-an-etag"))  # malformed
    seen.append(t.save(key, b'"second"', first=True))  # first-write, no ETag, key present
    seen.append(t.get(key)[0])  # unchanged by all three
    seen.append(t.save(key, b'"second"', etag=etag, first=True))  # current
    _, current = t.get(key)
    seen.append(t.delete(key, etag))  # now stale
    seen.append(t.transact([(f"{key}-new", b"1", None), (key, b'"third"', etag)]))
    seen += [t.get(f"{key}-new")[0], t.get(key)[0]]  # nothing applied
    seen.append(t.transact([(f"{key}-new", b"1", None), (key, b'"third"', current)]))
    seen += [t.get(f"{key}-new")[0], t.get(key)[0]]
    seen.append(t.delete(key, t.get(key)[1]))
    seen.append(t.get(key))  # gone: no bytes, no ETag
    return seen


@pytest.mark.parametrize("store", COMPAT_STORES)
def test_http_and_grpc_store_the_same_bytes_and_follow_the_same_etag_rules(
    http: httpx.Client, stub: dapr_pb2_grpc.DaprStub, store: str
) -> None:
    run = f"both-{uuid.uuid4().hex[:10]}"
    over_http = script(Transport("http", http, stub, store), run)
    over_grpc = script(Transport("grpc", http, stub, store), run)
    assert over_http == over_grpc
    assert over_grpc[:3] == ["ok", VALUE, True]
    assert over_grpc[3:6] == ["mismatch", "invalid", "mismatch"]
    assert over_grpc[-1] == (b"", "")


@pytest.mark.parametrize("store", COMPAT_STORES)
def test_what_one_transport_writes_the_other_reads_with_the_same_etag(
    http: httpx.Client, stub: dapr_pb2_grpc.DaprStub, store: str
) -> None:
    key = f"cross-{uuid.uuid4().hex[:10]}"
    grpc_side = Transport("grpc", http, stub, store)
    http_side = Transport("http", http, stub, store)
    assert grpc_side.save(key, VALUE) == "ok"
    assert http_side.get(key) == grpc_side.get(key)
    assert http_side.get(key)[0] == VALUE
    _, etag = http_side.get(key)
    assert grpc_side.save(key, b'"via grpc"', etag=etag) == "ok"  # an HTTP ETag works over gRPC
    _, etag = grpc_side.get(key)
    assert http_side.delete(key, etag) == "ok"  # and a gRPC ETag over HTTP
    assert grpc_side.get(key) == (b"", "")


def test_bulk_get_keeps_request_order_and_reports_missing_keys_empty(
    stub: dapr_pb2_grpc.DaprStub,
) -> None:
    run = uuid.uuid4().hex[:10]
    stub.SaveState(
        state_pb2.SaveStateRequest(
            store_name="sqlite",
            states=[
                common_pb2.StateItem(key=f"{run}-a", value=b"1"),
                common_pb2.StateItem(key=f"{run}-b", value=b"2"),
            ],
        )
    )
    keys = [f"{run}-b", f"{run}-missing", f"{run}-a"]
    response = stub.GetBulkState(
        state_pb2.GetBulkStateRequest(store_name="sqlite", keys=keys, parallelism=8)
    )
    assert [(i.key, i.data, bool(i.etag)) for i in response.items] == [
        (keys[0], b"2", True),
        (keys[1], b"", False),
        (keys[2], b"1", True),
    ]
    stub.DeleteBulkState(
        state_pb2.DeleteBulkStateRequest(
            store_name="sqlite",
            states=[common_pb2.StateItem(key=f"{run}-a"), common_pb2.StateItem(key=f"{run}-b")],
        )
    )
    assert not stub.GetState(state_pb2.GetStateRequest(store_name="sqlite", key=f"{run}-a")).data


@pytest.mark.parametrize("store", COMPAT_STORES)
def test_an_http_bulk_get_of_values_saved_as_any_bytes_over_grpc_is_valid_json(
    http: httpx.Client, stub: dapr_pb2_grpc.DaprStub, store: str
) -> None:
    """gRPC saves any bytes; HTTP bulk get stays one JSON document (daprd answers an empty 200)."""
    run = uuid.uuid4().hex[:10]
    values = {
        f"{run}-json": b'{"a": [1, 1e999]}',
        f"{run}-text": b"map[a:1]",
        f"{run}-binary": b"\xff\x00\x80",
    }
    stub.SaveState(
        state_pb2.SaveStateRequest(
            store_name=store,
            states=[common_pb2.StateItem(key=k, value=v) for k, v in values.items()],
        )
    )
    answer = http.post(f"/v1.0/state/{store}/bulk", json={"keys": list(values)})
    assert answer.status_code == 200
    data = {item["key"]: item["data"] for item in answer.json()}
    assert data == {
        f"{run}-json": {"a": [1, float("inf")]},
        f"{run}-text": "map[a:1]",
        f"{run}-binary": "/wCA",
    }
    # A single GET still answers the stored bytes themselves.
    for key, value in values.items():
        assert http.get(f"/v1.0/state/{store}/{key}").content == value


def test_errors_carry_daprds_codes_and_error_info(stub: dapr_pb2_grpc.DaprStub) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        stub.GetState(state_pb2.GetStateRequest(store_name="nope", key="k"))
    code, reason, message = grpc_error(unknown.value)
    assert (code, reason) == ("INVALID_ARGUMENT", "DAPR_STATE_NOT_FOUND")
    assert message.startswith("state store nope is not found")
    with pytest.raises(grpc.RpcError) as illegal:
        stub.GetState(state_pb2.GetStateRequest(store_name="sqlite", key="a||b"))
    assert grpc_error(illegal.value)[:2] == ("INVALID_ARGUMENT", "DAPR_STATE_ILLEGAL_KEY")
    with pytest.raises(grpc.RpcError) as empty:
        stub.SaveState(
            state_pb2.SaveStateRequest(store_name="sqlite", states=[common_pb2.StateItem()])
        )
    assert grpc_error(empty.value) == (
        "INVALID_ARGUMENT",
        "ERR_STATE_SAVE",
        "state key cannot be empty",
    )
    with pytest.raises(grpc.RpcError) as bad_operation:
        stub.ExecuteStateTransaction(
            state_pb2.ExecuteStateTransactionRequest(
                storeName="sqlite",
                operations=[
                    state_pb2.TransactionalStateOperation(
                        operationType="merge", request=common_pb2.StateItem(key="k")
                    )
                ],
            )
        )
    assert grpc_error(bad_operation.value)[:2] == (
        "UNIMPLEMENTED",
        "ERR_NOT_SUPPORTED_STATE_OPERATION",
    )


def test_every_other_rpc_is_unimplemented_and_names_statecar_and_the_rpc(
    stub: dapr_pb2_grpc.DaprStub,
) -> None:
    with pytest.raises(grpc.RpcError) as publish:
        stub.PublishEvent(pubsub_pb2.PublishEventRequest(pubsub_name="p", topic="t"))
    code, _, message = grpc_error(publish.value)
    assert code == "UNIMPLEMENTED"
    assert "statecar" in message
    assert "/dapr.proto.runtime.v1.Dapr/PublishEvent" in message


def test_the_token_guards_every_dapr_rpc_but_not_health(compat_sidecar: SidecarProcess) -> None:
    with grpc.insecure_channel(compat_sidecar.grpc_address) as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        request = state_pb2.GetStateRequest(store_name="sqlite", key="k")
        for metadata in [(), (("dapr-api-token", "wrong"),)]:
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetState(request, metadata=metadata)
            assert grpc_error(refused.value)[:2] == ("UNAUTHENTICATED", "Unauthorized")
        with pytest.raises(grpc.RpcError) as unimplemented:
            stub.PublishEvent(pubsub_pb2.PublishEventRequest())
        assert grpc_error(unimplemented.value)[0] == "UNAUTHENTICATED"
        stub.GetState(request, metadata=(("dapr-api-token", API_TOKEN),))
        answer = health_check(channel)(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_health_and_reflection_serve_grpcurl_and_kubernetes_probes(
    open_sidecar: SidecarProcess,
) -> None:
    with grpc.insecure_channel(open_sidecar.grpc_address) as channel:
        health = health_check(channel)
        for service in ("", "dapr.proto.runtime.v1.Dapr"):
            answer = health(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        (listing,) = server_reflection_info(channel)(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for s in listing.list_services_response.service}
        assert {"dapr.proto.runtime.v1.Dapr", "grpc.health.v1.Health"} <= names


def test_reflection_resolves_the_services_descriptors_as_grpcurl_does(
    open_sidecar: SidecarProcess,
) -> None:
    """grpcurl's `describe`/`invoke`: file_containing_symbol, then the files it imports."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(open_sidecar.grpc_address) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        service = pool.FindServiceByName("dapr.proto.runtime.v1.Dapr")
        get_state = service.methods_by_name["GetState"]
        assert get_state.input_type.full_name == "dapr.proto.runtime.v1.GetStateRequest"
        item = pool.FindMessageTypeByName("dapr.proto.common.v1.StateItem")
        etag = item.fields_by_name["etag"].message_type
        assert etag is not None
        assert etag.full_name == "dapr.proto.common.v1.Etag"
        with pytest.raises(KeyError, match=r"no\.such\.Service"):
            pool.FindServiceByName("no.such.Service")


def test_health_watch_streams_the_status_and_unknown_services_are_not_found(
    open_sidecar: SidecarProcess,
) -> None:
    with grpc.insecure_channel(open_sidecar.grpc_address) as channel:
        # types-grpcio-health-checking declares HealthStub's __init__ only, not the Watch it sets.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service="dapr.proto.runtime.v1.Dapr"))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        with pytest.raises(grpc.RpcError) as unknown:
            health_check(channel)(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert grpc_error(unknown.value)[0] == "NOT_FOUND"


def test_metadata_and_set_metadata_agree_with_http(
    stub: dapr_pb2_grpc.DaprStub, http: httpx.Client
) -> None:
    from statecar_sidecar._protos.dapr.proto.runtime.v1 import metadata_pb2

    stub.SetMetadata(metadata_pb2.SetMetadataRequest(key="team", value="checkout"))
    over_grpc = stub.GetMetadata(metadata_pb2.GetMetadataRequest())
    over_http = http.get("/v1.0/metadata").json()
    assert over_grpc.id == over_http["id"]
    assert over_grpc.extended_metadata["team"] == over_http["extended"]["team"] == "checkout"
    assert sorted(
        (c.name, c.type, list(c.capabilities)) for c in over_grpc.registered_components
    ) == sorted((c["name"], c["type"], c["capabilities"]) for c in over_http["components"])


def test_shutdown_stops_the_sidecar(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("shutdown")
    (folder / "c.yaml").write_text(
        "apiVersion: statecar.io/v1alpha1\nkind: StateStoreComponent\nmetadata: {name: s}\n"
        f"spec: {{type: state.sqlite, metadata: [{{name: connectionString, value: {folder}/s.db}}]}}\n"
    )
    sidecar = SidecarProcess(app_id="bye", components_path=folder)
    sidecar.start()
    try:
        with grpc.insecure_channel(sidecar.grpc_address) as channel:
            dapr_pb2_grpc.DaprStub(channel).Shutdown(dapr_pb2.ShutdownRequest())
        assert sidecar.process is not None
        assert sidecar.process.wait(timeout=20) == 0
    finally:
        sidecar.stop()


def test_grpc_health_is_not_serving_while_a_store_does_not_answer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("down")
    closed = SidecarProcess(app_id="down").http_port  # a free port nothing listens on
    (folder / "c.yaml").write_text(
        "apiVersion: statecar.io/v1alpha1\nkind: StateStoreComponent\nmetadata: {name: r}\n"
        f"spec: {{type: state.redis, metadata: [{{name: redisHost, value: '127.0.0.1:{closed}'}}]}}\n"
    )
    sidecar = SidecarProcess(app_id="down", components_path=folder)
    sidecar.start(wait_healthy=False)
    try:
        with grpc.insecure_channel(sidecar.grpc_address) as channel:
            # HTTP answers (500 here) before the gRPC port listens: wait for the port.
            grpc.channel_ready_future(channel).result(timeout=10)
            check = health_check(channel)
            answer = check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert httpx.get(f"{sidecar.ops_url}/v1.0/healthz", timeout=10).status_code == 500
    finally:
        sidecar.stop()


def _error_count(sidecar: SidecarProcess, code: str) -> int:
    prefix = f'dapr_error_code_total{{app_id="{sidecar_app_id(sidecar)}",category="state",'
    prefix += f'error_code="{code}"}} '
    for line in httpx.get(f"{sidecar.ops_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix) :])
    return 0


def sidecar_app_id(sidecar: SidecarProcess) -> str:
    return sidecar.command[sidecar.command.index("--app-id") + 1]


def test_a_grpc_error_is_counted_in_dapr_error_code_total_with_its_error_info(
    stub: dapr_pb2_grpc.DaprStub, open_sidecar: SidecarProcess
) -> None:
    before = _error_count(open_sidecar, "ERR_STATE_STORE_NOT_FOUND")
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetState(state_pb2.GetStateRequest(store_name="no-such-store", key="k"))
    code, reason, _ = grpc_error(caught.value)
    assert (code, reason) == ("INVALID_ARGUMENT", "DAPR_STATE_NOT_FOUND")
    assert _error_count(open_sidecar, "ERR_STATE_STORE_NOT_FOUND") == before + 1
