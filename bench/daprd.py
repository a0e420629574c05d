"""
daprd v1.18.1 for bench/: where the binary is and the command line that keeps it on loopback.

bench/ imports nothing from tests/, so this is bench's own copy of the flags tests/support/daprd.py
uses (the binary comes from the same cache, built by scripts/daprd.sh):

- a Configuration whose `nameResolution.component` is `kubernetes`: standalone daprd otherwise
  resolves over mDNS, which multicasts on every interface (Dapr docs, "Name resolution");
- the API, metrics and internal gRPC listeners on 127.0.0.1 only;
- empty placement and scheduler addresses: no actors, no workflows, nothing to dial;
- no app channel (no `--app-port`): daprd serves its own API only, as statecar does.

`command()` only builds argv; bench/run.py spawns it pinned like the sidecar.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DAPRD_VERSION = "v1.18.1"

LOOPBACK_CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: statecar-bench
spec:
  nameResolution:
    component: kubernetes
"""


def binary() -> Path | None:
    """`$STATECAR_DAPRD`, else the statecar cache's daprd, else `daprd` on PATH; None if absent."""
    explicit = os.environ.get("STATECAR_DAPRD")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    cache = Path(os.environ.get("STATECAR_CACHE", Path.home() / ".cache" / "statecar"))
    for candidate in (cache / "bin" / f"daprd-{DAPRD_VERSION}", cache / "bin" / "daprd"):
        if candidate.is_file():
            return candidate
    found = shutil.which("daprd")
    return Path(found) if found else None


def command(
    daprd: Path,
    *,
    app_id: str,
    resources: Path,
    workdir: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    internal_grpc_port: int,
) -> list[str]:
    """daprd's argv; writes the loopback Configuration into `workdir`."""
    config = workdir / "daprd-config.yaml"
    config.write_text(LOOPBACK_CONFIGURATION)
    return [
        str(daprd),
        "--mode",
        "standalone",
        "--app-id",
        app_id,
        "--resources-path",
        str(resources),
        "--config",
        str(config),
        "--dapr-http-port",
        str(http_port),
        "--dapr-grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--dapr-internal-grpc-port",
        str(internal_grpc_port),
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--metrics-listen-address",
        "127.0.0.1",
        "--dapr-internal-grpc-listen-address",
        "127.0.0.1",
        "--placement-host-address",
        "",
        "--scheduler-host-address",
        "",
        "--log-level",
        "warn",
    ]


def environment(workdir: Path) -> dict[str, str]:
    """The caller's environment without DAPR_* variables, HOME private (daprd reads ~/.dapr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAPR_", "STATECAR_"))}
    env["HOME"] = str(workdir)
    return env
