"""The local control plane is real: storage, kubectl, TokenRequest and RBAC all work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.e2e.localcluster import KubectlError, LocalCluster

pytestmark = pytest.mark.e2e

NAMESPACE = "e2e-localcluster"


def test_server_version(cluster: LocalCluster) -> None:
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    server = out["serverVersion"]
    assert server["major"] == "1"
    assert server["gitVersion"].startswith("v1.")
    assert out["clientVersion"]["gitVersion"] == server["gitVersion"]


def test_namespace_and_configmap(cluster: LocalCluster) -> None:
    cluster.create_namespace(NAMESPACE)
    cluster.kubectl(
        "-n", NAMESPACE, "create", "configmap", "greeting", "--from-literal=hello=world"
    )
    cm = json.loads(
        cluster.kubectl("-n", NAMESPACE, "get", "configmap", "greeting", "-o", "json").stdout
    )
    assert cm["data"] == {"hello": "world"}


def test_service_account_token_is_subject_to_rbac(cluster: LocalCluster, tmp_path: Path) -> None:
    cluster.create_namespace(NAMESPACE)
    cluster.kubectl("-n", NAMESPACE, "create", "serviceaccount", "nobody")
    token = cluster.kubectl(
        "-n", NAMESPACE, "create", "token", "nobody", "--duration=10m"
    ).stdout.strip()
    assert token.count(".") == 2  # a JWT from the TokenRequest API

    sa_config = cluster.write_kubeconfig(tmp_path / "nobody.kubeconfig", token, user="nobody")
    # Authenticated as the ServiceAccount ...
    who = json.loads(cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_config).stdout)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{NAMESPACE}:nobody"
    # ... and forbidden by RBAC, which grants it nothing.
    with pytest.raises(KubectlError) as denied:
        cluster.kubectl("-n", NAMESPACE, "get", "secrets", kubeconfig=sa_config)
    assert "forbidden" in denied.value.stderr.lower()
    can = cluster.kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        NAMESPACE,
        f"--as=system:serviceaccount:{NAMESPACE}:nobody",
        check=False,
    )
    assert can.stdout.strip() == "no"
    # The admin token (system:masters) is not.
    cluster.kubectl("-n", NAMESPACE, "get", "secrets")
