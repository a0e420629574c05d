"""
The operator end to end, part 6: least privilege.

Runs after parts 1-5 on the fixtures they share (`conftest.py`).
"""

from __future__ import annotations

import copy

import pytest
import yaml
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    OperatorProcess,
)
from tests.e2e.test_operator_e2e.helpers import (
    SERVICE_ACCOUNT,
    SHOP,
    SYSTEM,
    WIRING,
    OperatorIdentity,
)

pytestmark = pytest.mark.e2e


#: What the operator's token may do (from `statecar operator rbac`), as access-review attributes.
GRANTED = [
    ("watch", "statestorecomponents", {"group": "statecar.io"}),
    (
        "patch",
        "statestorecomponents",
        {"group": "statecar.io", "subresource": "status", "namespace": SHOP},
    ),
    ("get", "secrets", {"namespace": SHOP, "name": "redis-auth"}),
    ("create", "secrets", {"namespace": SHOP}),
    ("update", "secrets", {"namespace": SHOP, "name": WIRING}),
    ("delete", "secrets", {"namespace": SHOP, "name": WIRING}),
    ("create", "events", {"namespace": SHOP}),
    ("watch", "pods", {"namespace": SHOP}),
    ("patch", "deployments", {"group": "apps", "namespace": SHOP}),
    ("list", "poddisruptionbudgets", {"group": "policy", "namespace": SHOP}),
    (
        "update",
        "leases",
        {"group": "coordination.k8s.io", "namespace": SYSTEM, "name": "statecar-operator"},
    ),
]
#: ... and a selection of what it must not: the rules grant nothing of it.
DENIED = [
    # Pods are read only (stale-sidecar reporting, part 5e), never written.
    ("create", "pods", {"namespace": SHOP}),
    ("update", "pods", {"namespace": SHOP}),
    ("delete", "pods", {"namespace": SHOP}),
    # Workloads are read and patched (the opt-in rollout), nothing more.
    ("update", "deployments", {"group": "apps", "namespace": SHOP}),
    ("delete", "deployments", {"group": "apps", "namespace": SHOP}),
    ("create", "deployments", {"group": "apps", "namespace": SHOP}),
    ("delete", "poddisruptionbudgets", {"group": "policy", "namespace": SHOP}),
    ("list", "namespaces", {}),
    # Secrets' create/update/delete are granted (per-app wiring names are not known in advance)
    # and narrowed by the admission policy: see the real refusals below. Never patch.
    ("patch", "secrets", {"namespace": SHOP, "name": "redis-auth"}),
    ("patch", "statestorecomponents", {"group": "statecar.io", "namespace": SHOP}),
    ("delete", "statestorecomponents", {"group": "statecar.io", "namespace": SHOP}),
    ("create", "mutatingwebhookconfigurations", {"group": "admissionregistration.k8s.io"}),
    ("update", "leases", {"group": "coordination.k8s.io", "namespace": SYSTEM, "name": "other"}),
    ("get", "leases", {"group": "coordination.k8s.io", "namespace": SHOP}),
    ("create", "customresourcedefinitions", {"group": "apiextensions.k8s.io"}),
    ("create", "clusterrolebindings", {"group": "rbac.authorization.k8s.io"}),
]


def _typed_secret(name: str, namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "statecar.io/wiring",
        "metadata": {"name": name, "namespace": namespace},
        "data": {},
    }


