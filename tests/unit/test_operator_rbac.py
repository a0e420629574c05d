"""The documented RBAC: least privilege, in the shape the e2e tier binds."""

from __future__ import annotations

from typing import Any

from statecar_operator.manifests import rbac


def rules_for(resource: str) -> list[dict[str, Any]]:
    return [r for r in rbac.CLUSTER_RULES if resource in r["resources"]]


def test_secrets_can_only_be_changed_when_named_statecar_wiring() -> None:
    for rule in rules_for("secrets"):
        verbs = set(rule["verbs"])
        if verbs & {"update", "patch", "delete"}:
            assert rule["resourceNames"] == ["statecar-wiring"]
        else:
            assert verbs <= {"get", "list", "watch", "create"}


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
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    assert docs[1]["subjects"] == [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]
    role = docs[2]
    assert role["metadata"]["namespace"] == "ops"
    update = next(r for r in role["rules"] if "update" in r["verbs"])
    assert update["resourceNames"] == ["lease"]
