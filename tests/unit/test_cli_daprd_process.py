"""
`statecar daprd` as a process, started the way Dapr's own tooling starts daprd.

`dapr run` (github.com/dapr/cli, pkg/standalone/run.go `RunConfig.getArgs`/`getEnv`, cmd/run.go)
runs the first `daprd` it finds in `~/.dapr/bin` with the argument list of
tests/support/dapr_run.py and the CLI's own environment (plus `DAPR_HOST_IP=127.0.0.1` when started
from a run file), then the app through `sh -c 'exec "$@"'` with APP_ID, APP_CHANNEL_ADDRESS,
APP_PORT, DAPR_HTTP_PORT, DAPR_GRPC_PORT, DAPR_METRICS_PORT and APP_PROTOCOL added.
docs/daprd.md describes the shim these tests install.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.support import processes
from tests.support.dapr_run import DEFAULT_CONFIG, Daprd, dapr_run_argv, free_ports

STATESTORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
spec:
  type: state.in-memory
  version: v1
  metadata:
  - name: actorStateStore
    value: "true"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
"""

APP = """\
import json, os, sys, urllib.request
base = f"http://127.0.0.1:{os.environ['DAPR_HTTP_PORT']}/v1.0"
body = json.dumps([{"key": "order", "value": {"id": os.environ["APP_ID"]}}]).encode()
request = urllib.request.Request(f"{base}/state/statestore", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
assert urllib.request.urlopen(request).status == 204
got = json.load(urllib.request.urlopen(f"{base}/state/statestore/order"))
print("APP GOT", json.dumps(got))
sys.exit(0 if got == {"id": os.environ["APP_ID"]} else 3)
"""


@pytest.fixture
def started() -> Iterator[list[Daprd]]:
    processes_: list[Daprd] = []
    yield processes_
    for daprd in processes_:
        processes.stop(daprd.process)


