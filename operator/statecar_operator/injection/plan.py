"""
The injector's decision, as a pure function (no kopf, no Kubernetes client).

`plan_injection` reads a pod (or pod template) and the namespace's components and answers with
an `InjectionPlan`, a `Skip` (with a reason that becomes an admission warning and an Event), or
raises `InjectionError` (what it cannot make safe: a bad `statecar.io/*` annotation, hostNetwork
without an API token, a name the injection takes, or, offline, a malformed pod), which admission
turns into a rejection naming the annotation or field and the fix. `annotations` reads each annotation's value; `patching.apply_injection`
puts a plan into the pod, the same way for the webhook and for `statecar inject` (`offline`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_contract import env
from statecar_contract.components import ComponentSpec
from statecar_contract.wiring import WIRING_SECRET_NAME, is_wiring_secret_name
from statecar_operator.injection.annotations import (
    SecretKey,
    bool_problem,
    parse_bool,
    read_api_token,
    read_app_id,
    read_component_names,
    read_extra_env,
    read_log_level,
    read_max_body,
    read_optional_bool,
    read_port,
    read_resources,
    shown,
    unknown_keys,
)
from statecar_operator.settings import InjectorSettings

#: Names the injection takes in the pod: a pod that already uses one for its own is refused.
SIDECAR_NAME: Final = ann.SIDECAR_CONTAINER_NAME
#: The injected container's command (a `statecar` init container running it is ours).
SIDECAR_COMMAND: Final = ("statecar", "sidecar")
WIRING_VOLUME: Final = "statecar-wiring"
TMP_VOLUME: Final = "statecar-tmp"
DATA_VOLUME: Final = "statecar-data"
_OUR_VOLUMES: Final = (WIRING_VOLUME, TMP_VOLUME, DATA_VOLUME)

_IMAGE: Final = re.compile(r"^[a-zA-Z0-9][^\s]*$")


#: Ports daprd binds in a pod (HTTP, public health, gRPC, internal gRPC, metrics): a pod asking
#: for both sidecars would have two servers on 3500/9090.
_DAPR_PORTS: Final = frozenset({3500, 3501, 50001, 50002, 9090})
_DAPR_ENABLED: Final = "dapr.io/enabled"


#: Problems listed in a refusal's message (all of them stay in `InjectionError.problems`).
MAX_PROBLEMS_SHOWN: Final = 20


class InjectionError(ValueError):
    """The pod asked for injection with annotations that cannot be honoured (admission rejects)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = f"statecar cannot inject this pod: {self.problems[0]}"
        else:
            # The message becomes an admission denial and an Event: a hostile pod with thousands
            # of problems gets the first ones and a count, not megabytes.
            shown = self.problems[:MAX_PROBLEMS_SHOWN]
            text = "statecar cannot inject this pod: " + "; ".join(
                f"({i}) {p}" for i, p in enumerate(shown, 1)
            )
            if len(self.problems) > len(shown):
                text += f"; and {len(self.problems) - len(shown)} more problems"
        super().__init__(text)


