"""
The per-namespace wiring Secret, as pure functions: its body (in the shared contract's format,
`statecar_contract.wiring.encode`), its keyed config hash, and how to tell whether the stored
one differs. No I/O; the reconciler writes what these return through `cluster.kube`.
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
from statecar_operator.manifests.labels import MANAGED_BY, MANAGED_BY_LABEL

#: A custom Secret type says what the Secret is in `kubectl get secrets` and cannot be confused
#: with a user's Opaque Secret of the same name.
WIRING_SECRET_TYPE: Final = "statecar.io/wiring"  # noqa: S105  # a Secret type, not a credential
WIRING_LABELS: Final[Mapping[str, str]] = {
    MANAGED_BY_LABEL: MANAGED_BY,
    "app.kubernetes.io/name": "statecar",
    "app.kubernetes.io/component": "wiring",
}


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
