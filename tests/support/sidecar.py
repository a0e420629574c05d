"""
Test helper (not a test module): a real `statecar sidecar` process on free loopback ports.

Tests talk to it over real HTTP, exactly as an app in the pod would.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.support import processes
from tests.support.ports import free_port


class SidecarProcess:
    def __init__(
        self,
        *,
        app_id: str = "conformance",
        components_path: Path | None = None,
        wiring_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        python: str = sys.executable,
    ) -> None:
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.grpc_port = free_port()
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.ops_url = f"http://127.0.0.1:{self.metrics_port}"
        descriptor, log_name = tempfile.mkstemp(prefix="statecar-sidecar-", suffix=".log")
        os.close(descriptor)  # the process appends to it by name
        self.log_path = Path(log_name)
        command = [
            python,
            "-m",
            "statecar_cli.main",
            "sidecar",
            "--app-id",
            app_id,
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--grpc-port",
            str(self.grpc_port),
            *args,
        ]
        if components_path is not None:
            command += ["--components-path", str(components_path)]
        if wiring_file is not None:
            command += ["--wiring-file", str(wiring_file)]
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("STATECAR_", "DAPR_"))
        }
        environment.update(env or {})
        self.command = command
        self.environment = environment
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, *, wait_healthy: bool = True, timeout: float = 30) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.environment, stdout=log, stderr=log
            )
        processes.wait_healthy(
            self.process,
            f"{self.ops_url}/v1.0/healthz",
            lambda: self.log,
            name="sidecar",
            timeout=timeout,
            accept=(204,) if wait_healthy else (204, 500),
        )

    def stop(self) -> int:
        if self.process is None:
            return 0
        return processes.stop(self.process)


@contextlib.contextmanager
def running_sidecar(**kwargs: Any) -> Iterator[SidecarProcess]:  # SidecarProcess's keywords
    sidecar = SidecarProcess(**kwargs)
    try:
        sidecar.start()
        yield sidecar
    finally:
        sidecar.stop()
