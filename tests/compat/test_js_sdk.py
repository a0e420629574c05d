"""
The official Dapr JavaScript SDK (`@dapr/dapr` 3.18.0, over HTTP, unmodified) works against
statecar as it would against daprd, on the Redis and the SQLite store, with an API token.

`js/scenario.js` drives the SDK the way an application does (start, save with options and TTL,
get, getBulk, delete with ETags, transactions with the SDK's `{value}` ETag objects, query with
filter/sort/page, metadata) and prints one JSON report; this module runs it in a real `node`
process and asserts every result precisely. It also proves the SDK's own quirks are tolerated:
save/delete report errors by returning `{error}` rather than throwing, `get` drops the ETag
header, the startup probe is `GET /v1.0/metadata`, a transaction sends `"metadata": null`.

A wrong token must make the SDK fail (its startup probe gets 401 and gives up) and write nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.compat.conftest import API_TOKEN, APP_ID, COMPAT_STORES, JS_DIR, SDK_VERSION
from tests.support.sidecar import SidecarProcess

pytestmark = pytest.mark.compat

SCENARIO = JS_DIR / "scenario.js"
SCENARIO_TIMEOUT_S = 120  # the full scenario takes ~1 s; the wrong-token one ~4 s
TTL_SECONDS = 3600  # what scenario.js asks for on the "ttl" key

Report = dict[str, Any]


class Scenario:
    """One finished `node scenario.js` run: its report, plus when it ran."""

    def __init__(self, report: Report, started: float, finished: float) -> None:
        self.report = report
        self.run: str = report["run"]
        self.started = started
        self.finished = finished

    def key(self, name: str) -> str:
        return f"{self.run}-{name}"

    def ok(self, step: str) -> Any:
        """The value a step returned; fails with the SDK's error if the step threw."""
        result = self.report["steps"][step]
        assert result["ok"], f"step {step} threw: {json.dumps(result['error'], indent=1)}"
        return result["value"]

    def threw(self, step: str) -> dict[str, Any]:
        result = self.report["steps"][step]
        assert not result["ok"], f"step {step} was expected to throw, returned {result['value']!r}"
        return dict(result["error"])

    def returned_error(self, step: str) -> dict[str, Any]:
        """The `{error}` a save/delete returned instead of throwing (the SDK's convention)."""
        value = self.ok(step)
        assert value["returned"] == "error", f"step {step} returned {value['returned']!r}"
        return dict(value["error"])

    def returned_nothing(self, step: str) -> None:
        value = self.ok(step)
        assert value == {"returned": {}}, f"step {step}: {json.dumps(value, indent=1)}"


