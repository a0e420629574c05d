"""The documented RBAC: least privilege, in the shape the e2e tier binds."""

from __future__ import annotations

from typing import Any

from statecar_operator.manifests import rbac


def rules_for(resource: str) -> list[dict[str, Any]]:
    return [r for r in rbac.CLUSTER_RULES if resource in r["resources"]]


def test_secret_writes_are_narrowed_to_wiring_secrets_by_an_admission_policy() -> None:
    """RBAC cannot name the per-app wiring Secrets in advance: create/update/delete are granted
    on Secrets, never `patch`, and always with the policy that admits only wiring Secrets."""
    for rule in rules_for("secrets"):
        verbs = set(rule["verbs"])
        assert "patch" not in verbs
        assert verbs <= {"get", "list", "watch", "create", "update", "delete"}
    docs = rbac.manifests(namespace="ops", service_account="op", webhook_secret="op-tls")
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["secrets"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    (condition,) = spec["matchConditions"]
    assert condition["expression"] == "request.userInfo.username == 'system:serviceaccount:ops:op'"
    (validation,) = spec["validations"]
    expression = validation["expression"]
    assert "== 'statecar.io/wiring'" in expression
    assert "startsWith('statecar-wiring-')" in expression
    assert "request.namespace == 'ops'" in expression
    assert "request.operation != 'DELETE' && request.namespace == 'ops'" in expression
    assert "object.metadata.name == 'op-tls'" in expression
    # Without operator-managed certificates, no Secret but wiring ones.
    plain = rbac.secret_policy(namespace="ops", service_account="op")
    assert "request.namespace" not in plain[0]["spec"]["validations"][0]["expression"]


def test_components_are_read_and_only_their_status_written() -> None:
    (read,) = rules_for("statestorecomponents")
    assert read["verbs"] == ["get", "list", "watch"]
    (status,) = rules_for("statestorecomponents/status")
    assert status["verbs"] == ["patch"]


def test_no_rule_on_pods_webhooks_or_wildcards() -> None:
    for rule in rbac.CLUSTER_RULES:
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]
        assert not {"pods", "mutatingwebhookconfigurations", "namespaces"} & set(rule["resources"])


def test_manifests_bind_the_rules_to_the_service_account() -> None:
    docs = rbac.manifests(namespace="ops", service_account="op", lease_name="lease")
    kinds = [d["kind"] for d in docs]
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert docs[1]["subjects"] == [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]
    role = docs[2]
    assert role["metadata"]["namespace"] == "ops"
    update = next(r for r in role["rules"] if "update" in r["verbs"])
    assert update["resourceNames"] == ["lease"]


def test_restricted_to_namespaces_the_namespaced_rules_are_roles_there_only() -> None:
    documents = rbac.manifests(
        namespace="statecar-system",
        service_account="op",
        webhook_secret="statecar-webhook-tls",
        namespaces=["shop", "cart", "shop"],
    )
    cluster_role = next(d for d in documents if d["kind"] == "ClusterRole")
    # Nothing namespaced is granted cluster-wide: no Secret, component or Event anywhere else.
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert resources == {"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
    roles = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d
        for d in documents
        if d["kind"] == "Role"
    }
    for namespace in ("cart", "shop"):
        assert roles[namespace, rbac.WATCHED_ROLE_NAME]["rules"] == list(rbac.NAMESPACED_RULES)
        binding = next(
            d
            for d in documents
            if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == namespace
        )
        assert binding["roleRef"]["name"] == rbac.WATCHED_ROLE_NAME
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "op", "namespace": "statecar-system"}
        ]
    # The operator's own namespace: Lease, certificate Secret (read, create, update by name), Events.
    own = roles["statecar-system", rbac.ROLE_NAME]["rules"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]} in own
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]} in own
    assert len([d for d in documents if d["kind"] == "Role"]) == 3
    # Without operator-managed certificates, nothing granted cluster-wide at all (the admission
    # policy is cluster-scoped, but it only takes away).
    plain = rbac.manifests(namespace="statecar-system", service_account="op", namespaces=["shop"])
    assert [d["kind"] for d in plain] == [
        "Role",
        "RoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    # Unrestricted, the output is what it was: one ClusterRole with every rule.
    everywhere = rbac.manifests(namespace="statecar-system", service_account="op")
    assert [d["kind"] for d in everywhere] == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    assert everywhere[0]["rules"] == list(rbac.CLUSTER_RULES)
