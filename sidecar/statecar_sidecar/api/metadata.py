"""
The metadata route, `/v1.0/metadata`: the app id, the runtime version and each loaded store.

Shaped as daprd's metadata API (Dapr docs, metadata API reference), so SDKs that read it at
start-up keep working. Served off the state API's fast path: by `api.front` for a plain
`GET /v1.0/metadata`, by `api.fastapi_app` (built on first need) otherwise.

`components` lists the stores that serve. A declared component that failed (it could not be
read or opened) is listed under `statecarFailedComponents` with its type, file and error, and
whether an earlier version of it still serves; `extended.statecarLastReloadError` sums them up.
"""

from __future__ import annotations

from statecar_contract import package_version
from statecar_sidecar.runtime import ComponentRuntime
from statecar_sidecar.stores.base import Feature


def capabilities(features: frozenset[Feature]) -> list[str]:
    names = sorted(str(f) for f in features)
    # daprd adds ACTOR for stores with both ETAG and TRANSACTIONAL (pkg/runtime/runtime.go).
    if Feature.ETAG in features and Feature.TRANSACTIONAL in features:
        names.append("ACTOR")
    return names


def metadata_document(runtime: ComponentRuntime) -> dict[str, object]:
    version = package_version()
    extended: dict[str, str] = {"daprRuntimeVersion": f"statecar-{version}"}
    extended.update(runtime.extended_metadata)
    if runtime.last_reload_error:
        extended["statecarLastReloadError"] = runtime.last_reload_error
    return {
        "id": runtime.app_id,
        "runtimeVersion": f"statecar-{version}",
        "enabledFeatures": [],
        "components": [
            {
                "name": b.name,
                "type": b.component.type,
                "version": b.component.version,
                "capabilities": capabilities(b.store.features),
            }
            for b in sorted(runtime.stores.values(), key=lambda b: b.name)
        ],
        "statecarFailedComponents": [
            {
                "name": f.name,
                "type": f.type,
                "source": f.source,
                "error": f.reason,
                "previousVersionServing": f.previous_serving,
            }
            for f in sorted(runtime.failed.values(), key=lambda f: f.name)
        ],
        "extended": extended,
    }
