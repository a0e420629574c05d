"""The committed gRPC code is exactly what `make protos` generates from the vendored protos."""

from __future__ import annotations

import filecmp
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "sidecar" / "statecar_sidecar" / "_protos"


def _files(folder: Path) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.skipif(
    importlib.util.find_spec("grpc_tools") is None,
    reason="grpcio-tools (the dev extra) is not installed",
)
def test_generated_code_matches_the_vendored_protos(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)], check=True
    )
    fresh = tmp_path / "statecar_sidecar" / "_protos"
    assert _files(fresh) == _files(COMMITTED), "run `make protos` and commit the result"
    differing = [
        name
        for name in sorted(_files(fresh))
        if not filecmp.cmp(fresh / name, COMMITTED / name, shallow=False)
    ]
    assert not differing, f"generated code differs from protos/ in {differing}: run `make protos`"


def test_the_pin_is_written_down() -> None:
    readme = (ROOT / "protos" / "README.md").read_text()
    assert "v1.18.3" in readme
    for proto in (ROOT / "protos").rglob("*.proto"):
        assert "Licensed under the Apache License, Version 2.0" in proto.read_text(), proto
