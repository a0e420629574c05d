"""
The injector's decision and transformation, as pure functions (no kopf, no Kubernetes client).

`plan_injection` reads a pod (or pod template) and the namespace's components and answers with
an `InjectionPlan`, a `Skip` (with a reason that becomes an admission warning and an Event), or
raises `InjectionError` (a bad `statecar.io/*` annotation, which admission turns into a rejection
naming the annotation). `apply_injection` edits the pod dict in place; the webhook hands it to kopf
as a `patch.fns` transformation (kopf diffs the result into the JSON patch: docs/patches.rst) and
`statecar inject` calls it on manifests offline, so both paths produce the same pod.

Applying a plan is idempotent: containers, env, volumes and marks are upserted by name, and an
injected container that has only gained the API server's defaults since is kept as it is, so a
second admission of a stored pod, re-invocation (`reinvocationPolicy: IfNeeded`) or `statecar
inject` on its own output produces no patch at all; only containers another webhook added since
get the app env.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_contract import env
from statecar_contract.components import ComponentSpec
from statecar_contract.wiring import WIRING_FILE, WIRING_MOUNT_PATH, WIRING_SECRET_NAME
from statecar_operator.quantities import QuantityError, parse_quantity
from statecar_operator.settings import InjectorSettings
from statecar_operator.workloads import workload_name

SIDECAR_NAME: Final = ann.SIDECAR_CONTAINER_NAME
SIDECAR_COMMAND: Final = ("statecar", "sidecar")
#: Port names are at most 15 characters (IANA_SVC_NAME); "statecar-metrics" would be 16.
METRICS_PORT_NAME: Final = "statecar-metric"
#: Served on the metrics port: 204 only when every store of the sidecar is reachable.
HEALTH_PATH: Final = "/v1.0/healthz"
#: Also on the metrics port: 204 as long as the sidecar's HTTP server runs (backend or not).
LIVENESS_PATH: Final = "/healthz"

WIRING_VOLUME: Final = "statecar-wiring"
TMP_VOLUME: Final = "statecar-tmp"
DATA_VOLUME: Final = "statecar-data"
#: Writable, pod-local: where `state.sqlite` files live under a read-only root filesystem.
DATA_PATH: Final = "/var/lib/statecar"
_OUR_VOLUMES: Final = (WIRING_VOLUME, TMP_VOLUME, DATA_VOLUME)
SERVICE_ACCOUNT_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount"

#: Dapr's convention for `dapr.io/api-token-secret`: the token is the Secret's `token` key.
DEFAULT_TOKEN_KEY: Final = "token"  # noqa: S105  # a key name, not a credential

#: Canonical log levels passed to the sidecar; Dapr's spellings are accepted as aliases.
LOG_LEVELS: Final[Mapping[str, str]] = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "critical",
    "critical": "critical",
}

# Dapr's injector reads booleans with utils.IsTruthy ("y", "yes", "true", "t", "on", "1"); the
# same words are accepted here, but anything else is an error instead of a silent false.
_TRUTHY: Final = frozenset({"y", "yes", "true", "t", "on", "1"})
_FALSY: Final = frozenset({"n", "no", "false", "f", "off", "0"})

_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_SECRET_KEY: Final = re.compile(r"^[-._a-zA-Z0-9]+$")
_APP_ID: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV_NAME: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_IMAGE: Final = re.compile(r"^[a-zA-Z0-9][^\s]*$")

#: Ports daprd binds in a pod (HTTP, public health, gRPC, internal gRPC, metrics): a pod asking
#: for both sidecars would have two servers on 3500/9090.
_DAPR_PORTS: Final = frozenset({3500, 3501, 50001, 50002, 9090})
_DAPR_ENABLED: Final = "dapr.io/enabled"

#: Largest request body the sidecar may be told to accept.
_MAX_BODY_LIMIT: Final = 1 << 30

#: Env the injector sets on the sidecar; `statecar.io/env` may not override them.
_RESERVED_SIDECAR_ENV: Final[Mapping[str, str]] = {
    env.APP_ID: ann.APP_ID,
    env.NAMESPACE: "(the pod's namespace)",
    env.WIRING_FILE: "(the wiring Secret)",
    env.HTTP_PORT: ann.HTTP_PORT,
    env.METRICS_PORT: ann.METRICS_PORT,
    env.LOG_LEVEL: ann.LOG_LEVEL,
    env.LOG_JSON: ann.LOG_AS_JSON,
    env.API_TOKEN: ann.API_TOKEN_SECRET,
    env.MAX_BODY_BYTES: ann.MAX_BODY_SIZE,
    env.COMPONENTS: ann.COMPONENTS,
    env.DAPR_API_TOKEN: ann.API_TOKEN_SECRET,
    env.DAPR_HTTP_PORT: ann.HTTP_PORT,
}


class InjectionError(ValueError):
    """The pod asked for injection with annotations that cannot be honoured (admission rejects)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"statecar cannot inject this pod: {self.problems[0]}"
        else:
            text = "statecar cannot inject this pod: " + "; ".join(
                f"({i}) {p}" for i, p in enumerate(self.problems, 1)
            )
        super().__init__(text)


