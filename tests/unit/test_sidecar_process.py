"""
The sidecar as a process: `statecar run` zero-config, `statecar run -- app`, component files
with errors, and make-before-break reload of the operator's wiring file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from tests.support.ports import free_port
from tests.support.sidecar import SidecarProcess

from statecar_contract import wiring
from statecar_contract.components import ResolvedComponent

STATECAR = [sys.executable, "-m", "statecar_cli.main"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATECAR_", "DAPR_"))}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


def _wait_until_healthy(get: Callable[[str], httpx.Response], url: str) -> None:
    """Poll `url`'s /v1.0/healthz with `get` until it answers 204 (at most 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if get(f"{url}/v1.0/healthz").status_code == 204:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "statecar run did not start"
        time.sleep(0.05)


def test_statecar_run_serves_sqlite_with_no_configuration(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            *STATECAR,
            "run",
            "--http-port",
            str(port),
            "--metrics-port",
            "0",
            "--grpc-port",
            str(free_port()),
        ],
        env=_env(tmp_path),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_healthy(httpx.get, url)
        # The README's first promise, as curl sends it.
        saved = httpx.post(
            f"{url}/v1.0/state/statestore",
            content=b'[{"key":"k","value":1}]',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert saved.status_code == 204
        assert httpx.get(f"{url}/v1.0/state/statestore/k").text == "1"
        assert httpx.get(f"{url}/v1.0/metadata").json()["components"][0]["type"] == "state.sqlite"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        process.stderr.close()
    assert (tmp_path / "data" / "statecar" / "state.db").exists()


def test_statecar_run_exports_the_port_and_exits_with_the_apps_code(tmp_path: Path) -> None:
    grpc_port = free_port()
    app = (
        "import os, sys, urllib.request\n"
        "port = os.environ['DAPR_HTTP_PORT']\n"
        "assert os.environ['STATECAR_HTTP_PORT'] == port\n"
        f"assert os.environ['DAPR_GRPC_PORT'] == '{grpc_port}'\n"
        "assert os.environ['APP_ID'] == 'demo'\n"
        'req = urllib.request.Request(f\'http://127.0.0.1:{port}/v1.0/state/statestore\', data=b\'[{"key":"from-app","value":"hi"}]\', method=\'POST\')\n'
        "assert urllib.request.urlopen(req).status == 204\n"
        "body = urllib.request.urlopen(f'http://127.0.0.1:{port}/v1.0/state/statestore/from-app').read()\n"
        "sys.exit(3 if body == b'\"hi\"' else 1)\n"
    )
    result = subprocess.run(
        [
            *STATECAR,
            "run",
            "--app-id",
            "demo",
            "--http-port",
            str(free_port()),
            "--metrics-port",
            "0",
            "--grpc-port",
            str(grpc_port),
            "--",
            sys.executable,
            "-c",
            app,
        ],
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3, result.stderr


def test_a_bad_component_file_names_the_file_the_field_and_the_fix(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "orders.yaml").write_text(
        "apiVersion: statecar.io/v1alpha1\nkind: StateStoreComponent\nmetadata: {name: orders}\n"
        "spec:\n  type: state.redis\n  concurrency: first\n  metadata:\n  - {name: redisHost, value: 'r:1'}\n"
    )
    # The sidecar serves on (the other components would), not ready, and says what to fix.
    sidecar = SidecarProcess(components_path=folder)
    sidecar.start(wait_healthy=False)
    try:
        health = httpx.get(f"{sidecar.ops_url}/v1.0/healthz")
        assert health.status_code == 500
        reason = health.json()["components"]["orders"]
        assert (
            "orders.yaml: spec.concurrency: must be one of first-write, last-write, got 'first'"
            in reason
        )
        assert "component orders is not ready" in sidecar.log
    finally:
        assert sidecar.stop() == 0


def test_local_secret_refs_resolve_from_the_environment(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "apiVersion: statecar.io/v1alpha1\nkind: StateStoreComponent\nmetadata: {name: s}\n"
        "spec:\n  type: state.sqlite\n  metadata:\n  - name: connectionString\n    secretKeyRef: {name: db-file, key: path}\n"
    )
    missing = SidecarProcess(components_path=folder)
    missing.start(wait_healthy=False)
    try:
        assert "DB_FILE_PATH" in httpx.get(f"{missing.ops_url}/v1.0/healthz").json()["message"]
    finally:
        missing.stop()
    sidecar = SidecarProcess(components_path=folder, env={"DB_FILE_PATH": str(tmp_path / "x.db")})
    sidecar.start()
    try:
        assert (
            httpx.post(f"{sidecar.url}/v1.0/state/s", json=[{"key": "k", "value": 1}]).status_code
            == 204
        )
    finally:
        sidecar.stop()


def _write_wiring(path: Path, *components: ResolvedComponent) -> None:
    data = wiring.encode(wiring.with_components("shop", components))[wiring.WIRING_FILE]
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)  # atomic, as the kubelet's symlink swap is


def _wait(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_wiring_changes_reload_make_before_break(tmp_path: Path) -> None:
    wiring_file = tmp_path / "components.json"
    memory_a = ResolvedComponent("a", "state.in-memory")
    _write_wiring(wiring_file, memory_a)
    sidecar = SidecarProcess(wiring_file=wiring_file)
    sidecar.start()
    api = httpx.Client(base_url=sidecar.url)
    try:
        assert api.post("/v1.0/state/a", json=[{"key": "k", "value": 1}]).status_code == 204
        # A new component appears without a restart.
        _write_wiring(
            wiring_file,
            memory_a,
            ResolvedComponent(
                "b", "state.sqlite", metadata={"connectionString": str(tmp_path / "b.db")}
            ),
        )
        _wait(lambda: api.get("/v1.0/state/b/k").status_code == 204)
        # A change to `a` that cannot open keeps the old `a` serving, and says why.
        broken = ResolvedComponent(
            "a",
            "state.redis",
            metadata={"redisHost": f"127.0.0.1:{free_port()}", "dialTimeout": "200ms"},
        )
        _write_wiring(wiring_file, broken)
        _wait(lambda: "statecarLastReloadError" in api.get("/v1.0/metadata").json()["extended"])
        assert api.get("/v1.0/state/a/k").content == b"1"
        health = httpx.get(f"{sidecar.ops_url}/v1.0/healthz")
        assert health.status_code == 500
        assert "a: state.redis" in health.json()["message"]
        _wait(lambda: api.get("/v1.0/state/b/k").status_code == 400)  # b was removed
        # A corrupt file changes nothing.
        wiring_file.write_bytes(b"{not json")
        time.sleep(1.5)
        assert api.get("/v1.0/state/a/k").content == b"1"
        # Fixed: healthy again, the same store object kept (its data too).
        _write_wiring(wiring_file, memory_a)
        _wait(lambda: httpx.get(f"{sidecar.ops_url}/v1.0/healthz").status_code == 204)
        assert api.get("/v1.0/state/a/k").content == b"1"
    finally:
        api.close()
        assert sidecar.stop() == 0


def _busy_polls(env: dict[str, str], tmp_path: Path) -> dict[str, float]:
    """`statecar run`, 30 calls one at a time on one connection: the busy-poll outcomes scraped."""
    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *STATECAR,
            "run",
            "--http-port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--grpc-port",
            "0",
        ],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client() as client:
            _wait_until_healthy(client.get, url)
            client.post(f"{url}/v1.0/state/statestore", content=b'[{"key":"k","value":1}]')
            for _ in range(30):
                assert client.get(f"{url}/v1.0/state/statestore/k").text == "1"
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert "# TYPE statecar_busy_polls_total counter" in scrape
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in scrape.splitlines()
        if line.startswith("statecar_busy_polls_total{")
    }


def test_busy_polling_counts_its_outcomes_in_the_metrics(tmp_path: Path) -> None:
    outcomes = _busy_polls(_env(tmp_path), tmp_path)
    assert set(outcomes) == {"hit", "miss", "shared"}
    # Every lone call is either spun for or found its CPU shared (and counted so).
    assert outcomes["hit"] + outcomes["shared"] >= 1


def test_busy_polling_turned_off_counts_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path) | {"STATECAR_BUSY_POLL_US": "0"}
    assert _busy_polls(env, tmp_path) == {}
