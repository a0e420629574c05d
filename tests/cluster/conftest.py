"""The real-pod tier: a single-node cluster (containerd + runc + kubelet) on this machine.

Runs only when STATECAR_CLUSTER_TESTS=1 (`make cluster-test`): it needs root, the Debian
packages containerd, runc, containernetworking-plugins, buildah and mmdebstrap, and the Go-built
node components (`scripts/k8s-tools.sh --cluster`). The session builds the project's image from
its Dockerfile (scripts/cluster/image.sh, cached), starts the cluster
(scripts/cluster/realcluster.py), and tears it down completely at the end, also on failure.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from tests.cluster.support import REPO, TIMINGS, Cluster

ENABLED = os.environ.get("STATECAR_CLUSTER_TESTS") == "1"

if not ENABLED:
    collect_ignore_glob = ["test_*.py"]


def _load_realcluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "realcluster", REPO / "scripts" / "cluster" / "realcluster.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["realcluster"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("the cluster tier runs a kubelet and containerd: it needs root")
    rc = _load_realcluster()
    started = time.monotonic()
    archive, ref = rc.build_image()
    redis_archive, redis_ref = rc.build_image("redis")
    TIMINGS["image build (Dockerfile + redis)"] = time.monotonic() - started
    started = time.monotonic()
    kubeconfig = rc.up()
    try:
        TIMINGS["cluster up (etcd -> node Ready)"] = time.monotonic() - started
        started = time.monotonic()
        rc.import_image(archive, ref)
        rc.import_image(redis_archive, redis_ref)
        TIMINGS["image import into containerd"] = time.monotonic() - started
        yield Cluster(rc, kubeconfig, ref, redis_ref)
    finally:
        started = time.monotonic()
        rc.down()
        TIMINGS["teardown"] = time.monotonic() - started


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "cluster tier timings")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name:55} {seconds:7.1f} s")
