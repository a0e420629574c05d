"""
Helpers of the operator's e2e tests (tests/e2e/test_operator_e2e/ and test_helm_e2e.py); not a test module.

* `OperatorProcess`: `statecar operator` as a child process, configured only through its
  `STATECAR_OPERATOR_*` environment and a kubeconfig (exactly what a Deployment would give it),
  with its log in a file and `/readyz` as the readiness gate.
* `Api`: fast reads of the local API server over HTTPS (polling with kubectl would fork a Go
  binary several times a second on a two-core machine); writes stay with kubectl, as a user's.
* `wait_for`: a bounded wait whose failure names what was awaited and what was last seen;
  `wait_for_object` waits the same way for an object that must exist.
* `FailureContext`: a pytest plugin, registered by a fixture, that appends the tails of the
  operator's and sidecars' logs to the report of every failed test of one module.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.e2e.localcluster import LocalCluster
from tests.support.ports import free_port

T = TypeVar("T")

STATECAR = [sys.executable, "-m", "statecar_cli.main"]


class WaitTimeout(AssertionError):
    """A bounded wait ran out (an AssertionError, so pytest shows it as a test failure)."""


def wait_for(
    what: str,
    observe: Callable[[], T],
    until: Callable[[T], bool] = bool,
    *,
    timeout: float,
    interval: float = 0.25,
) -> T:
    """Call `observe` until `until(value)`; return that value, or fail naming the last one."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last: object = "<nothing observed>"
    while True:
        try:
            value = observe()
        except Exception as exc:  # noqa: BLE001  # an observation may fail transiently: retry
            last = f"<{type(exc).__name__}: {exc}>"
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            shown = repr(last) if not isinstance(last, str) else last
            raise WaitTimeout(
                f"timed out after {time.monotonic() - started:.1f}s waiting for {what}; "
                f"last observed: {shown[:3000]}"
            )
        time.sleep(interval)


def wait_for_object(
    what: str,
    observe: Callable[[], dict[str, Any] | None],
    until: Callable[[dict[str, Any]], bool] = bool,
    *,
    timeout: float,
    interval: float = 0.25,
) -> dict[str, Any]:
    """`wait_for` an object read from the API server (None while absent) to exist and pass
    `until`; what it returns is typed as present."""
    found = wait_for(
        what,
        observe,
        lambda value: value is not None and until(value),
        timeout=timeout,
        interval=interval,
    )
    assert found is not None  # the predicate above passes no None
    return found