def test_operator_ran_on_a_least_privilege_token(
    cluster: LocalCluster,
    api: Api,
    operator: OperatorProcess,
    operator_identity: OperatorIdentity,
) -> None:
    """Everything above was done by an operator whose token is bound only to the documented
    rules: it met no refusal, and the token is refused what the rules leave out."""
    token = Api(cluster, operator_identity.token)
    try:
        review = token.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review["status"]["userInfo"]["username"] == operator_identity.username

        # Bound to the printed rules and nothing else.
        printed = [d for d in yaml.safe_load_all(operator_identity.rbac_yaml) if d]
        rbac_api = "/apis/rbac.authorization.k8s.io/v1"
        bindings = [
            (kind, item)
            for kind, plural in (
                ("ClusterRoleBinding", "clusterrolebindings"),
                ("RoleBinding", "rolebindings"),
            )
            for item in (api.get(f"{rbac_api}/{plural}") or {}).get("items") or []
        ]
        ours = sorted(
            (kind, b["metadata"]["name"])
            for kind, b in bindings
            if any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == SERVICE_ACCOUNT
                and s.get("namespace") == SYSTEM
                for s in b.get("subjects") or []
            )
        )
        assert ours == sorted(
            (d["kind"], d["metadata"]["name"])
            for d in printed
            if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        )

        for verb, resource, attributes in GRANTED:
            assert token.allowed(verb, resource, **attributes), (verb, resource, attributes)
        for verb, resource, attributes in DENIED:
            assert not token.allowed(verb, resource, **attributes), (verb, resource, attributes)
    finally:
        token.close()

    # Refused for real, not only on paper.
    kubeconfig = operator_identity.kubeconfig
    args: tuple[str, ...]
    for args in (
        ("delete", "secret", "redis-auth", "-n", SHOP),
        ("run", "intruder", "--image=example.com/x:1", "-n", SHOP),
        ("delete", "pods", "--all", "-n", SHOP),
    ):
        refused = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False)
        assert refused.returncode != 0, (args, refused)
        assert "forbidden" in refused.stderr.lower(), (args, refused)
    # The admission policy: the operator's token writes no Secret but wiring ones, whatever
    # RBAC grants. A user's Secret cannot be changed, deleted, nor one made up ...
    policy = "statecar-operator-secrets"
    user_secret = api.secret(SHOP, "redis-auth")
    assert user_secret is not None
    relabelled = copy.deepcopy(user_secret)
    relabelled["metadata"].setdefault("labels", {})["app.kubernetes.io/component"] = "wiring"
    relabelled["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "statecar"
    changed = copy.deepcopy(user_secret)
    changed["data"]["password"] = "b3duZWQ="
    attempts: list[tuple[tuple[str, ...], str | None]] = [
        # `update` (kubectl replace): RBAC grants it, the policy refuses it.
        (("replace", "-f", "-"), yaml.safe_dump(changed)),
        (("replace", "-f", "-"), yaml.safe_dump(relabelled)),
        (("delete", "secret", "redis-auth", "-n", SHOP), None),
        (("create", "secret", "generic", "made-up", "-n", SHOP, "--from-literal=a=b"), None),
        # ... not even one named like a wiring Secret, unless of the wiring type (immutable).
        (
            ("create", "secret", "generic", "statecar-wiring-x", "-n", SHOP, "--from-literal=a=b"),
            None,
        ),
        (("create", "-f", "-"), yaml.safe_dump(_typed_secret("intruder", SHOP))),
    ]
    for args, stdin in attempts:
        refused = cluster.kubectl(*args, kubeconfig=kubeconfig, check=False, input=stdin)
        assert refused.returncode != 0, (args, refused)
        assert policy in refused.stderr, (args, refused.stderr)
    assert api.secret(SHOP, "redis-auth") is not None
    # ... while wiring Secrets are the operator's to write (a throwaway one of its own kind).
    probe = _typed_secret("statecar-wiring-probe", SHOP)
    cluster.kubectl("create", "-f", "-", kubeconfig=kubeconfig, input=yaml.safe_dump(probe))
    cluster.kubectl("delete", "secret", "statecar-wiring-probe", "-n", SHOP, kubeconfig=kubeconfig)

    # The operator did all of the above without once being refused, and is still healthy.
    refusals = [
        line
        for line in operator.log().splitlines()
        # kube.KubeError and kopf both say "Forbidden" for a 403 (a bare "403" also matches
        # timestamps and byte counts in the access log).
        if "forbidden" in line.lower()
    ]
    assert refusals == [], "the documented RBAC was not enough:\n" + "\n".join(refusals[:20])
    assert operator.running
    assert operator.readyz()["ready"] is True
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/statecar-operator")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == operator.identity
