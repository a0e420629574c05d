"""
The exact RBAC the operator needs, as data: the chart renders it and the e2e tier binds only
these rules to the operator's ServiceAccount (`statecar operator rbac` prints them as YAML).

Least privilege, rule by rule (each verb is used by the code named next to it):

* StateStoreComponents: `get, list, watch` (kopf's watch feeds the indexes; `cluster.kube` lists them
  once to know when the index is warm) and `patch` on `/status` only (the reconciler writes
  status; kopf writes nothing else: no finalizers, no progress annotations, see `reconciliation.reconciler`).
* Secrets, cluster-wide `get, list, watch`: resolving `secretKeyRef`s in any namespace, and the
  watch that re-renders the wiring when a referenced Secret changes (a rotated password).
  `create, update, delete`: the wiring Secrets of a namespace (`reconciliation.wiring_secret`:
  the shared `statecar-wiring` and one `statecar-wiring-<app>-<hash>` per scoped app id). RBAC
  can restrict `update`/`delete` by exact name only and `create` not at all, and the per-app
  names are not known at install time, so these verbs are granted on Secrets and narrowed by a
  ValidatingAdmissionPolicy (`secret_policy`), bound to the operator's ServiceAccount only: it
  may create, update and delete only Secrets of type `statecar.io/wiring` named like a wiring
  Secret (the type is immutable, so no user Secret can be turned into one), and its webhook
  certificate Secret. That is narrower than before (`create` used to be unrestricted).
* Events `create`: skipped pods, rejected pods and condition changes (kopf's own warnings too).
* CustomResourceDefinitions `list, watch`: kopf's resource observer notices the CRD being
  installed or upgraded after the operator started (without it kopf only scans at startup).
* Leases in the operator's namespace: `get, create`, and `update` of the one Lease it holds.

Only with operator-managed webhook certificates (`webhook_secret`, the chart's default mode;
`webhook_tls.sources` uses each verb):

* The certificate Secret in the operator's namespace: `update` of that one name (a namespaced
  Role). Reading and watching it are already covered by the cluster-wide Secret read above,
  and creating it by the cluster-wide `create`: RBAC cannot restrict `create` by name
  (https://kubernetes.io/docs/reference/access-authn-authz/rbac/#referring-to-resources).
* `statecar-injector` (mutating) and `statecar-validator` (validating), each by name and only
  under its own kind: `get` and `watch` (a watch with a `metadata.name` field selector is
  authorized by `resourceNames`), and `patch` of their caBundle. Not `list`, `update`,
  `create` or `delete`: the chart creates and deletes them, and no other webhook
  configuration of the cluster is readable or writable.

With the Dapr-annotations option (`dapr_annotations`, the chart's `dapr.annotations`): `get` and
`watch` of the MutatingWebhookConfiguration `dapr-sidecar-injector`, by name
(`cluster.dapr_injector`: statecar honours `dapr.io/*` annotations only while it is absent).

With the Dapr-components option (`dapr_components`, the chart's `dapr.components`): Dapr's
Components (`components.dapr.io`) `get, list, watch`, beside the StateStoreComponents; never
written (their status is Dapr's: the operator reports on them with Events only).

With stale-sidecar reporting (`stale_sidecars`): pods `get, list, watch` (kopf indexes the pods
labelled `statecar.io/injected=true`; never written). With the rollout (`auto_rollout`):
ReplicaSets `get` (a pod's Deployment), Deployments/StatefulSets/DaemonSets `get, patch` (the
`statecar.io/restartedAt` annotation) and PodDisruptionBudgets `list`.

Otherwise nothing on pods (admission gets the pod in the request), namespaces (kopf runs cluster-wide,
so it does not list them), or kopf's peering resources (peering is off; `cluster.leader` explains why).

Restricted to some namespaces (`namespaces=`, the operator's `STATECAR_OPERATOR_NAMESPACES`):
the namespaced rules above (`NAMESPACED_RULES`) are a Role + RoleBinding in each of those
namespaces instead of cluster-wide. kopf then runs in its restricted mode (no scanning: it
neither lists Namespaces nor watches CRDs, see `handlers.kopf_settings`), so the CRD rule goes
too, and a ClusterRole remains only for the two webhook configurations (mode operator). The
operator's own namespace also gets, in its Role, what the cluster-wide Secret read and create
covered: its webhook certificate Secret (`get, list, watch, create`, mode operator) and Events
about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from statecar_contract import components as contract
from statecar_contract.annotations import DAPR_INJECTOR_WEBHOOK
from statecar_contract.wiring import WIRING_SECRET_NAME
from statecar_operator.manifests.labels import WIRING_SECRET_TYPE
from statecar_operator.manifests.webhooks import (
    MUTATING_CONFIGURATION_NAME,
    VALIDATING_CONFIGURATION_NAME,
)

CLUSTER_ROLE_NAME: Final = "statecar-operator"
SECRET_POLICY_NAME: Final = "statecar-operator-secrets"  # noqa: S105  # a policy name, not a credential
ROLE_NAME: Final = "statecar-operator-leader-election"

NAMESPACED_RULES: Final[tuple[dict[str, Any], ...]] = (
    {
        "apiGroups": [contract.API_GROUP],
        "resources": [contract.PLURAL],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": [contract.API_GROUP],
        "resources": [f"{contract.PLURAL}/status"],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
    # Narrowed to wiring Secrets by `secret_policy` (RBAC cannot name them in advance).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
)
#: With the Dapr-components option: Dapr's Components, read like StateStoreComponents (never
#: written: no status, no finalizer).
DAPR_COMPONENT_RULES: Final[tuple[dict[str, Any], ...]] = (
    {"apiGroups": ["dapr.io"], "resources": ["components"], "verbs": ["get", "list", "watch"]},
)
#: With stale-sidecar reporting: injected pods, read (a label-selected watch; never written).
POD_RULES: Final[tuple[dict[str, Any], ...]] = (
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
)
#: With the rollout: a stale pod's ReplicaSet (to find its Deployment), the workloads (read, and
#: patched with `statecar.io/restartedAt`), and the PodDisruptionBudgets that may hold it back.
ROLLOUT_RULES: Final[tuple[dict[str, Any], ...]] = (
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets", "daemonsets"],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list"]},
)
CRD_RULES: Final[tuple[dict[str, Any], ...]] = (
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["list", "watch"],
    },
)
CLUSTER_RULES: Final[tuple[dict[str, Any], ...]] = (*NAMESPACED_RULES, *CRD_RULES)
WATCHED_ROLE_NAME: Final = "statecar-operator"


def webhook_configuration_rules() -> tuple[dict[str, Any], ...]:
    """Cluster rules for the caBundle of the operator's two webhook configurations."""
    return tuple(
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": [resource],
            "resourceNames": [name],
            "verbs": ["get", "watch", "patch"],
        }
        for resource, name in (
            ("mutatingwebhookconfigurations", MUTATING_CONFIGURATION_NAME),
            ("validatingwebhookconfigurations", VALIDATING_CONFIGURATION_NAME),
        )
    )


