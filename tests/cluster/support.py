"""Shared by the cluster tier's conftest and tests (one module, so one TIMINGS dict)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TIMINGS: dict[str, float] = {}


@dataclass
class Cluster:
    rc: Any  # the realcluster module
    kubeconfig: Path
    image: str
    redis_image: str

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return str(self.rc.kubectl(*args, check=check, input=input))

    def helm(self, *args: str) -> str:
        out = subprocess.run(
            [str(self.rc.BIN / "helm"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {out.stderr}")
        return out.stdout
