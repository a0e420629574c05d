"""
Bodies the operator builds, as pure functions: the per-namespace wiring Secret (in the shared
contract's format, `statecar_contract.wiring.encode`) and the webhook configurations that point
the API server at this operator. No I/O; `kube` writes what these return.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_contract import components as contract
from statecar_contract.components import ResolvedComponent
from statecar_contract.wiring import (
    WIRING_SECRET_NAME,
    Wiring,
    encode,
    encode_bytes,
    with_components,
)

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "statecar"
#: A custom Secret type says what the Secret is in `kubectl get secrets` and cannot be confused
#: with a user's Opaque Secret of the same name.
WIRING_SECRET_TYPE: Final = "statecar.io/wiring"  # noqa: S105  # a Secret type, not a credential
WIRING_LABELS: Final[Mapping[str, str]] = {
    MANAGED_BY_LABEL: MANAGED_BY,
    "app.kubernetes.io/name": "statecar",
    "app.kubernetes.io/component": "wiring",
}

#: kopf serves each admission handler at `/<handler id>` (kopf `_kits/webhooks.py`, the
#: `{id}` route); the webhook configurations below must use the same paths.
INJECT_WEBHOOK_ID: Final = "inject-pods"
VALIDATE_WEBHOOK_ID: Final = "validate-statestorecomponents"
MUTATING_CONFIGURATION_NAME: Final = "statecar-injector"
VALIDATING_CONFIGURATION_NAME: Final = "statecar-validator"


@dataclass(frozen=True)
class ComponentOwner:
    """A component the wiring Secret belongs to (an ownerReference, for garbage collection)."""

    name: str
    uid: str


def config_hash(wiring: Wiring, salt: str) -> str:
    """
    The wiring's identity as published on the Secret and on every injected pod.

    Keyed (HMAC-SHA256 with the per-namespace `salt` kept on the Secret): the wiring holds
    resolved passwords, and a plain hash on pods would let anyone who may read pods (far more
    people than may read Secrets) test password guesses offline.
    """
    digest = hmac.new(salt.encode(), encode_bytes(wiring), hashlib.sha256).hexdigest()
    return digest[:16]


def build_wiring(namespace: str, components: Sequence[ResolvedComponent]) -> Wiring:
    return with_components(namespace, components)


def build_wiring_secret(
    *,
    namespace: str,
    components: Sequence[ResolvedComponent],
    owners: Sequence[ComponentOwner],
    salt: str,
) -> dict[str, Any]:
    """The wiring Secret of `namespace`: every resolved component the sidecars may open."""
    wiring = build_wiring(namespace, components)
    data = {key: base64.b64encode(value).decode("ascii") for key, value in encode(wiring).items()}
    owner_references = [
        {
            "apiVersion": f"{contract.API_GROUP}/{contract.API_VERSION}",
            "kind": contract.KIND,
            "name": owner.name,
            "uid": owner.uid,
        }
        for owner in sorted(owners, key=lambda o: (o.name, o.uid))
    ]
    metadata: dict[str, Any] = {
        "name": WIRING_SECRET_NAME,
        "namespace": namespace,
        "labels": dict(WIRING_LABELS),
        "annotations": {
            ann.WIRING_CONFIG_HASH: config_hash(wiring, salt),
            ann.WIRING_SALT: salt,
        },
    }
    if owner_references:
        # With every component as an owner, Kubernetes' garbage collector removes the Secret
        # once the last component is gone even if the operator is not running then.
        metadata["ownerReferences"] = owner_references
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": WIRING_SECRET_TYPE,
        "metadata": metadata,
        "data": data,
    }


def is_managed(secret: Mapping[str, Any]) -> bool:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY_LABEL) == MANAGED_BY)


def salt_of(secret: Mapping[str, Any] | None) -> str | None:
    if secret is None:
        return None
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    salt = annotations.get(ann.WIRING_SALT)
    return salt if isinstance(salt, str) and salt else None


def hash_of(secret: Mapping[str, Any] | None) -> str | None:
    if secret is None:
        return None
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ann.WIRING_CONFIG_HASH)
    return value if isinstance(value, str) and value else None


def secret_differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether writing `desired` would change anything we own in `existing`."""
    old_meta, new_meta = existing.get("metadata") or {}, desired.get("metadata") or {}
    old_labels, old_annotations = old_meta.get("labels") or {}, old_meta.get("annotations") or {}
    return (
        (existing.get("data") or {}) != desired.get("data")
        or any(old_labels.get(k) != v for k, v in new_meta["labels"].items())
        or any(old_annotations.get(k) != v for k, v in new_meta["annotations"].items())
        or _owner_uids(old_meta) != _owner_uids(new_meta)
    )


def merge_for_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """`desired`, keeping what others added to the Secret's metadata and its resourceVersion."""
    old_meta = existing.get("metadata") or {}
    new_meta = dict(desired["metadata"])
    new_meta["labels"] = {**(old_meta.get("labels") or {}), **new_meta["labels"]}
    new_meta["annotations"] = {**(old_meta.get("annotations") or {}), **new_meta["annotations"]}
    if "resourceVersion" in old_meta:
        # An optimistic-concurrency update: a concurrent writer makes it fail with 409.
        new_meta["resourceVersion"] = old_meta["resourceVersion"]
    new_meta.setdefault("ownerReferences", [])
    return {**desired, "metadata": new_meta}


def _owner_uids(metadata: Mapping[str, Any]) -> list[str]:
    return sorted(str(o.get("uid")) for o in metadata.get("ownerReferences") or [])


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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """
    The Mutating (pod injection) and Validating (components) webhook configurations.

    Point them at the operator by `url` (the API server calls https://<url>/<handler id>) or by
    Service. Pods are sent to the webhook only when they carry a `statecar.io/` annotation: the
    API server evaluates `matchConditions` (CEL, GA in Kubernetes 1.30:
    https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#matching-requests-matchconditions)
    before calling, so `failurePolicy: Fail` only holds back pods that asked for statecar, and
    every other pod is admitted even when the operator is down. The injector posts Events, so
    its side effects are `NoneOnDryRun` (no Event for a dry run).
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
    labels = {MANAGED_BY_LABEL: MANAGED_BY, "app.kubernetes.io/name": "statecar"}
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
                "matchConditions": [
                    {
                        "name": "asks-for-statecar",
                        "expression": (
                            "has(object.metadata.annotations) && "
                            f"object.metadata.annotations.exists(k, k.startsWith('{ann.PREFIX}'))"
                        ),
                    }
                ],
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
                "sideEffects": "None",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": timeout_seconds,
            }
        ],
    }
    return mutating, validating
