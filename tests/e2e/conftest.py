"""Fixtures of the e2e tier: one real etcd + kube-apiserver for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.localcluster import LocalCluster, ensure_tools


@pytest.fixture(scope="session")
def k8s_bin_dir(pytestconfig: pytest.Config) -> Path:
    """Directory with etcd, kube-apiserver, kubectl and helm (built on first use)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is None:
        return ensure_tools()
    # The first build takes many minutes: let its progress lines reach the terminal / CI log.
    with capture.global_and_fixture_disabled():
        return ensure_tools()


@pytest.fixture(scope="session")
def cluster(k8s_bin_dir: Path) -> Iterator[LocalCluster]:
    """A running local control plane (admin kubeconfig at ``cluster.kubeconfig``)."""
    with LocalCluster(k8s_bin_dir) as running:
        yield running
