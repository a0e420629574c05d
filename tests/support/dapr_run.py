"""
Test helper (not a test module): `statecar daprd` started exactly as Dapr's own tooling starts daprd.

`dapr run` (github.com/dapr/cli, pkg/standalone/run.go `RunConfig.getArgs`/`getEnv`, cmd/run.go)
runs the first `daprd` it finds in `~/.dapr/bin` with the argument list of `dapr_run_argv` and the
CLI's own environment (plus `DAPR_HOST_IP=127.0.0.1` when started from a run file), then the app
through `sh -c 'exec "$@"'` with APP_ID, APP_CHANNEL_ADDRESS, APP_PORT, DAPR_HTTP_PORT,
DAPR_GRPC_PORT, DAPR_METRICS_PORT and APP_PROTOCOL added. `Daprd` installs that `~/.dapr/bin/daprd`
as a shim to `statecar daprd` (docs/daprd.md) and starts it with the argv and env given.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import processes
from tests.support.ports import free_port

#: `dapr init`'s ~/.dapr/config.yaml (pkg/standalone/standalone.go createDefaultConfiguration).
DEFAULT_CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprConfig
spec:
  tracing:
    samplingRate: "1"
    zipkin:
      endpointAddress: http://localhost:9411/api/v2/spans
"""


class Daprd:
    """`~/.dapr/bin/daprd` as a shim to `statecar daprd`, started with the given argv and env."""

    def __init__(self, home: Path, argv: list[str], env: dict[str, str] | None = None) -> None:
        shim = home / ".dapr" / "bin" / "daprd"
        shim.parent.mkdir(parents=True, exist_ok=True)
        shim.write_text(
            f'#!/bin/sh\nexec "{sys.executable}" -m statecar_cli.main daprd "$@"\n',
            encoding="utf-8",
        )
        shim.chmod(0o755)
        self.log_path = home / "daprd.log"
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("STATECAR_", "DAPR_"))
        }
        environment.update(env or {})
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(shim), *argv], env=environment, stdout=log, stderr=log
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        processes.wait_healthy(
            self.process, f"{url}/v1.0/healthz", lambda: self.log, name="daprd", timeout=timeout
        )


def dapr_home(home: Path, config: str = DEFAULT_CONFIG) -> Path:
    """`~/.dapr` as `dapr init` leaves it (its config.yaml), under `home`."""
    (home / ".dapr").mkdir(parents=True, exist_ok=True)
    (home / ".dapr" / "config.yaml").write_text(config, encoding="utf-8")
    return home


def free_ports() -> dict[str, int]:
    """The ports `dapr run` picks when none are given (`Validate`: -1 becomes a free port)."""
    return {name: free_port() for name in ("http", "grpc", "metrics", "internal")}


def dapr_run_argv(home: Path, resources: Path, app_id: str, ports: dict[str, int]) -> list[str]:
    """daprd's argv from `dapr run --app-id <id> --app-port 6001 --resources-path <dir> -- app`.

    `getArgsFromSchema` walks SharedRunConfig then RunConfig in field order; empty strings,
    false booleans and `ifneq` defaults are left out; ports of -1 get free ports (`Validate`)
    except the profile port, which is only picked with --enable-profiling; placement defaults to
    localhost:50005 and, for runtimes 1.15+, the scheduler to localhost:50006.
    """
    return [
        "--config",
        str(home / ".dapr" / "config.yaml"),
        "--app-protocol",
        "http",
        "--log-level",
        "info",
        "--app-max-concurrency",
        "-1",
        "--placement-host-address",
        "localhost:50005",
        "--resources-path",
        str(resources),
        "--max-body-size",
        "4Mi",
        "--read-buffer-size",
        "4Ki",
        "--scheduler-host-address",
        "localhost:50006",
        "--app-id",
        app_id,
        "--app-port",
        "6001",
        "--dapr-http-port",
        str(ports["http"]),
        "--dapr-grpc-port",
        str(ports["grpc"]),
        "--profile-port",
        "-1",
        "--metrics-port",
        str(ports["metrics"]),
        "--dapr-internal-grpc-port",
        str(ports["internal"]),
    ]
