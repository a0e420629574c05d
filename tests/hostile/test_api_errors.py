"""
Hostile input on the state API, in process: a crash anywhere is Dapr's error JSON (never a
plain-text traceback), a known route with another method is a 405, and the metrics count every
failure under the route it matched (issue 8, items 2 and 8). What must be the same on every
backend runs against a real sidecar in test_api_backends.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
import pytest

from statecar_contract.components import ResolvedComponent
from statecar_sidecar.app import create_app
from statecar_sidecar.metrics import Metrics
from statecar_sidecar.runtime import BoundStore, ComponentRuntime
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem

KEY_ROUTE = "/v1.0/state/{storeName}/{key}"
SAVE_ROUTE = "/v1.0/state/{storeName}"


class _CrashingStore(StateStore):
    """A backend with a bug: every call raises something no handler maps."""

    @property
    def features(self) -> frozenset[Feature]:  # type: ignore[override]
        raise RuntimeError("metadata crashed\n  File 'x.py', line 1")

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        raise RuntimeError("boom: internal detail\nTraceback (most recent call last):")

    async def set(self, op: SetOp) -> None:
        raise KeyError("boom")

    async def delete(self, op: DeleteOp) -> None:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    async def transact(self, ops: Sequence[Operation]) -> None:
        raise AssertionError("boom")

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _crashing_app(metrics: Metrics) -> object:
    runtime = ComponentRuntime(app_id="myapp", namespace=None)
    runtime.stores = {
        "bad": BoundStore(
            "bad", ResolvedComponent("bad", "state.in-memory"), _CrashingStore(), "myapp||", None
        )
    }
    return create_app(runtime, metrics, api_token=None, max_body_bytes=1 << 20)


def _count(metrics: Metrics, method: str, path: str, status: int) -> float:
    line = (
        f'dapr_http_server_request_count{{app_id="myapp",method="{method}",'
        f'path="{path}",status="{status}"}} '
    )
    for row in metrics.exposition().decode().splitlines():
        if row.startswith(line):
            return float(row[len(line) :])
    return 0.0


async def test_a_crash_in_a_handler_is_a_dapr_json_500_counted_under_its_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics("myapp")
    app = _crashing_app(metrics)
    caplog.set_level(logging.ERROR, logger="statecar.api")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://s",
    ) as client:
        answers = [
            await client.get("/v1.0/state/bad/k"),
            await client.post("/v1.0/state/bad", json=[{"key": "k", "value": 1}]),
            await client.delete("/v1.0/state/bad/k"),
        ]
    for answer in answers:
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/json"
        body = answer.json()
        assert body["errorCode"] == "ERR_INTERNAL"
        # The type, never the text or a traceback: those go to the log only.
        assert "Traceback" not in body["message"]
        assert "boom" not in body["message"]
    assert "RuntimeError" in answers[0].json()["message"]
    assert KEY_ROUTE in answers[0].json()["message"]
    assert "Traceback" in caplog.text  # logged with its traceback
    assert _count(metrics, "GET", KEY_ROUTE, 500) == 1
    assert _count(metrics, "POST", SAVE_ROUTE, 500) == 1
    assert _count(metrics, "DELETE", KEY_ROUTE, 500) == 1


async def test_a_crash_behind_the_state_api_is_a_dapr_json_500_too() -> None:
    app = _crashing_app(Metrics("myapp"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),  # type: ignore[arg-type]
        base_url="http://s",
    ) as client:
        answer = await client.get("/v1.0/metadata")  # reads `features`, which crashes
    assert answer.status_code == 500
    assert answer.json()["errorCode"] == "ERR_INTERNAL"
    assert "metadata crashed" not in answer.text


async def test_error_responses_are_labelled_with_the_route_they_matched() -> None:
    runtime = ComponentRuntime(app_id="myapp", namespace=None)
    await runtime.apply([ResolvedComponent("statestore", "state.in-memory")])
    metrics = Metrics("myapp")
    app = create_app(runtime, metrics, api_token="t0ken", max_body_bytes=1 << 20)
    headers = {"dapr-api-token": "t0ken"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s", headers=headers
    ) as client:
        assert (await client.post("/v1.0/state/statestore", content=b"[1]")).status_code == 400
        assert (await client.get("/v1.0/state/nostore/k")).status_code == 400
        assert (await client.patch("/v1.0/state/statestore/k")).status_code == 405
        assert (
            await client.post("/v1.0/state/statestore/transaction", content=b'{"operations":5}')
        ).status_code == 400
        assert (await client.get("/v1.0/state/statestore/a/b")).status_code == 404
        assert (
            await client.get("/v1.0/state/statestore/k", headers={"dapr-api-token": "wrong"})
        ).status_code == 401
    await runtime.close()
    assert _count(metrics, "POST", SAVE_ROUTE, 400) == 1
    assert _count(metrics, "GET", KEY_ROUTE, 400) == 1
    assert _count(metrics, "PATCH", KEY_ROUTE, 405) == 1
    assert _count(metrics, "POST", "/v1.0/state/{storeName}/transaction", 400) == 1
    assert _count(metrics, "GET", "unknown", 404) == 1  # no route: no template to name
    assert _count(metrics, "GET", KEY_ROUTE, 401) == 1


def test_error_bodies_stay_json_when_the_message_quotes_a_lone_surrogate() -> None:
    from statecar_sidecar.api import errors

    body = errors.illegal_key("s", "a||\ud800").body()
    assert b"\\ud800" in body
