"""
Test helper (not a test module): a real daprd v1.18.1 process on free loopback ports.

daprd is the reference for every compatibility claim (the interop tier, the drop-in tier) and
bench/. scripts/daprd.sh builds it once into the statecar cache; `make test` runs that script
through scripts/bootstrap.sh, and a missing binary fails the run there (skips elsewhere, with
the reason; see `require.unavailable`).

Two things are never left to daprd's defaults, because both would reach beyond the machine:
- Name resolution: standalone daprd resolves over mDNS, which multicasts on every interface.
  Every daprd started here gets a Configuration whose `nameResolution.component` is
  `kubernetes` (it only resolves when asked; state calls never ask).
- Listeners: the API, metrics and internal gRPC listeners bind 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support import processes
from tests.support.ports import free_port
from tests.support.require import require

DAPRD_VERSION = "v1.18.1"

# daprd's Configuration, as the Dapr docs' "Name resolution" section describes it
# (docs.dapr.io/reference/resource-specs/configuration-schema/): the kubernetes resolver makes
# no network calls until a service invocation asks it to resolve a name.
LOOPBACK_CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: statecar-tests
spec:
  nameResolution:
    component: kubernetes
"""


def daprd_binary() -> str:
    """The cached daprd built by scripts/daprd.sh (skip or fail, per `require`, when absent)."""
    cache = Path(os.environ.get("STATECAR_CACHE", Path.home() / ".cache" / "statecar"))
    return require(
        f"daprd-{DAPRD_VERSION}",
        env="STATECAR_DAPRD",
        also_in=[cache / "bin"],
        hint="scripts/daprd.sh builds it (make bootstrap)",
    )


class DaprdProcess:
    """daprd standalone over `resources_path`, with an `app_id` and no app channel."""

    def __init__(
        self,
        resources_path: Path,
        *,
        app_id: str = "interop",
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        configuration: str = LOOPBACK_CONFIGURATION,
    ) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.internal_grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self._workdir = tempfile.TemporaryDirectory(prefix="statecar-daprd-")
        workdir = Path(self._workdir.name)
        config_path = workdir / "config.yaml"
        config_path.write_text(configuration)
        self.log_path = workdir / "daprd.log"
        self.command = [
            daprd_binary(),
            "--mode",
            "standalone",
            "--app-id",
            app_id,
            "--resources-path",
            str(resources_path),
            "--config",
            str(config_path),
            "--dapr-http-port",
            str(self.http_port),
            "--dapr-grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--dapr-internal-grpc-port",
            str(self.internal_grpc_port),
            "--dapr-listen-addresses",
            "127.0.0.1",
            "--metrics-listen-address",
            "127.0.0.1",
            "--dapr-internal-grpc-listen-address",
            "127.0.0.1",
            # No actors, no workflows: nothing to dial. An empty address turns each client off.
            "--placement-host-address",
            "",
            "--scheduler-host-address",
            "",
            "--log-level",
            "info",
            *args,
        ]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("DAPR_")}
        # HOME holds ~/.dapr (daprd reads nothing there with explicit paths; keep it private).
        environment["HOME"] = str(workdir)
        environment.update(env or {})
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.environment, stdout=log, stderr=log
            )
        # /v1.0/healthz answers 204 once every component has initialised.
        processes.wait_healthy(
            self.process,
            f"{self.url}/v1.0/healthz",
            lambda: self.log,
            name="daprd",
            timeout=timeout,
        )

    def stop(self) -> int:
        try:
            return 0 if self.process is None else processes.stop(self.process)
        finally:
            self._workdir.cleanup()


@contextlib.contextmanager
def running_daprd(resources_path: Path, **kwargs: Any) -> Iterator[DaprdProcess]:  # the keywords
    daprd = DaprdProcess(resources_path, **kwargs)
    try:
        daprd.start()
        yield daprd
    finally:
        daprd.stop()
