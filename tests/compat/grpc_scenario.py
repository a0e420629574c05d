"""
Test helper (not a test module): what every Dapr SDK's gRPC scenario must report.

The Python (`python_sdk/scenario.py`), Go (`go_sdk/main.go`) and Java (`java_sdk/…/Scenario.java`)
runners drive the same steps through their SDK and print the same JSON report; `check` asserts
it step by step, so a difference between SDKs shows as the step that differs.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.sidecar import SidecarProcess

TIMEOUT_S = 180
STORE_TYPES = {"redis": "state.redis", "sqlite": "state.sqlite"}

#: What the scenarios save first: not JSON, not UTF-8, a float that must not be rounded.
RAW = b'\x00\xff{"price": 1.10, "html": "<&>"}\n'
#: The Java SDK tags every value `contentType: application/json`, so it saves this JSON instead:
#: daprd would decode and re-encode it (`1.1`, sorted keys, `\u003c`); statecar keeps the bytes.
JSON_RAW = b'{"price": 1.10, "html": "<&>", "z": 1, "a": 2}'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def doc(run: str, team: str, n: int) -> bytes:
    return f'{{"run":"{run}","team":"{team}","n":{n}}}'.encode()


class Report:
    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.run: str = report["run"]
        self.steps: dict[str, Any] = report["steps"]

    def ok(self, step: str) -> Any:
        result = self.steps[step]
        assert result["ok"], f"step {step} failed: {json.dumps(result['error'], indent=1)}"
        return result.get("value")

    def error(self, step: str) -> dict[str, str]:
        result = self.steps[step]
        assert not result["ok"], f"step {step} was expected to fail, returned {result['value']!r}"
        return dict(result["error"])


def _items(items: list[dict[str, str]]) -> list[tuple[str, str, bool]]:
    """(key, data, has an ETag) per bulk item: ETags are opaque, only their presence is fixed."""
    return [(i["key"], i["data"], bool(i["etag"])) for i in items]


def js_view(value: bytes) -> bytes:
    """What the JS SDK hands an app for stored bytes: JSON parsed (a string as its text)."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if isinstance(parsed, str):
        return parsed.encode()
    return json.dumps(parsed, separators=(",", ":")).encode()


def check(
    raw_report: dict[str, Any],
    *,
    app_id: str,
    stores: dict[str, str],
    raw: bytes = RAW,
    view: Callable[[bytes], bytes] = lambda value: value,
) -> Report:
    """Every Proof step of issue 9, as the SDK saw it (`stores`: name -> component type).

    `view` is how the SDK shows stored bytes to the app (identity but for the JS SDK).
    """
    report = Report(raw_report)
    run = report.run

    def b64(data: bytes) -> str:
        return _b64(view(data)) if data else ""

    def key(name: str) -> str:
        return f"{run}-{name}"

    report.ok("save")
    first = report.ok("get")
    assert first["data"] == b64(raw), "the value must come back byte for byte"
    assert first["etag"], "a present key has an ETag"

    report.ok("firstWriteCurrent")
    stale = report.error("firstWriteStale")
    assert (stale["code"], stale["reason"]) == ("ABORTED", "ERR_STATE_SAVE"), stale
    after = report.ok("afterStale")
    assert after["data"] == b64(b'"v2"'), "the refused write changed nothing"
    assert after["etag"] not in ("", first["etag"])

    malformed = report.error("malformedEtag")
    assert (malformed["code"], malformed["reason"]) == ("INVALID_ARGUMENT", "ERR_STATE_SAVE")
    assert "invalid etag" in malformed["message"]

    report.ok("bulkSave")
    assert _items(report.ok("bulkGet")) == [
        (key("b1"), b64(b'{"n":1}'), True),
        (key("missing"), "", False),
        (key("b2"), b64(b'"two"'), True),
    ]

    deleted_stale = report.error("deleteStale")
    assert (deleted_stale["code"], deleted_stale["reason"]) == ("ABORTED", "ERR_STATE_DELETE")
    report.ok("deleteCurrent")
    assert report.ok("afterDelete") == {"data": "", "etag": ""}

    report.ok("transaction")
    assert _items(report.ok("afterTransaction")) == [
        (key("t1"), b64(doc(run, "blue", 1)), True),
        (key("t2"), b64(doc(run, "red", 2)), True),
        (key("b1"), "", False),
    ]

    report.ok("rewrite")
    refused = report.error("staleTransaction")
    assert (refused["code"], refused["reason"]) == ("INTERNAL", "ERR_STATE_TRANSACTION"), refused
    assert "nothing was applied" in refused["message"]
    assert _items(report.ok("afterStaleTransaction")) == [
        (key("t1"), b64(doc(run, "blue", 10)), True),
        (key("t2"), b64(doc(run, "red", 2)), True),
        (key("t3"), "", False),
    ], "a refused transaction applies nothing, not even its operations before the stale one"

    metadata = report.ok("metadata")
    assert metadata["id"] == app_id
    components = {c["name"]: c for c in metadata["components"]}
    for name, type_ in stores.items():
        assert components[name]["type"] == type_
        assert {"ETAG", "TRANSACTIONAL"} <= set(components[name]["capabilities"])

    results = report.ok("query")
    assert [(r["key"], r["data"]) for r in results] == [
        (key("t1"), _b64(doc(run, "blue", 10))),
        (key("t2"), _b64(doc(run, "red", 2))),
    ]
    assert all(r["etag"] for r in results)
    return report


def sdk_env(sidecar: SidecarProcess, token: str | None) -> dict[str, str]:
    """What an app gets from `statecar run` or the injector: the two ports, the token if any."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "DAPR_GRPC_PORT": str(sidecar.grpc_port),
        "DAPR_HTTP_PORT": str(sidecar.http_port),
    }
    if token is not None:
        env["DAPR_API_TOKEN"] = token
    return env


def run_scenario(
    command: list[str],
    sidecar: SidecarProcess,
    token: str | None,
    store: str,
    *,
    app_id: str,
    raw: bytes = RAW,
    view: Callable[[bytes], bytes] = lambda value: value,
) -> Report:
    """Run one SDK's scenario runner (`command STORE RUN`) and check its report."""
    run = f"{os.path.basename(command[-1])[:6]}-{uuid.uuid4().hex[:10]}"
    done = subprocess.run(
        [*command, store, run],
        env=sdk_env(sidecar, token),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"scenario crashed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    # SDKs may log to stdout (the Go SDK does): the report is the last line.
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return check(json.loads(lines[-1]), app_id=app_id, stores=STORE_TYPES, raw=raw, view=view)