def dapr_injector_rules() -> tuple[dict[str, Any], ...]:
    """With the Dapr-annotations option: whether Dapr's injector is installed, by its one name."""
    return (
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": [DAPR_INJECTOR_WEBHOOK],
            "verbs": ["get", "watch"],
        },
    )


def webhook_secret_rules(secret_name: str) -> tuple[dict[str, Any], ...]:
    """Namespaced rules for the Secret of the operator-managed webhook certificate."""
    return (
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret_name],
            "verbs": ["update"],
        },
    )


def _written(variable: str) -> str:
    """CEL: the Secret as written (`object`), or as it was for a DELETE (`oldObject`)."""
    return f"(request.operation == 'DELETE' ? oldObject : object).{variable}"


def secret_policy(
    *,
    namespace: str,
    service_account: str,
    webhook_secret: str | None = None,
    name: str = SECRET_POLICY_NAME,
) -> list[dict[str, Any]]:
    """
    A ValidatingAdmissionPolicy and its binding: the operator's ServiceAccount may create,
    update and delete only wiring Secrets (their type and name prefix) and, in its own
    namespace, create and update its webhook certificate Secret. Everyone else is not matched at all
    (`matchConditions` on the username), so the policy costs nothing for other requests.
    """
    user = f"system:serviceaccount:{namespace}:{service_account}"
    wiring = (
        f"has({_written('type')}) && {_written('type')} == '{WIRING_SECRET_TYPE}' && "
        f"({_written('metadata.name')} == '{WIRING_SECRET_NAME}' || "
        f"{_written('metadata.name')}.startsWith('{WIRING_SECRET_NAME}-')) && "
        # An update keeps the type (Secrets' type is immutable): checked anyway, on both sides.
        f"(request.operation != 'UPDATE' || (has(oldObject.type) && "
        f"oldObject.type == '{WIRING_SECRET_TYPE}'))"
    )
    allowed = wiring
    if webhook_secret:
        # Created and rotated, never deleted (the chart or an admin does that).
        allowed = (
            f"({wiring}) || (request.operation != 'DELETE' && request.namespace == '{namespace}' "
            f"&& object.metadata.name == '{webhook_secret}')"
        )
    labels = {"app.kubernetes.io/name": "statecar", "app.kubernetes.io/component": "operator"}
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE", "DELETE"],
                            "resources": ["secrets"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "statecar-operator",
                        "expression": f"request.userInfo.username == '{user}'",
                    }
                ],
                "validations": [
                    {
                        "expression": allowed,
                        "message": (
                            "statecar's operator may write only its wiring Secrets (type "
                            f"{WIRING_SECRET_TYPE}, named {WIRING_SECRET_NAME} or "
                            f"{WIRING_SECRET_NAME}-*) and its webhook certificate Secret"
                        ),
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        },
    ]