def _wait(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _ports() -> dict[str, int]:
    return free_ports()


def test_dapr_runs_argv_and_env_start_statecar_and_an_app_beside_it_is_served(
    tmp_path: Path, started: list[Daprd]
) -> None:
    (tmp_path / ".dapr").mkdir()
    (tmp_path / ".dapr" / "config.yaml").write_text(DEFAULT_CONFIG, encoding="utf-8")
    resources = tmp_path / "components"
    resources.mkdir()
    (resources / "statestore.yaml").write_text(STATESTORE, encoding="utf-8")
    ports = _ports()
    daprd = Daprd(
        tmp_path,
        dapr_run_argv(tmp_path, resources, "orders", ports),
        {"DAPR_HOST_IP": "127.0.0.1"},
    )
    started.append(daprd)
    url = f"http://127.0.0.1:{ports['http']}"
    daprd.wait_ready(url)
    # The app, as GetAppCommand starts it.
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    app_env = dict(os.environ)
    app_env.update(
        APP_ID="orders",
        APP_CHANNEL_ADDRESS="127.0.0.1",
        APP_PORT="6001",
        DAPR_HTTP_PORT=str(ports["http"]),
        DAPR_GRPC_PORT=str(ports["grpc"]),
        DAPR_METRICS_PORT=str(ports["metrics"]),
        APP_PROTOCOL="http",
    )
    app = subprocess.run(
        ["sh", "-c", 'exec "$@"', "sh", sys.executable, str(tmp_path / "app.py")],
        env=app_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert app.returncode == 0, app.stderr.decode() + daprd.log
    assert b'APP GOT {"id": "orders"}' in app.stdout
    metadata = httpx.get(f"{url}/v1.0/metadata").json()
    assert metadata["id"] == "orders"
    assert [c["name"] for c in metadata["components"]] == ["statestore"]
    # Only the given ports are bound: the internal gRPC port is free.
    with httpx.Client() as client, pytest.raises(httpx.TransportError):
        client.get(f"http://127.0.0.1:{ports['internal']}/", timeout=1)
    assert httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics").status_code == 200
    assert "pubsub (pubsub.redis)" in daprd.log
    assert "--placement-host-address" in daprd.log  # named as not applying
    # Ctrl-C, as `dapr run` forwards it: a clean exit 0.
    daprd.process.send_signal(signal.SIGINT)
    assert daprd.process.wait(timeout=20) == 0, daprd.log


def _quoted(index: int) -> str:
    """A legal component name, quoted each way YAML allows."""
    name = f"store-{index}"
    return [
        name,
        f"'{name}'",
        f'"{name}"',
        f'"store\\x2d{index}"',  # a double-quoted escape: \x2d is "-"
        f"|-\n    {name}",
        f">-\n    {name}",
    ][index % 6]


def test_several_hundred_components_in_one_folder_are_all_served_and_listed(
    tmp_path: Path, started: list[Daprd]
) -> None:
    resources = tmp_path / "res"
    resources.mkdir()
    count = 300
    for start in range(0, count, 50):
        documents = [
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n"
            f"  name: {_quoted(i)}\nspec:\n  type: state.in-memory\n  version: v1\n"
            "  metadata: []\n"
            for i in range(start, start + 50)
        ]
        (resources / f"batch-{start}.yaml").write_text("---\n".join(documents), encoding="utf-8")
    # Kubernetes's limit for a components.dapr.io name: a DNS subdomain, up to 253 characters.
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    dotted = ["orders.v2.state", longest]
    (resources / "dotted.yaml").write_text(
        "---\n".join(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n"
            f"  name: '{name}'\nspec:\n  type: state.in-memory\n  version: v1\n"
            for name in dotted
        ),
        encoding="utf-8",
    )
    ports = _ports()
    daprd = Daprd(
        tmp_path,
        [
            "-app-id=many",
            f"-dapr-http-port={ports['http']}",
            f"-dapr-grpc-port={ports['grpc']}",
            f"-metrics-port={ports['metrics']}",
            f"-resources-path={resources}",
        ],
    )
    started.append(daprd)
    url = f"http://127.0.0.1:{ports['http']}"
    daprd.wait_ready(url, timeout=60)
    names = {c["name"] for c in httpx.get(f"{url}/v1.0/metadata").json()["components"]}
    assert names == {f"store-{i}" for i in range(count)} | set(dotted)
    for i, name in enumerate([*(f"store-{i}" for i in (0, 1, 2, 3, 4, 5, count - 1)), *dotted]):
        store = f"{url}/v1.0/state/{name}"
        assert httpx.post(store, json=[{"key": "k", "value": i}]).status_code == 204
        assert httpx.get(f"{store}/k").json() == i


def test_the_folders_are_watched_and_edits_reload_make_before_break(
    tmp_path: Path, started: list[Daprd]
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    memory = (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\n"
        "spec: {{type: state.in-memory, version: v1, metadata: []}}\n"
    )
    (first / "a.yaml").write_text(memory.format(name="a"), encoding="utf-8")
    ports = _ports()
    daprd = Daprd(
        tmp_path,
        [
            "--app-id",
            "reload",
            "--dapr-http-port",
            str(ports["http"]),
            "--dapr-grpc-port",
            str(ports["grpc"]),
            "--metrics-port",
            str(ports["metrics"]),
            "--resources-path",
            str(first),
            "--resources-path",
            str(second),
        ],
    )
    started.append(daprd)
    url = f"http://127.0.0.1:{ports['http']}"
    daprd.wait_ready(url)
    assert httpx.post(f"{url}/v1.0/state/a", json=[{"key": "k", "value": 1}]).status_code == 204
    # A component added to the second folder is served without a restart.
    (second / "b.yaml").write_text(memory.format(name="b"), encoding="utf-8")
    _wait(lambda: httpx.get(f"{url}/v1.0/state/b/k").status_code == 204)
    # An edit statecar can't serve keeps the old `a` serving, its data too (make-before-break).
    (first / "a.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a}\n"
        "spec:\n  type: state.redis\n  version: v1\n  metadata:\n"
        "  - {name: redisHost, value: '127.0.0.1'}\n  - {name: redisPort, value: abc}\n",
        encoding="utf-8",
    )
    _wait(
        lambda: (
            [
                (f["name"], f["previousVersionServing"])
                for f in httpx.get(f"{url}/v1.0/metadata").json()["statecarFailedComponents"]
            ]
            == [("a", True)]
        )
    )
    assert httpx.get(f"{url}/v1.0/state/a/k").json() == 1
    # Removed from the folder: no longer served.
    (second / "b.yaml").unlink()
    _wait(lambda: httpx.get(f"{url}/v1.0/state/b/k").status_code == 400)
    daprd.process.send_signal(signal.SIGINT)
    assert daprd.process.wait(timeout=20) == 0, daprd.log


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-such-flag", "1"], "flag provided but not defined: -no-such-flag"),
        (["--mode", "kubernetes"], "runs standalone"),
        (["--unix-domain-socket", "/tmp/sock"], "TCP only"),
    ],
)
def test_unknown_and_refused_flags_exit_2_with_the_reason(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    shim_home = tmp_path
    daprd = Daprd(shim_home, argv)
    assert daprd.process.wait(timeout=30) == 2
    assert message in daprd.log


def test_a_state_component_without_ignore_errors_that_cannot_be_served_refuses_the_start(
    tmp_path: Path, started: list[Daprd]
) -> None:
    resources = tmp_path / "res"
    resources.mkdir()
    bad = (
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: cass}\n"
        "spec:\n  type: state.cassandra\n  version: v1\n{ignore}"
        "  metadata:\n  - {name: hosts, value: localhost}\n"
    )
    (resources / "cass.yaml").write_text(bad.replace("{ignore}", ""), encoding="utf-8")
    ports = _ports()
    argv = [
        f"--dapr-http-port={ports['http']}",
        f"--dapr-grpc-port={ports['grpc']}",
        f"--metrics-port={ports['metrics']}",
        f"--resources-path={resources}",
    ]
    refused = Daprd(tmp_path, argv)
    assert refused.process.wait(timeout=30) == 2
    assert "spec.ignoreErrors is not true" in refused.log
    (resources / "cass.yaml").write_text(
        bad.replace("{ignore}", "  ignoreErrors: true\n"), encoding="utf-8"
    )
    daprd = Daprd(tmp_path, argv)
    started.append(daprd)
    daprd.wait_ready(f"http://127.0.0.1:{ports['http']}")
    assert "cass skipped (spec.ignoreErrors is true)" in daprd.log


def test_only_the_listen_addresses_given_are_bound_for_http_and_grpc(
    tmp_path: Path, started: list[Daprd]
) -> None:
    import grpc

    ports = _ports()
    daprd = Daprd(
        tmp_path,
        [
            "--dapr-listen-addresses=[::1],127.0.0.1",
            "--metrics-listen-address=127.0.0.1",
            f"--dapr-http-port={ports['http']}",
            f"--dapr-grpc-port={ports['grpc']}",
            f"--metrics-port={ports['metrics']}",
        ],
    )
    started.append(daprd)
    daprd.wait_ready(f"http://127.0.0.1:{ports['http']}")
    assert httpx.get(f"http://[::1]:{ports['http']}/v1.0/healthz").status_code == 204
    for address in ("127.0.0.1", "[::1]"):
        with grpc.insecure_channel(f"{address}:{ports['grpc']}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    # 127.0.0.2 is loopback too, but was not given: nothing answers there.
    for port in (ports["http"], ports["metrics"]):
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.2:{port}/v1.0/healthz", timeout=2)


def test_a_local_file_secret_store_resolves_and_an_edit_to_its_file_reloads(
    tmp_path: Path, started: list[Daprd]
) -> None:
    import json

    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"sqlite": {"path": str(tmp_path / "one.db")}}))
    resources = tmp_path / "res"
    resources.mkdir()
    (resources / "components.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: localsecrets}\n"
        "spec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n"
        f"  - {{name: secretsFile, value: '{secrets}'}}\n"
        "---\n"
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: db}\n"
        "spec:\n  type: state.sqlite\n  version: v1\n  metadata:\n"
        "  - name: connectionString\n    secretKeyRef: {name: 'sqlite:path', key: 'sqlite:path'}\n"
        "auth: {secretStore: localsecrets}\n",
        encoding="utf-8",
    )
    ports = _ports()
    daprd = Daprd(
        tmp_path,
        [
            f"--dapr-http-port={ports['http']}",
            f"--dapr-grpc-port={ports['grpc']}",
            f"--metrics-port={ports['metrics']}",
            f"--resources-path={resources}",
        ],
    )
    started.append(daprd)
    url = f"http://127.0.0.1:{ports['http']}"
    daprd.wait_ready(url)
    assert httpx.post(f"{url}/v1.0/state/db", json=[{"key": "k", "value": 1}]).status_code == 204
    assert (tmp_path / "one.db").exists()
    secrets.write_text(json.dumps({"sqlite": {"path": str(tmp_path / "two.db")}}))
    _wait(lambda: (tmp_path / "two.db").exists())
    _wait(lambda: httpx.get(f"{url}/v1.0/state/db/k").status_code == 204)
    # SIGTERM, as a process manager stops it: a clean exit 0 too.
    daprd.process.send_signal(signal.SIGTERM)
    assert daprd.process.wait(timeout=20) == 0, daprd.log