def run_statecar(*args: str, input: str | None = None, timeout: float = 60) -> str:
    """`statecar ARGS` from this checkout; returns stdout, fails with stderr on a non-zero exit."""
    proc = subprocess.run(
        [*STATECAR, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"statecar {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


class Api:
    """GET/POST against the API server with one bearer token (the admin's unless given)."""

    def __init__(self, cluster: LocalCluster, token: str | None = None) -> None:
        self._client = httpx.Client(
            base_url=cluster.url,
            verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
            headers={"Authorization": f"Bearer {token or cluster.token}"},
            timeout=15,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, **params: str) -> dict[str, Any] | None:
        """The object at `path`, or None for 404."""
        response = self._client.get(path, params=params or None)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self._client.post(path, json=dict(body))
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    # -- shorthands -----------------------------------------------------------------------

    def component(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(
            f"/apis/statecar.io/v1alpha1/namespaces/{namespace}/statestorecomponents/{name}"
        )

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{namespace}/pods/{name}")

    def events(
        self, namespace: str, *, name: str | None = None, reason: str | None = None
    ) -> list[dict[str, Any]]:
        selectors = []
        if name:
            selectors.append(f"involvedObject.name={name}")
        if reason:
            selectors.append(f"reason={reason}")
        params = {"fieldSelector": ",".join(selectors)} if selectors else {}
        found = self.get(f"/api/v1/namespaces/{namespace}/events", **params) or {}
        items: list[dict[str, Any]] = found.get("items") or []
        return items

    def allowed(self, verb: str, resource: str, **attributes: str) -> bool:
        """SelfSubjectAccessReview: may this token `verb` `resource` (group, namespace, name...)?"""
        review = self.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": verb, "resource": resource, **attributes}},
            },
        )
        return bool(review["status"].get("allowed"))


def condition(component: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    """The condition `kind` of a component's status ({} when absent)."""
    for item in ((component or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return {}


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class OperatorProcess:
    """`statecar operator`, run as a Deployment's container would run it, on free ports."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        workdir: Path,
        cert_file: Path,
        key_file: Path,
        ca_file: Path,
        identity: str = "statecar-operator-e2e-0",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.identity = identity
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.log_path = workdir / f"{identity}.log"
        self.settings = {
            "STATECAR_OPERATOR_NAMESPACE": namespace,
            "STATECAR_OPERATOR_POD_NAME": identity,
            "STATECAR_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
            "STATECAR_OPERATOR_WEBHOOK_PORT": str(self.webhook_port),
            "STATECAR_OPERATOR_WEBHOOK_CERT": str(cert_file),
            "STATECAR_OPERATOR_WEBHOOK_KEY": str(key_file),
            "STATECAR_OPERATOR_WEBHOOK_CA": str(ca_file),
            "STATECAR_OPERATOR_HEALTH_ADDR": "127.0.0.1",
            "STATECAR_OPERATOR_HEALTH_PORT": str(self.health_port),
            # Re-measure backends every second so condition flips are quick to observe.
            "STATECAR_OPERATOR_RESYNC_SECONDS": "1",
            "STATECAR_OPERATOR_PROBE_TIMEOUT_SECONDS": "1",
            "STATECAR_OPERATOR_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            # Nothing of the test runner's own configuration leaks in: no in-cluster hints, no
            # other kubeconfig, no operator settings but ours.
            if not k.startswith(("STATECAR_", "KUBERNETES_", "KUBECONFIG"))
        }
        env["KUBECONFIG"] = str(self.kubeconfig)
        env.update(self.settings)
        return env

    def start(self) -> OperatorProcess:
        assert self.process is None, "already started"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*STATECAR, "operator"],
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def readyz(self) -> dict[str, Any]:
        response = httpx.get(f"{self.health_url}/readyz", timeout=3, trust_env=False)
        result: dict[str, Any] = response.json()
        return result

    def healthz(self) -> int:
        return httpx.get(f"{self.health_url}/healthz", timeout=3, trust_env=False).status_code

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        """Until `/readyz` is green and this replica holds the Lease (it is the only one)."""

        def observe() -> dict[str, Any]:
            if not self.running:
                assert self.process is not None
                raise AssertionError(
                    f"the operator exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            return self.readyz()

        try:
            return wait_for(
                "the operator's /readyz to be green with the Lease held",
                observe,
                lambda body: bool(body.get("ready")) and bool(body.get("leader")),
                timeout=timeout,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- operator log ---\n{self.log_tail()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        return tail(self.log_path, lines)

    def kill(self) -> None:
        """SIGKILL, as a crashed or evicted replica: no cleanup, the Lease is not handed back."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def stop(self, grace: float = 20) -> int | None:
        """SIGTERM, then SIGKILL after `grace`; the exit code (None if not running here)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace)
        return process.returncode


class FailureContext:
    """A pytest plugin: adds named log tails to the report of a failed test under `module_path`
    (a test module, or a folder of them)."""

    def __init__(self, module_path: Path) -> None:
        self.module_path = module_path
        self.sources: dict[str, Callable[[], str]] = {}

    def add(self, name: str, source: Callable[[], str]) -> None:
        self.sources[name] = source

    def remove(self, name: str) -> None:
        self.sources.pop(name, None)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.failed and self.module_path in (item.path, *item.path.parents):
            for name, source in list(self.sources.items()):
                try:
                    text = source()
                except Exception as exc:  # noqa: BLE001  # diagnostics must not mask the failure
                    text = f"<unavailable: {exc}>"
                report.sections.append((name, text))
        return report


def subset_mismatches(want: Any, have: Any, path: str = "") -> list[str]:
    """Where `have` lacks something of `want` (dicts: every key of want; lists: element-wise)."""
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return [f"{path or '.'}: expected an object, got {have!r}"]
        problems: list[str] = []
        for key, value in want.items():
            if key not in have:
                problems.append(f"{path}.{key}: missing (expected {value!r})")
            else:
                problems.extend(subset_mismatches(value, have[key], f"{path}.{key}"))
        return problems
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return [f"{path}: expected {want!r}, got {have!r}"]
        return [
            p
            for index, (w, h) in enumerate(zip(want, have, strict=True))
            for p in subset_mismatches(w, h, f"{path}[{index}]")
        ]
    return [] if want == have else [f"{path}: expected {want!r}, got {have!r}"]


def env_of(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's env as {name: value or valueFrom}."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def names(items: Iterable[Mapping[str, Any]] | None) -> list[str]:
    return [str(item.get("name")) for item in items or []]