def lease_rules(lease_name: str) -> tuple[dict[str, Any], ...]:
    return (
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease_name],
            "verbs": ["update"],
        },
    )


def manifests(
    *,
    namespace: str,
    service_account: str,
    lease_name: str = "statecar-operator",
    webhook_secret: str | None = None,
    namespaces: Sequence[str] = (),
    dapr_annotations: bool = False,
    dapr_components: bool = False,
    stale_sidecars: bool = False,
    auto_rollout: bool = False,
) -> list[dict[str, Any]]:
    """
    ClusterRole + Role and their bindings to `service_account` in `namespace`; with
    `webhook_secret` (operator-managed certificates), the rules that mode needs as well; with
    `namespaces`, the namespaced rules as a Role in each of them instead of cluster-wide.
    """
    watched = sorted(set(namespaces))
    namespaced_rules = [
        *NAMESPACED_RULES,
        *(DAPR_COMPONENT_RULES if dapr_components else ()),
        *(POD_RULES if stale_sidecars or auto_rollout else ()),
        *(ROLLOUT_RULES if auto_rollout else ()),
    ]
    cluster_rules = [
        *(() if watched else (*namespaced_rules, *CRD_RULES)),
        *(webhook_configuration_rules() if webhook_secret else ()),
        *(dapr_injector_rules() if dapr_annotations else ()),
    ]
    own_namespace_rules: list[dict[str, Any]] = []
    if watched:
        if webhook_secret:
            own_namespace_rules.append(
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}
            )
            own_namespace_rules.append(
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}
            )
        own_namespace_rules.append(
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
        )
    namespace_rules = [
        *lease_rules(lease_name),
        *(webhook_secret_rules(webhook_secret) if webhook_secret else ()),
        *own_namespace_rules,
    ]
    labels = {"app.kubernetes.io/name": "statecar", "app.kubernetes.io/component": "operator"}
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]
    cluster: list[dict[str, Any]] = (
        [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": CLUSTER_ROLE_NAME, "labels": labels},
                "rules": [dict(rule) for rule in cluster_rules],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": CLUSTER_ROLE_NAME, "labels": labels},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": CLUSTER_ROLE_NAME,
                },
                "subjects": subject,
            },
        ]
        if cluster_rules
        else []  # restricted, certificates not managed: nothing cluster-wide at all
    )
    return [
        *cluster,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ROLE_NAME, "namespace": namespace, "labels": labels},
            "rules": [dict(rule) for rule in namespace_rules],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE_NAME, "namespace": namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
            "subjects": subject,
        },
        *(
            document
            for watched_namespace in watched
            for document in (
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {
                        "name": WATCHED_ROLE_NAME,
                        "namespace": watched_namespace,
                        "labels": labels,
                    },
                    "rules": [dict(rule) for rule in namespaced_rules],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {
                        "name": WATCHED_ROLE_NAME,
                        "namespace": watched_namespace,
                        "labels": labels,
                    },
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": WATCHED_ROLE_NAME,
                    },
                    "subjects": subject,
                },
            )
        ),
        *secret_policy(
            namespace=namespace, service_account=service_account, webhook_secret=webhook_secret
        ),
    ]
