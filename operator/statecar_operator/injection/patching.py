"""
`apply_injection`: a plan put into a pod (or pod template), in place and idempotently. Pure.

The webhook hands it to kopf as a `patch.fns` transformation (kopf diffs the result into the
JSON patch: docs/patches.rst) and `statecar inject` calls it on manifests offline, so both
paths produce the same pod. Containers, env, volumes and marks are upserted by name, and an
injected container that has only gained the API server's defaults since is kept as it is
(`_keep_if_same`), so a second admission, re-invocation or `statecar inject` on its own output
produces no patch at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_contract import env
from statecar_contract.wiring import (
    APP_FILE,
    SHARED_FILE,
    WIRING_FILE,
    WIRING_MOUNT_PATH,
    WIRING_SECRET_NAME,
    app_secret_name,
)
from statecar_operator.injection.annotations import SecretKey
from statecar_operator.injection.plan import (
    DATA_VOLUME,
    SIDECAR_COMMAND,
    SIDECAR_NAME,
    TMP_VOLUME,
    WIRING_VOLUME,
    InjectionPlan,
)
from statecar_operator.injection.quantities import QuantityError, parse_quantity

#: Port names are at most 15 characters (IANA_SVC_NAME); "statecar-metrics" would be 16.
METRICS_PORT_NAME: Final = "statecar-metric"
#: Served on the metrics port: 204 only when every store of the sidecar is reachable.
HEALTH_PATH: Final = "/v1.0/healthz"
#: Also on the metrics port: 204 as long as the sidecar's HTTP server runs (backend or not).
LIVENESS_PATH: Final = "/healthz"

#: Writable, pod-local: where `state.sqlite` files live under a read-only root filesystem.
DATA_PATH: Final = "/var/lib/statecar"
SERVICE_ACCOUNT_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount"


def apply_injection(pod: MutableMapping[str, Any], plan: InjectionPlan) -> None:
    """
    Put the plan into `pod` (a Pod or a pod template), in place and idempotently.

    The sidecar goes FIRST in `initContainers` with `restartPolicy: Always` (a native sidecar,
    KEP-753: https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/): it starts
    before the user's init containers and app containers, which start only once its startup
    probe passes (its stores are reachable), and it no longer keeps Jobs from completing.
    """
    # `or`: a manifest may say `spec: null` (the API server would have dropped it).
    metadata = pod["metadata"] = pod.get("metadata") or {}
    spec = pod["spec"] = pod.get("spec") or {}

    init = list(spec.get("initContainers") or [])
    current = next((c for c in init if c.get("name") == SIDECAR_NAME), None)
    user_init = [c for c in init if c.get("name") != SIDECAR_NAME]
    spec["initContainers"] = [_keep_if_same(current, build_sidecar_container(plan)), *user_init]

    app_env = build_app_env(plan)
    for container in [*user_init, *(spec.get("containers") or [])]:
        _ensure_env(container, app_env)

    volumes = list(spec.get("volumes") or [])
    for wanted in build_volumes(plan):
        index = next((i for i, v in enumerate(volumes) if v.get("name") == wanted["name"]), None)
        if index is None:
            volumes.append(wanted)
        else:
            volumes[index] = _keep_if_same(volumes[index], wanted)
    spec["volumes"] = volumes

    labels = metadata.get("labels") or {}
    labels[ann.INJECTED_LABEL] = "true"
    metadata["labels"] = labels
    pod_annotations = metadata.get("annotations") or {}
    pod_annotations[ann.STATUS] = plan.status_annotation()
    metadata["annotations"] = pod_annotations


def build_sidecar_container(plan: InjectionPlan) -> dict[str, Any]:
    """The `statecar` container, as it appears in the pod spec."""
    container: dict[str, Any] = {
        "name": SIDECAR_NAME,
        "image": plan.image,
        "imagePullPolicy": plan.image_pull_policy,
        "command": list(SIDECAR_COMMAND),
        "restartPolicy": "Always",
        "env": build_sidecar_env(plan),
        # The state API listens on the pod's loopback only, so it is not declared; the metrics
        # and health port is, for the kubelet's probes and Prometheus.
        "ports": [
            {"name": METRICS_PORT_NAME, "containerPort": plan.metrics_port, "protocol": "TCP"}
        ],
        "resources": _resources_body(plan),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": plan.run_as_user,
            "runAsGroup": plan.run_as_user,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # The kubelet cannot reach the loopback-only state API, so every probe targets the
        # metrics port. Startup and readiness pass only when every store answers: the app
        # containers start after the state API is usable, and a pod whose backend is down
        # leaves its Service's endpoints.
        "startupProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": plan.metrics_port},
            "periodSeconds": 1,
            "timeoutSeconds": 1,
            "failureThreshold": 120,
        },
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": plan.metrics_port},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        # Liveness deliberately does not depend on the backend: restarting the sidecar cannot
        # bring Redis back, and would drop in-memory stores and every request in flight
        # (https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/:
        # liveness probes should not depend on external dependencies). The sidecar's `/healthz`
        # on the same port answers 204 whenever its HTTP server runs.
        "livenessProbe": {
            "httpGet": {"path": LIVENESS_PATH, "port": plan.metrics_port},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 6,
        },
        "volumeMounts": [
            {"name": WIRING_VOLUME, "mountPath": WIRING_MOUNT_PATH, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},  # noqa: S108  # a private emptyDir, not the shared /tmp
            {"name": DATA_VOLUME, "mountPath": DATA_PATH},
            # An empty directory where the API server would mount the pod's ServiceAccount
            # token: its admission plugin skips containers that mount something there
            # (plugin/pkg/admission/serviceaccount), so the sidecar, which never calls the
            # Kubernetes API, does not hold the app's credentials.
            {
                "name": TMP_VOLUME,
                "mountPath": SERVICE_ACCOUNT_PATH,
                "subPath": "no-service-account-token",
                "readOnly": True,
            },
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if not container["resources"]:
        del container["resources"]
    return container


def build_sidecar_env(plan: InjectionPlan) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [
        {"name": env.APP_ID, "value": plan.app_id},
        {"name": env.NAMESPACE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # The folder: the sidecar merges the wiring files in it (`statecar_contract.wiring`).
        {"name": env.WIRING_FILE, "value": WIRING_MOUNT_PATH},
        {"name": env.HTTP_PORT, "value": str(plan.http_port)},
        {"name": env.GRPC_PORT, "value": str(plan.grpc_port)},
        {"name": env.METRICS_PORT, "value": str(plan.metrics_port)},
        {"name": env.LOG_LEVEL, "value": plan.log_level},
    ]
    if plan.log_json is not None:
        entries.append({"name": env.LOG_JSON, "value": "true" if plan.log_json else "false"})
    if plan.max_body_bytes is not None:
        entries.append({"name": env.MAX_BODY_BYTES, "value": str(plan.max_body_bytes)})
    if plan.requested_components:
        entries.append({"name": env.COMPONENTS, "value": ",".join(plan.requested_components)})
    if plan.api_token is not None:
        entries.append({"name": env.API_TOKEN, "valueFrom": _token_ref(plan.api_token)})
    entries.extend({"name": name, "value": value} for name, value in plan.extra_env)
    return entries


def build_app_env(plan: InjectionPlan) -> list[dict[str, Any]]:
    """Env for every other container: where the state API is (Dapr's and statecar's names).

    DAPR_GRPC_PORT is where every Dapr SDK's gRPC client (Python, Go, Java, .NET) connects.
    """
    port = str(plan.http_port)
    entries: list[dict[str, Any]] = [
        {"name": env.DAPR_HTTP_PORT, "value": port},
        {"name": env.HTTP_PORT, "value": port},
        {"name": env.DAPR_GRPC_PORT, "value": str(plan.grpc_port)},
    ]
    if plan.api_token is not None:
        # Never the token itself: a reference the kubelet resolves, so the pod spec stays clean.
        entries.append({"name": env.DAPR_API_TOKEN, "valueFrom": _token_ref(plan.api_token)})
    return entries


def build_wiring_volume(app_id: str) -> dict[str, Any]:
    """
    The sidecar's wiring: the namespace's shared Secret and its app's own, nothing else.

    One projected volume, so the kubelet swaps both files together. Each source is optional:
    the pod starts before the operator has written a Secret (no component yet, or none scoped
    to this app); the kubelet fills the file once it exists and the sidecar loads it then. Only
    the `components.json` key is projected, under a name that says which Secret it came from.
    """
    return {
        "name": WIRING_VOLUME,
        "projected": {
            "sources": [
                {
                    "secret": {
                        "name": name,
                        "optional": True,
                        "items": [{"key": WIRING_FILE, "path": path}],
                    }
                }
                for name, path in (
                    (WIRING_SECRET_NAME, SHARED_FILE),
                    (app_secret_name(app_id), APP_FILE),
                )
            ]
        },
    }


def build_volumes(plan: InjectionPlan) -> list[dict[str, Any]]:
    return [
        build_wiring_volume(plan.app_id),
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}},
        {"name": DATA_VOLUME, "emptyDir": {}},
    ]


def is_injected(pod: Mapping[str, Any]) -> bool:
    containers = (pod.get("spec") or {}).get("initContainers") or []
    return any(c.get("name") == SIDECAR_NAME for c in containers)


# --- helpers -------------------------------------------------------------------------------


def _keep_if_same(current: Any, wanted: dict[str, Any]) -> Any:
    """
    `current` when it already says everything `wanted` says, else `wanted`.

    The API server fills in defaults after our webhook (a probe's `successThreshold`, a
    Secret volume's `defaultMode`, a fieldRef's `apiVersion`, ...). Keeping an injected
    container that only gained defaults makes a second admission, or `statecar inject` on its
    own output, produce no patch at all; a real difference replaces it whole.
    """
    return current if current is not None and _contains(current, wanted) else wanted


def _contains(have: Any, want: Any, *, quantities: bool = False) -> bool:
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(
            k in have and _contains(have[k], v, quantities=quantities or k == "resources")
            for k, v in want.items()
        )
    if isinstance(want, list) and want and all(isinstance(w, Mapping) for w in want):
        # Lists of objects (env, ports, volumeMounts): others may add entries (the API server
        # does: the ServiceAccount token mount), so each wanted entry must be there, in any order.
        return isinstance(have, list) and all(
            any(_contains(h, w, quantities=quantities) for h in have) for w in want
        )
    if isinstance(want, list):
        return isinstance(have, list) and have == want
    if quantities and isinstance(have, str) and isinstance(want, str):
        # The API server stores quantities canonically ("0.5" comes back as "500m").
        try:
            return parse_quantity(have) == parse_quantity(want)
        except QuantityError:
            return have == want
    return bool(have == want)


def _token_ref(token: SecretKey) -> dict[str, Any]:
    return {"secretKeyRef": {"name": token.name, "key": token.key}}


def _ensure_env(container: MutableMapping[str, Any], entries: Iterable[Mapping[str, Any]]) -> None:
    """Add each entry the container doesn't set already: the user's own values win."""
    current = container.get("env") or []
    names = {e.get("name") for e in current}
    missing = [dict(e) for e in entries if e["name"] not in names]
    if missing:
        container["env"] = [*current, *missing]


def _resources_body(plan: InjectionPlan) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if plan.requests:
        body["requests"] = dict(plan.requests)
    if plan.limits:
        body["limits"] = dict(plan.limits)
    return body