def run_scenario(sidecar: SidecarProcess, node: str, store: str, mode: str, token: str) -> Scenario:
    run = f"js-{uuid.uuid4().hex[:10]}"
    # The SDK resolves its port and token from these, as in a pod; nothing else Dapr-ish leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAPR_", "STATECAR_"))}
    env.update(DAPR_HTTP_PORT=str(sidecar.http_port), DAPR_API_TOKEN=token, STORE=store, RUN=run)
    started = time.time()
    done = subprocess.run(
        [node, str(SCENARIO), mode],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    finished = time.time()
    assert done.returncode == 0, (
        f"scenario.js {mode} on {store} exited {done.returncode}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["run"] == run
    assert report["store"] == store
    return Scenario(report, started, finished)


@pytest.fixture(scope="module", params=COMPAT_STORES)
def scenario(request: pytest.FixtureRequest, compat_sidecar: SidecarProcess, node: str) -> Scenario:
    return run_scenario(compat_sidecar, node, str(request.param), "full", API_TOKEN)


@pytest.fixture(scope="module")
def wrong_token_scenario(compat_sidecar: SidecarProcess, node: str) -> Scenario:
    return run_scenario(compat_sidecar, node, "redis", "wrong-token", "not-the-" + API_TOKEN)


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


# -- start, health, metadata ---------------------------------------------------------------------


def test_the_scenario_ran_the_pinned_sdk_release(scenario: Scenario) -> None:
    assert scenario.report["sdkVersion"] == SDK_VERSION
    assert json.loads((JS_DIR / "package.json").read_text())["dependencies"] == {
        "@dapr/dapr": SDK_VERSION
    }


def test_sdk_start_and_health_succeed_through_the_metadata_probe(scenario: Scenario) -> None:
    assert scenario.ok("start") is None
    assert scenario.ok("isHealthy") is True


def test_metadata_names_the_app_and_both_stores_with_their_capabilities(
    scenario: Scenario,
) -> None:
    metadata = scenario.ok("metadata")
    assert metadata["id"] == APP_ID
    components = {c["name"]: c for c in metadata["components"]}
    assert set(components) == {"redis", "sqlite"}
    assert components["redis"]["type"] == "state.redis"
    assert components["sqlite"]["type"] == "state.sqlite"
    for component in components.values():
        assert component["version"] == "v1"
        assert {"ETAG", "TRANSACTIONAL", "TTL", "QUERY_API"} <= set(component["capabilities"])


# -- save / get / getBulk ------------------------------------------------------------------------

SAVED: dict[str, Any] = {
    "a": {"name": "alpha", "n": 1, "nested": {"list": [1, 2.5, "x"], "none": None}},
    "b": "plain string with unicode: café ☕",
    "ttl": {"n": 3, "flag": True},
    "num": 42,
}


def saved(scenario: Scenario, name: str) -> Any:
    value = SAVED[name]
    return {**value, "run": scenario.run} if name == "a" else value


def test_multi_item_save_with_options_metadata_and_ttl_returns_no_error(
    scenario: Scenario,
) -> None:
    scenario.returned_nothing("save")


def test_get_returns_each_saved_value_equal_to_what_was_sent(scenario: Scenario) -> None:
    assert scenario.ok("getA") == saved(scenario, "a")
    assert scenario.ok("getB") == saved(scenario, "b")
    assert scenario.ok("getTtl") == saved(scenario, "ttl")  # with consistency + request metadata
    assert scenario.ok("getNum") == 42


def test_get_of_a_missing_key_gives_the_sdk_an_empty_string(scenario: Scenario) -> None:
    assert scenario.ok("getMissing") == ""


def test_ttl_in_item_metadata_is_applied_and_reported_as_expire_time(scenario: Scenario) -> None:
    raw = scenario.ok("rawGetTtl")
    assert raw["status"] == 200
    assert json.loads(raw["body"]) == saved(scenario, "ttl")
    expires = parse_rfc3339(raw["ttlExpireTime"])
    # RFC 3339 to the second: allow that rounding plus the scenario's own duration.
    assert scenario.started + TTL_SECONDS - 2 <= expires <= scenario.finished + TTL_SECONDS + 2
    bulk_ttl = scenario.ok("getBulk")[3]
    assert bulk_ttl["metadata"] == {"ttlExpireTime": raw["ttlExpireTime"]}


def test_get_bulk_returns_items_in_request_order_with_etags_and_bare_missing_keys(
    scenario: Scenario,
) -> None:
    items = scenario.ok("getBulk")
    assert [i["key"] for i in items] == [scenario.key(n) for n in ("a", "missing", "b", "ttl")]
    assert items[1] == {"key": scenario.key("missing")}
    for item, name in ((items[0], "a"), (items[2], "b"), (items[3], "ttl")):
        assert item["data"] == saved(scenario, name)
        assert isinstance(item["etag"], str)
        assert item["etag"]
        assert "error" not in item
    assert items[3]["etag"] == scenario.ok("rawGetTtl")["etag"]
    assert "metadata" not in items[0]  # no TTL, nothing to report


def test_get_bulk_accepts_parallelism_and_request_metadata(scenario: Scenario) -> None:
    items = scenario.ok("getBulkWithOptions")
    assert [(i["key"], i["data"]) for i in items] == [
        (scenario.key("num"), 42),
        (scenario.key("a"), saved(scenario, "a")),
    ]


def test_a_key_with_spaces_and_accents_round_trips_through_the_sdk_urls(
    scenario: Scenario,
) -> None:
    scenario.returned_nothing("saveSpacedKey")
    assert scenario.ok("getSpacedKey") == {"spaced": True}
    (item,) = scenario.ok("bulkSpacedKey")
    assert (item["key"], item["data"]) == (scenario.key("clé à espaces"), {"spaced": True})
    scenario.returned_nothing("deleteSpacedKey")
    assert scenario.ok("getSpacedKeyAfterDelete") == ""


def test_first_write_option_refuses_to_overwrite_an_existing_key_without_etag(
    scenario: Scenario,
) -> None:
    error = scenario.returned_error("saveFirstWriteOnExistingKey")
    assert error["status"] == 409
    assert error["body"]["errorCode"] == "ERR_STATE_SAVE"
    assert scenario.ok("getTtlAfterRefusedSave") == saved(scenario, "ttl")


# -- ETags ---------------------------------------------------------------------------------------


def test_save_with_the_current_etag_writes_and_issues_a_new_etag(scenario: Scenario) -> None:
    scenario.returned_nothing("saveWithCurrentEtag")
    assert scenario.ok("etagA1") == scenario.ok("getBulk")[0]["etag"]
    assert scenario.ok("etagA2") != scenario.ok("etagA1")


def test_save_with_a_stale_etag_returns_a_409_error_instead_of_throwing(
    scenario: Scenario,
) -> None:
    error = scenario.returned_error("saveWithStaleEtag")
    assert error["status"] == 409
    assert error["body"]["errorCode"] == "ERR_STATE_SAVE"
    assert "etag mismatch" in error["body"]["message"]


def test_delete_with_a_stale_etag_returns_a_409_error_and_keeps_the_value(
    scenario: Scenario,
) -> None:
    error = scenario.returned_error("deleteWithStaleEtag")
    assert error["status"] == 409
    assert error["body"]["errorCode"] == "ERR_STATE_DELETE"
    assert "etag mismatch" in error["body"]["message"]
    assert scenario.ok("getAAfterRefusedDeletes") == {"name": "alpha", "n": 2, "run": scenario.run}


def test_delete_with_an_etag_the_store_never_issued_returns_a_400_error(
    scenario: Scenario,
) -> None:
    error = scenario.returned_error("deleteWithGarbageEtag")
    assert error["status"] == 400
    assert error["body"]["errorCode"] == "ERR_STATE_DELETE"
    assert "invalid etag" in error["body"]["message"]


def test_delete_with_the_current_etag_or_without_one_removes_the_key(scenario: Scenario) -> None:
    scenario.returned_nothing("deleteWithCurrentEtag")
    assert scenario.ok("getAAfterDelete") == ""
    scenario.returned_nothing("deleteWithoutEtag")
    assert scenario.ok("getNumAfterDelete") == ""


# -- transactions --------------------------------------------------------------------------------


def test_transaction_with_sdk_etag_objects_applies_every_operation(scenario: Scenario) -> None:
    scenario.returned_nothing("txSeed")
    assert scenario.ok("txCommit") is None
    assert scenario.ok("txCommitGetT1") == {"v": 2}
    assert scenario.ok("txCommitGetT2") == ""
    assert scenario.ok("txCommitGetT3") == {"v": 3, "list": ["a", "b"]}


def test_transaction_with_a_stale_etag_throws_names_the_key_and_applies_nothing(
    scenario: Scenario,
) -> None:
    error = scenario.threw("txStale")
    assert error["status"] == 500
    assert error["body"]["errorCode"] == "ERR_STATE_TRANSACTION"
    assert scenario.key("t1") in error["body"]["message"]
    # Operation 0 (an upsert before the failing check) and 2 (a delete after it) did not apply.
    assert scenario.ok("txStaleGetT4") == ""
    assert scenario.ok("txStaleGetT1") == {"v": 2}
    assert scenario.ok("txStaleGetT3") == {"v": 3, "list": ["a", "b"]}


def test_transaction_delete_with_an_etag_object_removes_the_key(scenario: Scenario) -> None:
    assert scenario.ok("txDeleteWithEtag") is None
    assert scenario.ok("txDeleteWithEtagGetT3") == ""


# -- query ---------------------------------------------------------------------------------------


def test_query_filters_sorts_descending_and_pages_through_every_match(
    scenario: Scenario,
) -> None:
    scenario.returned_nothing("querySeed")
    pages = scenario.ok("queryPages")
    results = [item for page in pages for item in page["results"]]
    # CA/WA people only (q3 is OR), by n descending: q5=7, q1=5, q6=4, q2=3, q4=1.
    assert [item["key"] for item in results] == [
        scenario.key(n) for n in ("q5", "q1", "q6", "q2", "q4")
    ]
    assert [item["data"]["n"] for item in results] == [7, 5, 4, 3, 1]
    assert all(item["data"]["run"] == scenario.run and item["etag"] for item in results)
    assert all(len(page["results"]) <= 2 for page in pages)
    assert [len(page["results"]) for page in pages][:3] == [2, 2, 1]
    # Every page but the last hands out a token; anything after the data is empty.
    assert all(page.get("token") for page in pages[:-1])
    assert all(not page["results"] for page in pages[3:])


def test_query_with_no_match_gives_the_sdk_empty_results(scenario: Scenario) -> None:
    assert scenario.ok("queryNoMatch") == {"results": []}


def test_query_filters_on_a_nested_field(scenario: Scenario) -> None:
    results = scenario.ok("queryFilterNested")["results"]
    assert [(r["key"], r["data"]["state"]) for r in results] == [(scenario.key("q3"), "OR")]


# -- cross-checks with a raw client --------------------------------------------------------------


def test_what_the_sdk_wrote_reads_back_byte_for_byte_through_raw_http(
    scenario: Scenario, compat_api: httpx.Client
) -> None:
    store = scenario.report["store"]
    answer = compat_api.get(f"/v1.0/state/{store}/{scenario.key('t1')}")
    assert answer.status_code == 200
    assert answer.content == b'{"v":2}'  # JSON.stringify's compact text, kept as sent
    answer = compat_api.get(f"/v1.0/state/{store}/{scenario.key('b')}")
    assert answer.content == json.dumps(SAVED["b"], ensure_ascii=False).encode()
    assert compat_api.get(f"/v1.0/state/{store}/{scenario.key('t4')}").status_code == 204


# -- the API token -------------------------------------------------------------------------------


def test_a_wrong_token_makes_the_sdk_give_up_starting_and_write_nothing(
    wrong_token_scenario: Scenario, compat_api: httpx.Client
) -> None:
    s = wrong_token_scenario
    assert s.threw("start")["message"] == "DAPR_SIDECAR_COULD_NOT_BE_STARTED"
    assert s.ok("isHealthy") is False
    assert s.returned_error("save")["message"] == "DAPR_SIDECAR_COULD_NOT_BE_STARTED"
    # What the SDK saw on the wire: 401 on its probe, while GET /v1.0/healthz stays open.
    assert s.ok("rawMetadata")["status"] == 401
    assert s.ok("rawGetNoToken")["status"] == 401
    assert s.ok("rawHealthz")["status"] == 204
    assert compat_api.get(f"/v1.0/state/redis/{s.key('intruder')}").status_code == 204


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1.0/metadata"),
        ("POST", "/v1.0/state/redis"),
        ("GET", "/v1.0/state/sqlite/some-key"),
        ("POST", "/v1.0-alpha1/state/sqlite/query"),
        ("GET", "/v1.0/no/such/route"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong", API_TOKEN.upper()])
def test_requests_without_the_right_token_are_401(
    compat_sidecar: SidecarProcess, method: str, path: str, token: str | None
) -> None:
    headers = {} if token is None else {"dapr-api-token": token}
    answer = httpx.request(method, compat_sidecar.url + path, headers=headers, content=b"[]")
    assert answer.status_code == 401


def test_health_endpoints_need_no_token(compat_sidecar: SidecarProcess) -> None:
    for path in ("/v1.0/healthz", "/v1.0/healthz/outbound"):
        assert httpx.get(compat_sidecar.url + path).status_code == 204


def test_the_lockfile_pins_the_same_sdk_release() -> None:
    lock = json.loads(Path(JS_DIR / "package-lock.json").read_text())
    assert lock["packages"][""]["dependencies"] == {"@dapr/dapr": SDK_VERSION}
    assert lock["packages"]["node_modules/@dapr/dapr"]["version"] == SDK_VERSION