@dataclass(frozen=True)
class Skip:
    """No sidecar for this pod. `notify`: the pod asked for one, so say why (warning + Event)."""

    reason: str
    message: str
    notify: bool


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
    #: The Dapr gRPC API's port on the pod's loopback, exported to the app as DAPR_GRPC_PORT.
    grpc_port: int = ann.DEFAULT_GRPC_PORT
    #: `InjectorSettings.config_hash`: which injection configuration made this sidecar.
    injector_hash: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def status_annotation(self) -> str:
        """The JSON stamped on the pod: what was injected, from which image, with which wiring."""
        return json.dumps(
            {
                "appId": self.app_id,
                "configHash": self.config_hash,
                "image": self.image,
                "injectorHash": self.injector_hash,
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
    config_hash: str | Callable[[str], str | None] | None = None,
    dapr_injector_installed: bool = False,
) -> InjectionPlan | Skip:
    """
        Decide whether and how to inject `pod` (a Pod or a pod template: `metadata` + `spec`).

        `components_in_namespace` are the namespace's *valid* components (invalid ones never reach
        the wiring); `config_hash` is the hash of the pod's wiring Secrets, if there is one yet, or a
    function of the app id giving it (the webhook's: the pod's app id is only known here).
        Raises InjectionError listing every problem with the pod's `statecar.io/*` annotations and
        with the pod itself (hostNetwork without a token, reserved names, a malformed shape).
    """
    metadata: Any = pod.get("metadata") or {}
    annotations: Any = metadata.get("annotations") or {} if isinstance(metadata, Mapping) else {}
    if not isinstance(metadata, Mapping):
        raise InjectionError([f"metadata: must be a map, not {_kind(metadata)}"])
    if not isinstance(annotations, Mapping):
        raise InjectionError(
            [f"metadata.annotations: must be a map (name: value), not {_kind(annotations)}"]
        )
    ours, not_strings = _our_annotations(annotations)
    dapr_keys: dict[str, str] = {}
    if settings.dapr_annotations and ann.ENABLED not in ours:
        dapr, dapr_notes = from_dapr_annotations(annotations)
        if dapr.get(ann.ENABLED) is not None and parse_bool(dapr[ann.ENABLED]) is True:
            if dapr_injector_installed:
                return Skip(
                    "DaprInjectorInstalled",
                    f"Dapr's own sidecar injector is installed (MutatingWebhookConfiguration "
                    f"{ann.DAPR_INJECTOR_WEBHOOK}), so it serves {_DAPR_ENABLED}; statecar "
                    "honours dapr.io/* annotations only where it is not. Set "
                    f'{ann.ENABLED}: "true" to get statecar instead',
                    notify=True,
                )
            dapr_keys = {v: k for k, v in ann.DAPR_EQUIVALENTS.items() if v in dapr}
            # The pod's own statecar.io/* annotations win over the translated ones.
            ours = {**dapr, **ours}
            warnings_from_dapr = dapr_notes
        else:
            warnings_from_dapr = []
    else:
        warnings_from_dapr = []
    if not ours and not not_strings:
        return Skip("NotRequested", "the pod has no statecar.io annotations", notify=False)
    if not_strings:
        # Kubernetes stores annotation values as strings: the API server refuses the rest.
        raise InjectionError(not_strings)
    if ann.ENABLED not in ours:
        keys = ", ".join(sorted(ours))
        return Skip(
            "NotEnabled",
            f'the pod sets {keys} but not {ann.ENABLED}: "true", so no statecar sidecar was injected',
            notify=True,
        )
    enabled = parse_bool(ours[ann.ENABLED])
    if enabled is None:
        raise InjectionError([bool_problem(ann.ENABLED, ours[ann.ENABLED])])
    if not enabled:
        return Skip("OptedOut", f"{ann.ENABLED} is {ours[ann.ENABLED]!r}", notify=False)

    problems: list[str] = []
    warnings: list[str] = list(warnings_from_dapr)
    spec = _check_shape(pod)
    problems.extend(unknown_keys(ours))

    app_id = read_app_id(ours, metadata, owner_name_hint, problems)
    http_port = read_port(ours, ann.HTTP_PORT, settings.http_port, problems)
    metrics_port = read_port(ours, ann.METRICS_PORT, settings.metrics_port, problems)
    if http_port == metrics_port and http_port is not None:
        problems.append(
            f"{ann.HTTP_PORT} and {ann.METRICS_PORT} are both {http_port}; they must differ"
        )
    grpc_port = read_port(ours, ann.GRPC_PORT, ann.DEFAULT_GRPC_PORT, problems)
    if grpc_port is not None and grpc_port in (http_port, metrics_port):
        problems.append(
            f"{ann.GRPC_PORT} is {grpc_port}, already the sidecar's HTTP or metrics port; "
            "they must differ"
        )
    log_level = read_log_level(ours.get(ann.LOG_LEVEL, settings.log_level), problems)
    log_json = read_optional_bool(ours, ann.LOG_AS_JSON, problems)
    api_token = read_api_token(ours.get(ann.API_TOKEN_SECRET), problems)
    image = ours.get(ann.SIDECAR_IMAGE, settings.image).strip()
    if not _IMAGE.match(image):
        problems.append(f"{ann.SIDECAR_IMAGE}: {shown(image)} is not an image reference")
    requests, limits = read_resources(ours, settings, problems)
    extra_env = read_extra_env(ours.get(ann.ENV), problems)
    max_body = read_max_body(ours.get(ann.MAX_BODY_SIZE), problems)
    requested = read_component_names(ours.get(ann.COMPONENTS), problems)

    _check_containers(spec, annotations, http_port, metrics_port, problems, grpc_port)
    if (
        not dapr_keys
        and parse_bool(str(annotations.get(_DAPR_ENABLED, "false")))
        and ({http_port, metrics_port, grpc_port} & _DAPR_PORTS)
    ):
        problems.append(
            f"the pod also asks for the Dapr sidecar ({_DAPR_ENABLED}), which binds "
            f"{', '.join(str(p) for p in sorted(_DAPR_PORTS))}; statecar serves the Dapr state API "
            f"itself, so drop one of the two (or move statecar with {ann.HTTP_PORT}, "
            f"{ann.GRPC_PORT} and {ann.METRICS_PORT})"
        )
    warnings.extend(_env_overrides(spec, http_port))
    if spec.get("hostNetwork") is True:
        if api_token is None and ann.API_TOKEN_SECRET not in ours:
            problems.append(
                "spec.hostNetwork: the pod shares the node's network, so the sidecar's state API "
                "would listen on the node's loopback, where every process and hostNetwork pod of "
                f"the node could call it; set {ann.API_TOKEN_SECRET} (a Secret holding an API "
                "token) or drop hostNetwork"
            )
        warnings.append(
            f"the pod uses hostNetwork, so the statecar state API port {http_port} is bound on the "
            "node's loopback and must be unique among such pods on a node"
        )
    if dapr_keys:
        # Name what the pod says: a translated value's problem is its dapr.io/* annotation's.
        problems = [_dapr_named(p, dapr_keys) for p in problems]
    if problems or app_id is None or http_port is None or metrics_port is None or grpc_port is None:
        raise InjectionError(problems)  # each None above came with a problem

    in_scope = _components_in_scope(
        namespace=namespace,
        app_id=app_id,
        components=components_in_namespace,
        requested=requested,
        warnings=warnings,
    )

    return InjectionPlan(
        app_id=app_id,
        image=image,
        image_pull_policy=settings.image_pull_policy,
        http_port=http_port,
        metrics_port=metrics_port,
        grpc_port=grpc_port,
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
        config_hash=config_hash(app_id) if callable(config_hash) else config_hash,
        injector_hash=settings.config_hash(),
        warnings=tuple(warnings),
    )


def from_dapr_annotations(annotations: Mapping[Any, Any]) -> tuple[dict[str, str], list[str]]:
    """
    Dapr's annotations of a pod as their `statecar.io/*` equivalents (`ann.DAPR_EQUIVALENTS`),
    and a warning naming the `dapr.io/*` annotations statecar has no use for (it serves only
    the state API: `dapr.io/app-port`, `dapr.io/config`, ... change nothing). Pure; values are
    passed through unchanged and checked like the pod's own `statecar.io/*` ones.
    """
    translated: dict[str, str] = {}
    ignored: list[str] = []
    for key, value in annotations.items():
        if not isinstance(key, str) or not key.startswith(ann.DAPR_PREFIX):
            continue
        target = ann.DAPR_EQUIVALENTS.get(key)
        if target is None:
            ignored.append(key)
        elif isinstance(value, str):
            translated[target] = value
    notes = []
    if ann.ENV in translated:
        # dapr.io/env configures daprd (GOMAXPROCS, GODEBUG, ...): only what statecar's sidecar
        # reads is passed on; a malformed item is kept, to be refused with its message.
        kept, dropped = [], []
        for item in translated[ann.ENV].split(","):
            name, sep, _ = item.partition("=")
            if sep and name.strip() not in env.USER_SETTABLE:
                dropped.append(name.strip())
            elif item.strip():
                kept.append(item)
        translated[ann.ENV] = ",".join(kept)
        if dropped:
            notes.append(
                f"{ann.DAPR_PREFIX}env: {', '.join(dropped)} set daprd's environment; the "
                "statecar sidecar does not receive them"
            )
    if ignored:
        notes.append(
            "statecar serves only Dapr's state API; these annotations change nothing: "
            + ", ".join(sorted(ignored))
        )
    return translated, notes


def _dapr_named(problem: str, dapr_keys: Mapping[str, str]) -> str:
    """A problem about a translated annotation, naming the dapr.io/* key the pod set."""
    for ours, theirs in dapr_keys.items():
        if problem.startswith(ours + ":"):
            return theirs + problem[len(ours) :]
    return problem


def _kind(value: Any) -> str:
    """How a value of the wrong type is named in a problem."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _our_annotations(annotations: Mapping[Any, Any]) -> tuple[dict[str, str], list[str]]:
    """The pod's `statecar.io/*` annotations, and a problem for each whose value is no string."""
    ours: dict[str, str] = {}
    problems: list[str] = []
    for key, value in annotations.items():
        if not isinstance(key, str) or not key.startswith(ann.PREFIX) or key == ann.STATUS:
            continue
        if isinstance(value, str):
            ours[key] = value
        elif value is None:
            problems.append(f"{key}: has no value (null); give it one, quoted, or remove it")
        elif isinstance(value, (bool, int, float)):
            literal = str(value).lower() if isinstance(value, bool) else str(value)
            problems.append(
                f"{key}: {literal} is {_kind(value)}, but annotation values are strings; "
                f'quote it ({key}: "{literal}")'
            )
        else:
            problems.append(f"{key}: is {_kind(value)}, but annotation values are strings")
    return ours, problems


#: Lists of objects in a pod spec that the injector reads or writes, and what each item is.
_SPEC_LISTS: Final = {
    "containers": "containers",
    "initContainers": "containers",
    "volumes": "volumes",
}
_CONTAINER_LISTS: Final = ("env", "ports", "volumeMounts")


def _check_shape(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """
    The pod's spec, once every part the injector reads or writes has the type Kubernetes gives it.

    The API server decodes a pod before any webhook sees it, so only `statecar inject` meets these
    (a hand-written manifest): each is refused with its field path instead of a traceback.
    """
    problems: list[str] = []
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels")
    if labels is not None and not isinstance(labels, Mapping):
        problems.append(f"metadata.labels: must be a map (name: value), not {_kind(labels)}")
    spec = pod.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise InjectionError([f"spec: must be a map, not {_kind(spec)}"])
    for key in _SPEC_LISTS:
        items = spec.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.append(f"spec.{key}: must be a list, not {_kind(items)}")
            continue
        for index, item in enumerate(items):
            where = f"spec.{key}[{index}]"
            if not isinstance(item, Mapping):
                problems.append(f"{where}: must be a map, not {_kind(item)}")
                continue
            if not isinstance(item.get("name"), str):
                problems.append(f"{where}.name: must be a string, not {_kind(item.get('name'))}")
            if _SPEC_LISTS[key] != "containers":
                continue
            for field_name in _CONTAINER_LISTS:
                entries = item.get(field_name)
                if entries is None:
                    continue
                if not isinstance(entries, list) or not all(
                    isinstance(e, Mapping) for e in entries
                ):
                    problems.append(
                        f"{where}.{field_name}: must be a list of maps, not {_kind(entries)}"
                        if not isinstance(entries, list)
                        else f"{where}.{field_name}: every entry must be a map"
                    )
                    continue
                for number, entry in enumerate(entries):
                    problems.extend(_entry_problems(f"{where}.{field_name}[{number}]", entry))
    if problems:
        raise InjectionError(problems)
    return spec


def _is_our_sidecar(container: Mapping[str, Any], annotations: Mapping[str, Any]) -> bool:
    """A `statecar` init container from an earlier injection (re-invocation, `statecar inject`
    on its own output): the pod carries our status, and the container runs the sidecar."""
    return ann.STATUS in annotations and container.get("command") == list(SIDECAR_COMMAND)


def _entry_problems(where: str, entry: Mapping[str, Any]) -> list[str]:
    """What is wrong with an env, port or mount entry's fields the injector compares."""
    problems = []
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        problems.append(f"{where}.name: must be a string, not {_kind(name)}")
    port = entry.get("containerPort")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        problems.append(f"{where}.containerPort: must be a number, not {_kind(port)}")
    return problems


def _check_containers(
    spec: Mapping[str, Any],
    annotations: Mapping[str, Any],
    http_port: int | None,
    metrics_port: int | None,
    problems: list[str],
    grpc_port: int | None = None,
) -> None:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, Mapping)]
    init = [c for c in spec.get("initContainers") or [] if isinstance(c, Mapping)]
    for c in containers:
        if c.get("name") == SIDECAR_NAME:
            problems.append(
                f"the container name {SIDECAR_NAME!r} is reserved for the injected sidecar; rename it"
            )
    for index, c in enumerate(init):
        if c.get("name") == SIDECAR_NAME and not _is_our_sidecar(c, annotations):
            # Injection puts its own `statecar` first and would silently drop this one.
            problems.append(
                f"spec.initContainers[{index}]: the name {SIDECAR_NAME!r} is reserved for the "
                "injected sidecar, which would replace this init container; rename it"
            )
    ours = {http_port: ann.HTTP_PORT, metrics_port: ann.METRICS_PORT, grpc_port: ann.GRPC_PORT}
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
            ours_too = _is_our_wiring_volume(volume)
        else:
            ours_too = "emptyDir" in volume
        if not ours_too:
            problems.append(
                f"the volume name {volume['name']!r} is reserved for statecar; rename it"
            )


