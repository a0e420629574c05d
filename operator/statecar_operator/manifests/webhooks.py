"""
The Mutating (pod injection) and Validating (StateStoreComponent) webhook configurations that
point the API server at this operator, as data. Pure.

The chart renders the same objects (`charts/statecar/templates/webhooks.yaml`; a test compares
them), `statecar operator webhook-config` prints them, and the managed-certificate loop
(`webhook_tls.sources`) patches the `caBundle` of both by the names below.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_contract import components as contract
from statecar_operator.manifests.labels import MANAGED_BY, MANAGED_BY_LABEL

#: kopf serves each admission handler at `/<handler id>` (kopf `_kits/webhooks.py`, the
#: `{id}` route); the webhook configurations below must use the same paths.
INJECT_WEBHOOK_ID: Final = "inject-pods"
VALIDATE_WEBHOOK_ID: Final = "validate-statestorecomponents"
MUTATING_CONFIGURATION_NAME: Final = "statecar-injector"
VALIDATING_CONFIGURATION_NAME: Final = "statecar-validator"


def build_webhook_configurations(
    *,
    ca_bundle: bytes,
    url: str | None = None,
    service_name: str | None = None,
    service_namespace: str | None = None,
    service_port: int = 443,
    excluded_namespaces: Sequence[str] = ("kube-system", "kube-node-lease"),
    inject_failure_policy: str = "Fail",
    timeout_seconds: int = 10,
    namespaces: Sequence[str] = (),
    dapr_annotations: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The Mutating (pod injection) and Validating (components) webhook configurations.

    Point them at the operator by `url` (the API server calls https://<url>/<handler id>) or by
    Service. Pods are sent to the webhook only when they carry a `statecar.io/` annotation: the
    API server evaluates `matchConditions` (CEL, GA in Kubernetes 1.30:
    https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#matching-requests-matchconditions)
    before calling, so `failurePolicy: Fail` only holds back pods that asked for statecar, and
    every other pod is admitted even when the operator is down. The injector posts Events, so
    its side effects are `NoneOnDryRun` (no Event for a dry run). With `namespaces` (an
    operator restricted by STATECAR_OPERATOR_NAMESPACES), both webhooks see only those.
    """
    if (url is None) == (service_name is None):
        raise ValueError("pass either url or service_name")
    encoded_ca = base64.b64encode(ca_bundle).decode("ascii")

    def client_config(path: str) -> dict[str, Any]:
        if url is not None:
            return {"url": url.rstrip("/") + "/" + path, "caBundle": encoded_ca}
        return {
            "service": {
                "name": service_name,
                "namespace": service_namespace,
                "port": service_port,
                "path": "/" + path,
            },
            "caBundle": encoded_ca,
        }

    namespace_selector = {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": sorted(set(excluded_namespaces)),
            }
        ]
    }
    only_watched: list[dict[str, Any]] = (
        [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": sorted(set(namespaces)),
            }
        ]
        if namespaces
        else []
    )
    namespace_selector["matchExpressions"].extend(only_watched)
    labels = {MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/name": "statecar"}
    # With the Dapr-annotations option, Dapr's pods are sent too (the injector decides whether
    # it may serve them: `injection.plan.from_dapr_annotations`).
    dapr = f" || k == '{ann.DAPR_PREFIX}enabled'" if dapr_annotations else ""
    asks = (
        "has(object.metadata.annotations) && "
        f"object.metadata.annotations.exists(k, k.startsWith('{ann.PREFIX}'){dapr})"
    )
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING_CONFIGURATION_NAME, "labels": labels},
        "webhooks": [
            {
                "name": "inject.statecar.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config(INJECT_WEBHOOK_ID),
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "matchConditions": [{"name": "asks-for-statecar", "expression": asks}],
                "namespaceSelector": namespace_selector,
                "failurePolicy": inject_failure_policy,
                "sideEffects": "NoneOnDryRun",
                # A webhook running after ours may add containers; being called again gives
                # them the app env (Dapr's injector misses those: its check is by name only).
                "reinvocationPolicy": "IfNeeded",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": timeout_seconds,
            }
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATING_CONFIGURATION_NAME, "labels": labels},
        "webhooks": [
            {
                "name": "validate.statestorecomponents.statecar.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": client_config(VALIDATE_WEBHOOK_ID),
                "rules": [
                    {
                        "apiGroups": [contract.API_GROUP],
                        "apiVersions": [contract.API_VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [contract.PLURAL],
                        "scope": "Namespaced",
                    }
                ],
                # The CRD's schema already rejects most mistakes; when the operator is down,
                # the rest is reported in the component's status instead of blocking applies.
                "failurePolicy": "Ignore",
                **(
                    {"namespaceSelector": {"matchExpressions": only_watched}}
                    if only_watched
                    else {}
                ),
                "sideEffects": "None",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": timeout_seconds,
            }
        ],
    }
    return mutating, validating