@dataclass(frozen=True)
class Skip:
    """No sidecar for this pod. `notify`: the pod asked for one, so say why (warning + Event)."""

    reason: str
    message: str
    notify: bool


@dataclass(frozen=True)
class SecretKey:
    name: str
    key: str


@dataclass(frozen=True)
class InjectionPlan:
    """Everything `apply_injection` needs; the pod's annotations have been validated."""

    app_id: str
    image: str
    image_pull_policy: str
    http_port: int
    metrics_port: int
    log_level: str
    run_as_user: int
    version: str
    #: Names of the components the sidecar will open (for the explanation and tests).
    components_in_scope: tuple[str, ...]
    #: The `statecar.io/components` subset, passed to the sidecar; empty = all in scope.
    requested_components: tuple[str, ...] = ()
    log_json: bool | None = None
    api_token: SecretKey | None = None
    requests: tuple[tuple[str, str], ...] = ()
    limits: tuple[tuple[str, str], ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    max_body_bytes: int | None = None
    config_hash: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def status_annotation(self) -> str:
        """The JSON stamped on the pod: what was injected, from which image, with which wiring."""
        return json.dumps(
            {
                "appId": self.app_id,
                "configHash": self.config_hash,
                "image": self.image,
                "version": self.version,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


def plan_injection(
    pod: Mapping[str, Any],
    *,
    namespace: str,
    components_in_namespace: Sequence[ComponentSpec],
    settings: InjectorSettings,
    owner_name_hint: str | None = None,
    config_hash: str | None = None,
) -> InjectionPlan | Skip:
    """
    Decide whether and how to inject `pod` (a Pod or a pod template: `metadata` + `spec`).

    `components_in_namespace` are the namespace's *valid* components (invalid ones never reach
    the wiring); `config_hash` is the hash on the namespace's wiring Secret, if there is one yet.
    Raises InjectionError listing every problem with the pod's `statecar.io/*` annotations.
    """
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    spec: Mapping[str, Any] = pod.get("spec") or {}
    annotations: Mapping[str, Any] = metadata.get("annotations") or {}
    ours = {
        k: str(v) for k, v in annotations.items() if k.startswith(ann.PREFIX) and k != ann.STATUS
    }
    if not ours:
        return Skip("NotRequested", "the pod has no statecar.io annotations", notify=False)
    if ann.ENABLED not in ours:
        keys = ", ".join(sorted(ours))
        return Skip(
            "NotEnabled",
            f'the pod sets {keys} but not {ann.ENABLED}: "true", so no statecar sidecar was injected',
            notify=True,
        )
    enabled = parse_bool(ours[ann.ENABLED])
    if enabled is None:
        raise InjectionError([_bool_problem(ann.ENABLED, ours[ann.ENABLED])])
    if not enabled:
        return Skip("OptedOut", f"{ann.ENABLED} is {ours[ann.ENABLED]!r}", notify=False)

    problems: list[str] = []
    warnings: list[str] = []
    problems.extend(_unknown_keys(ours))

    app_id = _app_id(ours, metadata, owner_name_hint, problems)
    http_port = _port(ours, ann.HTTP_PORT, settings.http_port, problems)
    metrics_port = _port(ours, ann.METRICS_PORT, settings.metrics_port, problems)
    if http_port == metrics_port and http_port is not None:
        problems.append(
            f"{ann.HTTP_PORT} and {ann.METRICS_PORT} are both {http_port}; they must differ"
        )
    log_level = _log_level(ours.get(ann.LOG_LEVEL, settings.log_level), problems)
    log_json = _optional_bool(ours, ann.LOG_AS_JSON, problems)
    api_token = _api_token(ours.get(ann.API_TOKEN_SECRET), problems)
    image = ours.get(ann.SIDECAR_IMAGE, settings.image).strip()
    if not _IMAGE.match(image):
        problems.append(f"{ann.SIDECAR_IMAGE}: {image!r} is not an image reference")
    requests, limits = _resources(ours, settings, problems)
    extra_env = _extra_env(ours.get(ann.ENV), problems)
    max_body = _max_body(ours.get(ann.MAX_BODY_SIZE), problems)
    requested = _component_names(ours.get(ann.COMPONENTS), problems)

    _check_containers(spec, http_port, metrics_port, problems)
    if parse_bool(str(annotations.get(_DAPR_ENABLED, "false"))) and (
        {http_port, metrics_port} & _DAPR_PORTS
    ):
        problems.append(
            f"the pod also asks for the Dapr sidecar ({_DAPR_ENABLED}), which binds "
            f"{', '.join(str(p) for p in sorted(_DAPR_PORTS))}; statecar serves the Dapr state API "
            f"itself, so drop one of the two (or move statecar with {ann.HTTP_PORT} and "
            f"{ann.METRICS_PORT})"
        )
    warnings.extend(_env_overrides(spec, http_port))
    if spec.get("hostNetwork") is True:
        warnings.append(
            f"the pod uses hostNetwork, so the statecar state API port {http_port} is bound on the "
            "node's loopback and must be unique among such pods on a node"
        )
    if problems or app_id is None or http_port is None or metrics_port is None:
        raise InjectionError(problems)  # each None above came with a problem

    in_scope, skip = _components_in_scope(
        namespace=namespace,
        app_id=app_id,
        components=components_in_namespace,
        requested=requested,
        warnings=warnings,
    )
    if skip is not None:
        return skip

    return InjectionPlan(
        app_id=app_id,
        image=image,
        image_pull_policy=settings.image_pull_policy,
        http_port=http_port,
        metrics_port=metrics_port,
        log_level=log_level,
        run_as_user=settings.run_as_user,
        version=settings.version,
        components_in_scope=in_scope,
        requested_components=requested,
        log_json=log_json,
        api_token=api_token,
        requests=requests,
        limits=limits,
        extra_env=extra_env,
        max_body_bytes=max_body,
        config_hash=config_hash,
        warnings=tuple(warnings),
    )


def apply_injection(pod: MutableMapping[str, Any], plan: InjectionPlan) -> None:
    """
    Put the plan into `pod` (a Pod or a pod template), in place and idempotently.

    The sidecar goes FIRST in `initContainers` with `restartPolicy: Always` (a native sidecar,
    KEP-753: https://kubernetes.io/docs/concepts/workloads/pods/sidecar-containers/): it starts
    before the user's init containers and app containers, which start only once its startup
    probe passes (its stores are reachable), and it no longer keeps Jobs from completing.
    """
    metadata = pod.setdefault("metadata", {})
    spec = pod.setdefault("spec", {})

    init = list(spec.get("initContainers") or [])
    current = next((c for c in init if c.get("name") == SIDECAR_NAME), None)
    user_init = [c for c in init if c.get("name") != SIDECAR_NAME]
    spec["initContainers"] = [_keep_if_same(current, build_sidecar_container(plan)), *user_init]

    app_env = build_app_env(plan)
    for container in [*user_init, *(spec.get("containers") or [])]:
        _ensure_env(container, app_env)

    volumes = list(spec.get("volumes") or [])
    for wanted in build_volumes():
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
        {"name": env.WIRING_FILE, "value": f"{WIRING_MOUNT_PATH}/{WIRING_FILE}"},
        {"name": env.HTTP_PORT, "value": str(plan.http_port)},
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
    """Env for every other container: where the state API is (Dapr's and statecar's names)."""
    port = str(plan.http_port)
    entries: list[dict[str, Any]] = [
        {"name": env.DAPR_HTTP_PORT, "value": port},
        {"name": env.HTTP_PORT, "value": port},
    ]
    if plan.api_token is not None:
        # Never the token itself: a reference the kubelet resolves, so the pod spec stays clean.
        entries.append({"name": env.DAPR_API_TOKEN, "valueFrom": _token_ref(plan.api_token)})
    return entries


def build_volumes() -> list[dict[str, Any]]:
    return [
        {"name": WIRING_VOLUME, "secret": {"secretName": WIRING_SECRET_NAME}},
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


def is_valid_app_id(app_id: str) -> bool:
    return 0 < len(app_id) <= 253 and _APP_ID.match(app_id) is not None


def parse_bool(raw: str) -> bool | None:
    """Dapr's truthy/falsy words; None for anything else."""
    text = raw.strip().lower()
    if text in _TRUTHY:
        return True
    if text in _FALSY:
        return False
    return None


def _bool_problem(key: str, raw: str) -> str:
    return f'{key}: {raw!r} is not a boolean; use "true" or "false"'


def _optional_bool(ours: Mapping[str, str], key: str, problems: list[str]) -> bool | None:
    if key not in ours:
        return None
    value = parse_bool(ours[key])
    if value is None:
        problems.append(_bool_problem(key, ours[key]))
    return value


def _unknown_keys(ours: Mapping[str, str]) -> list[str]:
    problems = []
    known = sorted(ann.USER_ANNOTATIONS)
    # Compared without the shared prefix, which would make every key look alike.
    suffixes = [k.removeprefix(ann.PREFIX) for k in known]
    for key in sorted(ours):
        if key in ann.USER_ANNOTATIONS:
            continue
        close = difflib.get_close_matches(key.removeprefix(ann.PREFIX), suffixes, n=1, cutoff=0.6)
        hint = f"did you mean {ann.PREFIX}{close[0]}?" if close else "known: " + ", ".join(known)
        problems.append(f"unknown annotation {key} ({hint})")
    return problems


def _app_id(
    ours: Mapping[str, str],
    metadata: Mapping[str, Any],
    owner_name_hint: str | None,
    problems: list[str],
) -> str | None:
    explicit = ours.get(ann.APP_ID)
    app_id = (
        explicit.strip()
        if explicit is not None
        else workload_name(metadata, owner_name_hint=owner_name_hint)
    )
    source = ann.APP_ID if explicit is not None else "the default app id (the workload's name)"
    if not app_id:
        problems.append(
            f"no app id: set {ann.APP_ID} (the pod has no owner, name or generateName to derive it from)"
        )
        return None
    if not is_valid_app_id(app_id):
        problems.append(
            f"{source}: {app_id!r} must be letters, digits, '-', '_' or '.', start and end with a "
            "letter or digit, at most 253 characters"
        )
        return None
    return app_id


def _port(ours: Mapping[str, str], key: str, default: int, problems: list[str]) -> int | None:
    raw = ours.get(key)
    if raw is None:
        return default
    try:
        port = int(raw.strip())
    except ValueError:
        problems.append(f"{key}: {raw!r} is not a port number")
        return None
    if not 0 < port < 65536:
        problems.append(f"{key}: {port} is not a port number (1-65535)")
        return None
    return port


def _log_level(raw: str, problems: list[str]) -> str:
    level = LOG_LEVELS.get(raw.strip().lower())
    if level is None:
        problems.append(
            f"{ann.LOG_LEVEL}: {raw!r} is not a log level (debug, info, warning, error, critical)"
        )
        return "info"
    return level


def _api_token(raw: str | None, problems: list[str]) -> SecretKey | None:
    if raw is None:
        return None
    name, _, key = raw.strip().partition(":")
    key = key or DEFAULT_TOKEN_KEY
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(
            f"{ann.API_TOKEN_SECRET}: {raw!r} must name a Secret of the pod's namespace, "
            "optionally with the key: <secret> or <secret>:<key> (default key 'token')"
        )
        return None
    if len(key) > 253 or not _SECRET_KEY.match(key):
        problems.append(f"{ann.API_TOKEN_SECRET}: {key!r} is not a valid Secret key")
        return None
    return SecretKey(name=name, key=key)


def _resources(
    ours: Mapping[str, str], settings: InjectorSettings, problems: list[str]
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    values: dict[tuple[str, str], tuple[str, Decimal]] = {}
    table = (
        ("requests", "cpu", ann.SIDECAR_CPU_REQUEST, settings.cpu_request),
        ("requests", "memory", ann.SIDECAR_MEMORY_REQUEST, settings.memory_request),
        ("limits", "cpu", ann.SIDECAR_CPU_LIMIT, settings.cpu_limit),
        ("limits", "memory", ann.SIDECAR_MEMORY_LIMIT, settings.memory_limit),
    )
    for kind, resource, key, default in table:
        raw = ours.get(key, default)
        if raw is None:
            continue
        where = key if key in ours else f"the operator's default {kind}.{resource}"
        try:
            amount = parse_quantity(raw)
        except QuantityError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if amount < 0:
            problems.append(f"{where}: {raw!r} is negative")
            continue
        values[(kind, resource)] = (raw.strip(), amount)
    for resource in ("cpu", "memory"):
        request, limit = values.get(("requests", resource)), values.get(("limits", resource))
        if request and limit and request[1] > limit[1]:
            problems.append(
                f"the sidecar's {resource} request {request[0]} is above its limit {limit[0]} "
                f"({ann.PREFIX}sidecar-{resource}-request, {ann.PREFIX}sidecar-{resource}-limit)"
            )
    requests = tuple((r, v[0]) for (k, r), v in sorted(values.items()) if k == "requests")
    limits = tuple((r, v[0]) for (k, r), v in sorted(values.items()) if k == "limits")
    return requests, limits


def _extra_env(raw: str | None, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None or not raw.strip():
        return ()
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            problems.append(f"{ann.ENV}: {item.strip()!r} is not NAME=value")
            continue
        if name in _RESERVED_SIDECAR_ENV:
            problems.append(
                f"{ann.ENV}: {name} is set by the injector; use {_RESERVED_SIDECAR_ENV[name]}"
            )
            continue
        pairs.append((name, value.strip()))
    return tuple(pairs)


def _max_body(raw: str | None, problems: list[str]) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    try:
        # A bare number is megabytes, as Dapr's dapr.io/http-max-request-size; a quantity
        # ("16Mi") is taken as bytes.
        amount = Decimal(int(text)) * (1 << 20) if text.isdigit() else parse_quantity(text)
    except QuantityError:
        problems.append(
            f"{ann.MAX_BODY_SIZE}: {raw!r} is neither a number of megabytes nor a quantity (16Mi)"
        )
        return None
    if not 0 < amount <= _MAX_BODY_LIMIT:
        problems.append(f"{ann.MAX_BODY_SIZE}: {raw!r} must be above 0 and at most 1Gi")
        return None
    return int(amount)


def _component_names(raw: str | None, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    names: list[str] = []
    for item in raw.split(","):
        name = item.strip()
        if not name:
            continue
        if not _DNS_LABEL.match(name) or len(name) > 63:
            problems.append(f"{ann.COMPONENTS}: {name!r} is not a component name")
        elif name not in names:
            names.append(name)
    if not names and not problems:
        problems.append(f"{ann.COMPONENTS}: names no component; remove it to use all in scope")
    return tuple(names)


def _check_containers(
    spec: Mapping[str, Any], http_port: int | None, metrics_port: int | None, problems: list[str]
) -> None:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    init = [c for c in spec.get("initContainers") or [] if isinstance(c, Mapping)]
    for c in containers:
        if c.get("name") == SIDECAR_NAME:
            problems.append(
                f"the container name {SIDECAR_NAME!r} is reserved for the injected sidecar; rename it"
            )
    ours = {http_port: ann.HTTP_PORT, metrics_port: ann.METRICS_PORT}
    # Containers of a pod share one network namespace: a port the app declares is taken.
    for c in [*containers, *init]:
        if c.get("name") == SIDECAR_NAME:
            continue
        for port in c.get("ports") or []:
            number = port.get("containerPort") if isinstance(port, Mapping) else None
            if number in ours and number is not None:
                problems.append(
                    f"port {number} is used by container {c.get('name')!r}; move the sidecar with "
                    f"{ours[number]}"
                )
    # A user volume may not take one of our names (ours are recognised by their source, so an
    # already-injected pod passes).
    for volume in spec.get("volumes") or []:
        if not isinstance(volume, Mapping) or volume.get("name") not in _OUR_VOLUMES:
            continue
        if volume["name"] == WIRING_VOLUME:
            ours_too = (volume.get("secret") or {}).get("secretName") == WIRING_SECRET_NAME
        else:
            ours_too = "emptyDir" in volume
        if not ours_too:
            problems.append(
                f"the volume name {volume['name']!r} is reserved for statecar; rename it"
            )


def _env_overrides(spec: Mapping[str, Any], http_port: int | None) -> list[str]:
    """A container that sets the port variables itself keeps its value: say so if it differs."""
    notes = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if not isinstance(c, Mapping) or c.get("name") == SIDECAR_NAME:
            continue
        for entry in c.get("env") or []:
            if not isinstance(entry, Mapping) or entry.get("name") not in (
                env.DAPR_HTTP_PORT,
                env.HTTP_PORT,
            ):
                continue
            value = entry.get("value")
            if value is not None and value != str(http_port):
                notes.append(
                    f"container {c.get('name')!r} sets {entry['name']}={value}, but the statecar "
                    f"sidecar listens on {http_port}; its own value is kept"
                )
    return notes


def _components_in_scope(
    *,
    namespace: str,
    app_id: str,
    components: Sequence[ComponentSpec],
    requested: tuple[str, ...],
    warnings: list[str],
) -> tuple[tuple[str, ...], Skip | None]:
    here = [c for c in components if c.namespace in (None, namespace)]
    if not here:
        return (), Skip(
            "NoComponents",
            f"no valid StateStoreComponent in namespace {namespace!r}, so no statecar "
            "sidecar was injected; create one (kubectl get ssc) and recreate the pod",
            notify=True,
        )
    by_name = {c.name: c for c in here}
    chosen = here
    if requested:
        unknown = [n for n in requested if n not in by_name]
        if unknown:
            warnings.append(
                f"{ann.COMPONENTS} names {', '.join(unknown)}, which namespace {namespace!r} does "
                "not have (yet); the sidecar opens them when they appear"
            )
        chosen = [by_name[n] for n in requested if n in by_name]
    in_scope = [c for c in chosen if c.in_scope(app_id)]
    out_of_scope = [c for c in chosen if not c.in_scope(app_id)]
    if requested and out_of_scope:
        warnings.append(
            f"app id {app_id!r} is not in the scopes of {', '.join(c.name for c in out_of_scope)}"
        )
    if not in_scope:
        described = (
            ", ".join(
                f"{c.name} (scopes: {', '.join(c.scopes)})" if c.scopes else c.name for c in chosen
            )
            or "none of the requested ones exist"
        )
        return (), Skip(
            "NoComponentsInScope",
            f"no StateStoreComponent of namespace {namespace!r} is in scope for app id {app_id!r} "
            f"({described}), so no statecar sidecar was injected; add the app id to a component's "
            f"scopes or set {ann.APP_ID}",
            notify=True,
        )
    return tuple(c.name for c in in_scope), None
