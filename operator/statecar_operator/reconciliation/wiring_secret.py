"""
The wiring Secrets of a namespace, as pure functions: which components go to which Secret
(`plan_secrets`), each Secret's body (in the shared contract's format,
`statecar_contract.wiring.encode`), its keyed config hash, and how to tell whether the stored
one differs. No I/O; the reconciler writes what these return through `cluster.kube`.

Why one shared Secret plus one per scoped app id, not one Secret per app id holding everything
it may open (issue 11.1):

* Dapr sends each sidecar only its in-scope components. A Secret is the unit the kubelet
  fetches and the node authorizer grants: a node may read exactly the Secrets its pods mount.
  So an app's scoped credentials must live in a Secret only that app's pods mount; keys of one
  Secret selected by `items` would still bring every app's credentials to every node.
* Unscoped components are open to every app. Writing them into one Secret per app id would
  need the operator to know every app id in use, i.e. to watch every pod of the cluster (RBAC on
  pods, which it has none of) and to write N copies of the same credentials. The shared Secret
  holds them once; a per-app Secret exists only for an app id that some component's `scopes`
  names, and holds only those components.
* A pod mounts both, optional, in one projected volume (`injection.patching`): a component that
  gains or loses scopes later moves between the two Secrets with no change to the pod.

Ownership: every Secret's ownerReferences are the components it exists for (the shared one:
every component of the namespace; an app's: the components scoping that app), so Kubernetes'
garbage collector removes it once they are all gone, even while the operator is down; the
reconciler also deletes Secrets no longer planned (a scope removed from a component that lives
on), recognised by `WIRING_LABELS` and never by name alone.
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
    app_secret_name,
    encode,
    encode_bytes,
    with_components,
)
from statecar_operator.manifests.labels import MANAGED_BY, MANAGED_BY_LABEL, WIRING_SECRET_TYPE

WIRING_LABELS: Final[Mapping[str, str]] = {
    MANAGED_BY_LABEL: MANAGED_BY,
    "app.kubernetes.io/name": "statecar",
    "app.kubernetes.io/component": "wiring",
}


#: On a per-app Secret: the exact app id it is for (its name is only a slug of it).
APP_ID_ANNOTATION: Final = ann.APP_ID


@dataclass(frozen=True)
class ComponentOwner:
    """A component the wiring Secret belongs to (an ownerReference, for garbage collection)."""

    name: str
    uid: str
    api_version: str = f"{contract.API_GROUP}/{contract.API_VERSION}"
    kind: str = contract.KIND


@dataclass(frozen=True)
class LiveComponent:
    """What `plan_secrets` needs of one component of the namespace (not being deleted)."""

    owner: ComponentOwner
    #: None when the spec does not parse: it owns the shared Secret only.
    scopes: tuple[str, ...] | None
    #: None when its secrets could not be resolved: it is in no Secret's content.
    resolved: ResolvedComponent | None


@dataclass(frozen=True)
class SecretPlan:
    """One wiring Secret the namespace should have: for all apps (`app_id` None) or one."""

    name: str
    app_id: str | None
    components: tuple[ResolvedComponent, ...]
    owners: tuple[ComponentOwner, ...]


def plan_secrets(live: Sequence[LiveComponent]) -> dict[str, SecretPlan]:
    """
    Which components go to which Secret, by Secret name (empty: no component, no Secret).

    The shared Secret always exists while a component does (a pod's config hash and the
    component's status name it); it holds the resolved unscoped components. Each app id named
    in some component's scopes gets a Secret holding exactly the resolved components scoping it;
    it exists even while none of them resolves (a missing Secret of theirs), empty, so a pod
    started meanwhile mounts it and is filled in place once they do.
    """
    if not live:
        return {}
    shared = tuple(c.resolved for c in live if c.resolved is not None and not c.resolved.scopes)
    plans = {
        WIRING_SECRET_NAME: SecretPlan(
            WIRING_SECRET_NAME, None, shared, tuple(c.owner for c in live if c.owner.uid)
        )
    }
    app_ids = sorted({app for c in live for app in c.scopes or ()})
    for app_id in app_ids:
        members = [c for c in live if app_id in (c.scopes or ())]
        name = app_secret_name(app_id)
        plans[name] = SecretPlan(
            name,
            app_id,
            # The resolved copy's scopes are the parsed spec's: the same list.
            tuple(c.resolved for c in members if c.resolved is not None),
            tuple(c.owner for c in members if c.owner.uid),
        )
    return plans


def secrets_of(plans: Mapping[str, SecretPlan], component: str) -> list[str]:
    """The names of the planned Secrets that carry `component` (for its status)."""
    return sorted(n for n, p in plans.items() if any(c.name == component for c in p.components))


def pod_config_hash(shared: str | None, app: str | None) -> str | None:
    """
    What a pod records as its wiring's identity: both Secrets' keyed hashes, combined.

    None while neither exists. Both inputs are already HMACs, so combining them with a plain
    hash reveals nothing more about the values.
    """
    if shared is None and app is None:
        return None
    return hashlib.sha256(f"{shared or '-'}:{app or '-'}".encode()).hexdigest()[:16]


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
    name: str = WIRING_SECRET_NAME,
    app_id: str | None = None,
) -> dict[str, Any]:
    """A wiring Secret of `namespace` (`plan_secrets` says which, and with what)."""
    wiring = build_wiring(namespace, components)
    data = {key: base64.b64encode(value).decode("ascii") for key, value in encode(wiring).items()}
    owner_references = [
        {"apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid}
        for owner in sorted(owners, key=lambda o: (o.name, o.uid))
    ]
    annotations = {ann.WIRING_CONFIG_HASH: config_hash(wiring, salt), ann.WIRING_SALT: salt}
    if app_id is not None:
        annotations[APP_ID_ANNOTATION] = app_id
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": dict(WIRING_LABELS),
        "annotations": annotations,
    }
    if owner_references:
        # With every component it exists for as an owner, Kubernetes' garbage collector removes
        # the Secret once the last one is gone even if the operator is not running then.
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
