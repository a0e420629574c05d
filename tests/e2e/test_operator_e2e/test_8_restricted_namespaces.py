"""
The operator end to end, part 8: an operator restricted to chosen namespaces.

Runs last, after part 7 stopped the package's operators, so this one works alone. Its token is
bound to exactly what `statecar operator rbac --namespaces` prints (renamed only, so it cannot
clash with the package's own bindings): Roles in the chosen namespaces, nothing namespaced
cluster-wide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import Api, FailureContext, OperatorProcess, run_statecar
from tests.e2e.test_operator_e2e.helpers import (
    LIFECYCLE,
    SHOP,
    SYSTEM,
    component_manifest,
    timing,
    wait_condition,
    wired,
)

pytestmark = pytest.mark.e2e

SCOPED = "statecar-scoped"  # the ServiceAccount, the Lease, and the suffix of the RBAC names


def _renamed(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The printed RBAC with `-scoped` names (rules and subjects untouched)."""
    for document in documents:
        document["metadata"]["name"] += "-scoped"
        if "roleRef" in document:
            document["roleRef"]["name"] += "-scoped"
        if "policyName" in document.get("spec", {}):
            document["spec"]["policyName"] += "-scoped"
    return documents


@pytest.fixture(scope="module")
def scoped_kubeconfig(
    cluster: LocalCluster, crd: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str]]:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SCOPED, "namespace": SYSTEM},
        }
    )
    printed = run_statecar(
        "operator",
        "rbac",
        "--namespace",
        SYSTEM,
        "--service-account",
        SCOPED,
        "--lease-name",
        SCOPED,
        "--namespaces",
        LIFECYCLE,
    )
    rbac = yaml.safe_dump_all(_renamed([d for d in yaml.safe_load_all(printed) if d]))
    cluster.kubectl("apply", "-f", "-", input=rbac)
    token = cluster.kubectl("create", "token", SCOPED, "-n", SYSTEM, "--duration=1h").stdout.strip()
    kubeconfig = cluster.write_kubeconfig(
        tmp_path_factory.mktemp("scoped") / "kubeconfig", token, user=SCOPED
    )
    yield kubeconfig, token
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rbac, check=False)
    cluster.kubectl("delete", "sa", SCOPED, "-n", SYSTEM, "--ignore-not-found", check=False)


def test_the_restricted_rbac_grants_only_the_chosen_namespaces(
    cluster: LocalCluster, scoped_kubeconfig: tuple[Path, str]
) -> None:
    token = Api(cluster, scoped_kubeconfig[1])
    try:
        for verb, resource, attributes in (
            ("get", "secrets", {"namespace": LIFECYCLE, "name": "anything"}),
            ("watch", "statestorecomponents", {"group": "statecar.io", "namespace": LIFECYCLE}),
            ("create", "events", {"namespace": LIFECYCLE}),
        ):
            assert token.allowed(verb, resource, **attributes), (verb, resource, attributes)
        for verb, resource, attributes in (
            ("get", "secrets", {"namespace": SHOP, "name": "redis-auth"}),
            ("list", "secrets", {}),  # cluster-wide
            ("watch", "statestorecomponents", {"group": "statecar.io"}),  # cluster-wide
            ("watch", "statestorecomponents", {"group": "statecar.io", "namespace": SHOP}),
            ("create", "secrets", {"namespace": SHOP}),
            ("create", "events", {"namespace": SHOP}),
        ):
            assert not token.allowed(verb, resource, **attributes), (verb, resource, attributes)
    finally:
        token.close()


def test_a_restricted_operator_reconciles_its_namespaces_only(
    cluster: LocalCluster,
    api: Api,
    scoped_kubeconfig: tuple[Path, str],
    webhook_pki: tuple[Path, Path, Path],
    diagnostics: FailureContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """STATECAR_OPERATOR_NAMESPACES: kopf watches only LIFECYCLE, the reconciler wires it, a
    component elsewhere is left alone, and nothing the operator does is refused."""
    ca, cert, key = webhook_pki
    process = OperatorProcess(
        kubeconfig=scoped_kubeconfig[0],
        namespace=SYSTEM,
        workdir=tmp_path_factory.mktemp("scoped-log"),
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        identity="statecar-operator-scoped-0",
        extra_env={
            "STATECAR_OPERATOR_NAMESPACES": LIFECYCLE,
            "STATECAR_OPERATOR_LEASE_NAME": SCOPED,
        },
    )
    diagnostics.add("scoped operator log (tail)", process.log_tail)
    process.start()
    try:
        process.wait_ready()
        cluster.apply(component_manifest("scoped-in", LIFECYCLE, {"type": "state.in-memory"}))
        cluster.apply(component_manifest("scoped-out", SHOP, {"type": "state.in-memory"}))
        wait_condition(api, LIFECYCLE, "scoped-in", "Ready", "True")
        assert "scoped-in" in wired(api, LIFECYCLE)
        time.sleep(2)  # several resyncs: the other namespace's component stays untouched
        outside = api.component(SHOP, "scoped-out")
        assert outside is not None
        assert not (outside.get("status") or {}).get("conditions"), outside.get("status")
    finally:
        started = time.monotonic()
        code = process.stop()
        timing("shutdown of the restricted operator", time.monotonic() - started)
        diagnostics.remove("scoped operator log (tail)")
        for namespace, name in ((LIFECYCLE, "scoped-in"), (SHOP, "scoped-out")):
            cluster.kubectl(
                "delete", "ssc", name, "-n", namespace, "--ignore-not-found", check=False
            )
    assert code == 0, process.log_tail()
    refusals = [
        line
        for line in process.log().splitlines()
        if "forbidden" in line.lower() or " ERROR " in line
    ]
    assert refusals == [], "\n".join(refusals[:20])