def _is_our_wiring_volume(volume: Mapping[str, Any]) -> bool:
    """An injected wiring volume: today's projected one, or an earlier release's Secret volume."""
    if (volume.get("secret") or {}).get("secretName") == WIRING_SECRET_NAME:
        return True
    sources = (volume.get("projected") or {}).get("sources")
    return (
        isinstance(sources, list)
        and bool(sources)
        and all(
            isinstance(source, Mapping)
            and set(source) == {"secret"}
            and isinstance(source["secret"], Mapping)
            and is_wiring_secret_name(source["secret"].get("name"))
            for source in sources
        )
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
) -> tuple[str, ...]:
    """The components the sidecar opens now; none is a warning, never a reason to skip.

    A pod may be applied before its components (a GitOps sync, `kubectl apply -f dir/` in
    alphabetical order, one Helm chart holding both): it gets its sidecar anyway, which opens
    each component as soon as the operator wires it, without a restart.
    """
    here = [c for c in components if c.namespace in (None, namespace)]
    if not here:
        warnings.append(
            f"no valid StateStoreComponent in namespace {namespace!r} yet; the statecar sidecar "
            "is injected and opens components for app id "
            f"{app_id!r} as soon as they exist (kubectl get ssc), with no restart"
        )
        return ()
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
        warnings.append(
            f"no StateStoreComponent of namespace {namespace!r} is in scope for app id {app_id!r} "
            f"yet ({described}); the statecar sidecar is injected and opens a component as soon "
            f"as one is in scope (add the app id to its scopes, or set {ann.APP_ID})"
        )
    return tuple(c.name for c in in_scope)
