"""
The ASGI app in-process on the memory store: routes, error bodies, the API token, the body
limit, health and metadata. The conformance tier repeats the state semantics on every backend
over real HTTP; this tier pins what doesn't depend on a backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import httpx
import pytest

from statecar_contract.components import ResolvedComponent
from statecar_sidecar.app import Health, create_app, create_ops_app
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import ComponentFailure, ComponentRuntime
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import StoreUnavailableError

TOKEN = "s3cr3t-token-value"


async def make_client(
    components: Sequence[ResolvedComponent] = (ResolvedComponent("statestore", "state.in-memory"),),
    *,
    token: str | None = None,
    max_body: int = 4 * 1024 * 1024,
    app_id: str = "myapp",
) -> tuple[httpx.AsyncClient, ComponentRuntime]:
    runtime = ComponentRuntime(app_id=app_id, namespace="shop")
    await runtime.apply(components)
    app = create_app(runtime, Metrics(app_id), api_token=token, max_body_bytes=max_body)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sidecar")
    return client, runtime


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    client, runtime = await make_client()
    yield client
    await client.aclose()
    await runtime.close()


async def test_save_then_get_returns_the_exact_json_and_an_etag(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/v1.0/state/statestore", content=b'[{"key":"k","value":1}]')
    ).status_code == 204
    answer = await client.get("/v1.0/state/statestore/k")
    assert answer.status_code == 200
    assert answer.content == b"1"
    assert answer.headers["etag"].isdigit()
    assert answer.headers["content-type"] == "application/json"


async def test_trailing_slash_and_double_slashes_route_like_daprd(
    client: httpx.AsyncClient,
) -> None:
    assert (
        await client.post("/v1.0/state/statestore/", json=[{"key": "a", "value": 2}])
    ).status_code == 204
    assert (await client.get("/v1.0//state/statestore/a")).content == b"2"


async def test_unknown_route_is_a_dapr_style_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/nowhere"),
        ("GET", "/v1.0/state/statestore/a/b"),
        ("POST", "/v1.0-alpha1/state/statestore/other"),
    ]:
        answer = await client.request(method, path)
        assert answer.status_code == 404
        assert answer.json()["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_a_known_route_with_another_method_is_a_dapr_style_405(
    client: httpx.AsyncClient,
) -> None:
    for method, path, allow in [
        ("GET", "/v1.0/state/statestore", "POST, PUT"),
        ("PATCH", "/v1.0/state/statestore/k", "DELETE, GET"),
        ("POST", "/v1.0/state/statestore/k", "DELETE, GET"),
        ("PATCH", "/v1.0/state/statestore/bulk", "DELETE, GET, POST, PUT"),
        ("GET", "/v1.0-alpha1/state/statestore/query", "POST, PUT"),
        ("POST", "/v1.0/metadata", "GET"),
    ]:
        answer = await client.request(method, path)
        assert answer.status_code == 405, (method, path)
        assert answer.headers["allow"] == allow
        assert answer.json()["errorCode"] == "ERR_METHOD_NOT_ALLOWED"
        assert method in answer.json()["message"]


async def test_no_store_configured_is_500_not_configured() -> None:
    client, _runtime = await make_client(components=())
    answer = await client.get("/v1.0/state/statestore/k")
    assert answer.status_code == 500
    body = answer.json()
    assert body["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"
    assert body["details"][0]["reason"] == "DAPR_STATE_NOT_CONFIGURED"
    assert body["details"][0]["metadata"] == {"appID": "myapp"}
    await client.aclose()


async def test_unknown_store_names_the_known_ones(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1.0/state/other/k")
    assert answer.status_code == 400
    assert "statestore" in answer.json()["message"]


async def test_metadata_lists_components_with_capabilities(client: httpx.AsyncClient) -> None:
    document = (await client.get("/v1.0/metadata")).json()
    assert document["id"] == "myapp"
    assert document["components"] == [
        {
            "name": "statestore",
            "type": "state.in-memory",
            "version": "v1",
            "capabilities": ["ETAG", "QUERY_API", "TRANSACTIONAL", "TTL", "ACTOR"],
        }
    ]
    assert document["extended"]["daprRuntimeVersion"].startswith("statecar-")


async def test_health_is_204_when_every_store_answers(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1.0/healthz")).status_code == 204
    assert (await client.get("/v1.0/healthz/outbound")).status_code == 204
    mismatch = await client.get("/v1.0/healthz", params={"appid": "someone-else"})
    assert (mismatch.status_code, mismatch.json()["errorCode"]) == (
        500,
        "ERR_HEALTH_APPID_NOT_MATCH",
    )


class _DownStore(StateStore):
    """A backend that is down: every call fails as a real unreachable server would."""

    features = frozenset({Feature.ETAG})

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        raise StoreUnavailableError("redis at 10.0.0.1:6379 is unavailable: connection refused")

    async def set(self, op: SetOp) -> None:
        raise StoreUnavailableError("down")

    async def delete(self, op: DeleteOp) -> None:
        raise StoreUnavailableError("down")

    async def transact(self, ops: Sequence[Operation]) -> None:
        raise StoreUnavailableError("down")

    async def ping(self) -> None:
        raise StoreUnavailableError("redis at 10.0.0.1:6379 is unavailable: connection refused")

    async def close(self) -> None:
        return None


async def test_a_backend_that_is_down_gives_clear_5xx_and_unhealthy(
    client: httpx.AsyncClient,
) -> None:
    runtime = ComponentRuntime(app_id="myapp", namespace=None)
    from statecar_sidecar.runtime import BoundStore

    runtime.stores = {
        "down": BoundStore(
            "down", ResolvedComponent("down", "state.redis"), _DownStore(), "myapp||", None
        )
    }
    app = create_app(runtime, Metrics("myapp"), api_token=None, max_body_bytes=1024)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as down:
        answer = await down.get("/v1.0/state/down/k")
        assert answer.status_code == 500
        assert answer.json() == {
            "errorCode": "ERR_STATE_GET",
            "message": "fail to get k from state store down: redis at 10.0.0.1:6379 is unavailable: connection refused",
        }
        assert (await down.post("/v1.0/state/down", json=[{"key": "k", "value": 1}])).json()[
            "errorCode"
        ] == "ERR_STATE_SAVE"
        health = await down.get("/v1.0/healthz")
        assert health.status_code == 500
        assert "down: redis at 10.0.0.1:6379" in health.json()["message"]
        # A store without TRANSACTIONAL or QUERY_API says so, the way daprd does.
        tx = await down.post("/v1.0/state/down/transaction", json={"operations": []})
        assert (tx.status_code, tx.json()["errorCode"]) == (500, "ERR_STATE_STORE_NOT_SUPPORTED")
        assert tx.json()["details"][2]["reason"] == "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED"
        query = await down.post("/v1.0-alpha1/state/down/query", json={})
        assert (query.status_code, query.json()["errorCode"]) == (
            500,
            "ERR_STATE_STORE_NOT_SUPPORTED",
        )


# -- the API token -------------------------------------------------------------------------------


async def test_token_is_required_everywhere_but_the_two_health_gets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    client, runtime = await make_client(token=TOKEN)
    for method, path in [
        ("GET", "/v1.0/state/statestore/k"),
        ("POST", "/v1.0/state/statestore"),
        ("GET", "/v1.0/metadata"),
        ("GET", "/unknown/path"),
        ("POST", "/v1.0/healthz"),
        ("GET", "/v1.0/healthz/../state/statestore/k"),
        ("GET", "/v1.0/healthz/"),
    ]:
        answer = await client.request(method, path)
        assert answer.status_code == 401, (method, path)
        assert answer.text == "invalid api token"
    wrong = await client.get("/v1.0/metadata", headers={"dapr-api-token": TOKEN + "x"})
    assert wrong.status_code == 401
    assert (await client.get("/v1.0/healthz")).status_code == 204
    assert (await client.get("/v1.0/healthz/outbound")).status_code == 204
    good = await client.get("/v1.0/metadata", headers={"Dapr-Api-Token": TOKEN})
    assert good.status_code == 200
    assert TOKEN not in caplog.text
    await client.aclose()
    await runtime.close()


# -- body limit ----------------------------------------------------------------------------------


async def test_oversized_bodies_are_413_and_the_app_keeps_serving() -> None:
    client, runtime = await make_client(max_body=1000)
    big = b'[{"key":"k","value":"' + b"x" * 2000 + b'"}]'
    answer = await client.post("/v1.0/state/statestore", content=big)
    assert answer.status_code == 413
    assert "larger than the limit of 1000 bytes" in answer.json()["message"]

    # No Content-Length: the limit holds while streaming too.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 200

    streamed = await client.post("/v1.0/state/statestore/bulk", content=chunks())
    assert streamed.status_code == 413
    assert (
        await client.post("/v1.0/state/statestore", json=[{"key": "k", "value": 1}])
    ).status_code == 204
    await client.aclose()
    await runtime.close()


async def test_non_utf8_body_is_a_clear_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1.0/state/statestore", content=b'[{"key":"k","value":"\xff"}]')
    assert answer.status_code == 400
    assert "UTF-8" in answer.json()["message"]


async def test_nan_is_not_json(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1.0/state/statestore", content=b'[{"key":"k","value":NaN}]')
    assert answer.status_code == 400


async def test_query_metadata_applies_to_every_item(client: httpx.AsyncClient) -> None:
    body = [{"key": "a", "value": 1}, {"key": "b", "value": 2, "metadata": {"ttlInSeconds": "5"}}]
    assert (
        await client.post("/v1.0/state/statestore?metadata.ttlInSeconds=100", json=body)
    ).status_code == 204
    for key in ("a", "b"):
        assert (
            "metadata.ttlexpiretime" in (await client.get(f"/v1.0/state/statestore/{key}")).headers
        )


async def test_metrics_count_requests_under_daprd_names() -> None:
    runtime = ComponentRuntime(app_id="myapp", namespace=None)
    await runtime.apply([ResolvedComponent("statestore", "state.in-memory")])
    metrics = Metrics("myapp")
    health = Health(runtime, metrics)
    app = create_app(runtime, metrics, api_token=None, max_body_bytes=1024, health=health)
    ops = create_ops_app(health, metrics)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as api:
        await api.post("/v1.0/state/statestore", json=[{"key": "k", "value": 1}])
        await api.get("/v1.0/state/statestore/k")
        await api.get("/v1.0/state/statestore/k")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=ops), base_url="http://o"
    ) as scrape:
        text = (await scrape.get("/metrics")).text
    get_count = (
        'dapr_http_server_request_count{app_id="myapp",method="GET",'
        'path="/v1.0/state/{storeName}/{key}",status="200"} 2'
    )
    assert get_count in text
    assert (
        'dapr_component_state_count{app_id="myapp",component="statestore",namespace="",'
        'operation="set",success="true"} 1'
    ) in text
    assert "dapr_component_state_latencies_bucket" in text
    get_latency = 'dapr_http_server_latency_bucket{app_id="myapp",le="+Inf",method="GET",'
    assert get_latency + 'path="/v1.0/state/{storeName}/{key}",status="200"} 2' in text
    assert 'dapr_http_server_latency_count{app_id="myapp",method="GET"' in text
    await runtime.close()


async def test_only_the_requested_components_and_those_in_scope_are_served() -> None:
    runtime = ComponentRuntime(app_id="myapp", namespace=None, only=("a", "c"))
    await runtime.apply(
        [
            ResolvedComponent("a", "state.in-memory"),
            ResolvedComponent("b", "state.in-memory"),
            ResolvedComponent("c", "state.in-memory", scopes=("someone-else",)),
        ]
    )
    assert sorted(runtime.stores) == ["a"]
    await runtime.close()


class _BatchDownStore(_DownStore):
    """A backend that writes a multi-item save as one batch (as the SQL stores do), and is down."""

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        raise StoreUnavailableError("database is locked")


async def test_a_multi_item_save_on_a_down_backend_is_a_dapr_json_500() -> None:
    from statecar_sidecar.runtime import BoundStore

    runtime = ComponentRuntime(app_id="myapp", namespace=None)
    runtime.stores = {
        "down": BoundStore(
            "down", ResolvedComponent("down", "state.sqlite"), _BatchDownStore(), "myapp||", None
        )
    }
    metrics = Metrics("myapp")
    app = create_app(runtime, metrics, api_token=None, max_body_bytes=1024)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as down:
        answer = await down.post(
            "/v1.0/state/down", json=[{"key": "a", "value": 1}, {"key": "b", "value": 2}]
        )
    assert answer.status_code == 500
    assert answer.json() == {
        "errorCode": "ERR_STATE_SAVE",
        "message": "failed saving state in state store down: database is locked",
    }
    assert (
        'dapr_component_state_count{app_id="myapp",component="down",namespace="",'
        'operation="bulk_set",success="false"} 1'
    ) in metrics.exposition().decode()


async def test_without_an_app_id_store_errors_carry_error_info_with_null_metadata() -> None:
    """daprd's StateStoreError.NotFound/NotConfigured set metadata {"appID"} only for an app id."""
    client, _runtime = await make_client(app_id="")
    body = (await client.get("/v1.0/state/other/k")).json()
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "DAPR_STATE_NOT_FOUND",
            "domain": "dapr.io",
            "metadata": None,
        }
    ]
    await client.aclose()


async def test_a_declared_store_that_is_not_ready_answers_not_configured_with_error_info() -> None:
    client, runtime = await make_client()
    runtime.failed["orders"] = ComponentFailure(
        "orders", "state.redis", None, "state.redis: connection refused", False
    )
    answer = await client.get("/v1.0/state/orders/k")
    assert answer.status_code == 500
    body = answer.json()
    assert body["errorCode"] == "ERR_STATE_STORE_NOT_CONFIGURED"
    assert "is not ready: state.redis: connection refused" in body["message"]
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "DAPR_STATE_NOT_CONFIGURED",
            "domain": "dapr.io",
            "metadata": {"appID": "myapp"},
        }
    ]
    await client.aclose()
