"""
The wiring format: how the operator hands resolved components to the sidecars of a namespace.

A sidecar receives only the components in scope for its app id (as daprd does: Dapr's operator
sends each sidecar only its in-scope components), through two Secrets of its namespace, each
with one key `WIRING_FILE` holding JSON:

* `WIRING_SECRET_NAME` (shared): the namespace's unscoped components, which every app may open;
* `app_secret_name(app_id)`: the components whose `scopes` name that app id, and nothing else.

The injected sidecar mounts both, `optional`, in one projected volume at `WIRING_MOUNT_PATH`
(`SHARED_FILE` and `APP_FILE`), and merges them (`merge`); it reloads when the kubelet refreshes
the files. This module is the only place that format is defined: `encode` and `decode` are a
tested round trip. Values are secrets, so the files live in Secrets.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import orjson

from statecar_contract.components import (
    CONCURRENCY_VALUES,
    CONSISTENCY_VALUES,
    ComponentError,
    ResolvedComponent,
)

WIRING_SECRET_NAME: Final = "statecar-wiring"
WIRING_FILE: Final = "components.json"
WIRING_MOUNT_PATH: Final = "/var/run/statecar/wiring"
WIRING_FORMAT_VERSION: Final = 1
#: Names of the two files in the sidecar's wiring folder (the Secrets' key is `WIRING_FILE`).
SHARED_FILE: Final = "shared.json"
APP_FILE: Final = "app.json"
#: Prefix of the per-app Secrets' names (`app_secret_name`).
APP_SECRET_PREFIX: Final = WIRING_SECRET_NAME + "-"
#: A Secret name is a DNS subdomain of at most 253 characters; room for prefix and hash.
_SLUG_MAX: Final = 200


def app_secret_name(app_id: str) -> str:
    """
    The name of the Secret holding the components scoped to `app_id`.

    App ids are case-sensitive and may hold `_`; Secret names may not. The name is a readable
    slug of the app id plus a hash of the exact id, so `Cart`, `cart` and `c_art` never share
    a Secret (and thereby credentials).
    """
    slug = re.sub(r"[^a-z0-9.-]+", "-", app_id.lower()).strip("-.")[:_SLUG_MAX].strip("-.")
    digest = hashlib.sha256(app_id.encode()).hexdigest()[:10]
    return f"{APP_SECRET_PREFIX}{slug or 'app'}-{digest}"


def is_wiring_secret_name(name: str | None) -> bool:
    """The shared wiring Secret or a per-app one (by name; ownership is checked by label)."""
    return name is not None and (name == WIRING_SECRET_NAME or name.startswith(APP_SECRET_PREFIX))


@dataclass(frozen=True)
class Wiring:
    """Every component a namespace's sidecars may open."""

    namespace: str
    components: tuple[ResolvedComponent, ...]


def _component_to_json(component: ResolvedComponent) -> dict[str, object]:
    return {
        "name": component.name,
        "type": component.type,
        "version": component.version,
        "metadata": dict(sorted(component.metadata.items())),
        "concurrency": component.concurrency,
        "consistency": component.consistency,
        "enforce": component.enforce,
        "keyPrefix": component.key_prefix,
        "scopes": list(component.scopes),
        # Only when set, so the wiring of a component without encryption keys is unchanged.
        **({"keyNames": dict(sorted(component.key_names.items()))} if component.key_names else {}),
    }


def encode_bytes(wiring: Wiring) -> bytes:
    """Canonical bytes: components sorted by name, keys sorted, so equal wiring hashes equal."""
    document = {
        "formatVersion": WIRING_FORMAT_VERSION,
        "namespace": wiring.namespace,
        "components": [
            _component_to_json(c) for c in sorted(wiring.components, key=lambda c: c.name)
        ],
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def encode(wiring: Wiring) -> dict[str, bytes]:
    """The `data` of the wiring Secret (values still raw bytes; the Kubernetes edge base64s them)."""
    return {WIRING_FILE: encode_bytes(wiring)}


def _str_field(raw: Mapping[str, object], name: str, where: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise ComponentError(f"{where}.{name}", "missing or not a string in the wiring file")
    return value


def decode(data: bytes) -> Wiring:
    """Parse the wiring file; a corrupt or foreign file raises ComponentError naming the field."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ComponentError(WIRING_FILE, f"is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ComponentError(WIRING_FILE, "must hold a JSON object")
    if document.get("formatVersion") != WIRING_FORMAT_VERSION:
        raise ComponentError(
            "formatVersion",
            f"expected {WIRING_FORMAT_VERSION}, got {document.get('formatVersion')!r}: "
            "the operator and the sidecar image are from different releases",
        )
    raw_components = document.get("components")
    if not isinstance(raw_components, list):
        raise ComponentError("components", "must be a list")
    components: list[ResolvedComponent] = []
    for index, raw in enumerate(raw_components):
        where = f"components[{index}]"
        if not isinstance(raw, dict):
            raise ComponentError(where, "must be an object")
        name = _str_field(raw, "name", where)
        component_type = _str_field(raw, "type", where)
        metadata = raw.get("metadata", {})
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ComponentError(f"{where}.metadata", "must map names to strings")
        concurrency = _str_field(raw, "concurrency", where)
        consistency = _str_field(raw, "consistency", where)
        if concurrency not in CONCURRENCY_VALUES or consistency not in CONSISTENCY_VALUES:
            raise ComponentError(where, f"bad concurrency/consistency {concurrency}/{consistency}")
        scopes = raw.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ComponentError(f"{where}.scopes", "must be a list of strings")
        key_names = raw.get("keyNames", {})
        if not isinstance(key_names, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in key_names.items()
        ):
            raise ComponentError(f"{where}.keyNames", "must map names to strings")
        components.append(
            ResolvedComponent(
                name=name,
                type=component_type,
                version=_str_field(raw, "version", where),
                metadata=metadata,
                concurrency=concurrency,  # type: ignore[arg-type]  # checked against the allowed values above
                consistency=consistency,  # type: ignore[arg-type]  # checked against the allowed values above
                enforce=bool(raw.get("enforce", False)),
                key_prefix=_str_field(raw, "keyPrefix", where),
                scopes=tuple(scopes),
                key_names=key_names,
            )
        )
    return Wiring(
        namespace=_str_field(document, "namespace", "(file)"), components=tuple(components)
    )


def with_components(namespace: str, components: Sequence[ResolvedComponent]) -> Wiring:
    return Wiring(namespace=namespace, components=tuple(sorted(components, key=lambda c: c.name)))


def merge(wirings: Iterable[Wiring]) -> Wiring:
    """
    One namespace's wiring from several files (the shared one and the app's own).

    Each component is in exactly one of them, except for a moment while its scopes change: the
    kubelet refreshes the two Secrets of a projected volume from its own cache, so the old and
    the new copy may meet. Then the scoped copy wins: it is the one the operator wrote for this
    app, and an unscoped copy of it is about to disappear. Files of different namespaces are a
    mounting mistake and are refused.
    """
    namespaces: set[str] = set()
    chosen: dict[str, ResolvedComponent] = {}
    for wiring in wirings:
        namespaces.add(wiring.namespace)
        for component in wiring.components:
            current = chosen.get(component.name)
            if current is None or (component.scopes and not current.scopes):
                chosen[component.name] = component
    if len(namespaces) > 1:
        raise ComponentError(
            "namespace",
            f"the wiring files are of different namespaces ({', '.join(sorted(namespaces))})",
        )
    return with_components(next(iter(namespaces), ""), list(chosen.values()))
