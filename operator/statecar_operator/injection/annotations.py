"""
Each `statecar.io/*` annotation's value, read and checked. Pure.

Every reader takes the pod's statecar annotations (or one raw value) and a `problems` list: a
value that cannot be honoured appends a sentence naming the annotation and the fix, so
`plan.plan_injection` can reject a pod with every problem at once instead of the first one.
Booleans take Dapr's words (`parse_bool`); quantities are Kubernetes' (`quantities`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_contract import env
from statecar_operator.injection.quantities import QuantityError, parse_quantity
from statecar_operator.injection.workloads import workload_name
from statecar_operator.settings import InjectorSettings

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
#: ASCII digits only: int() also takes "٣٥٠٠", "+3500", " 3500" and "3_500".
_DIGITS: Final = re.compile(r"^[0-9]{1,10}$")

#: Ports the sidecar may be given: not a privileged one (it runs as a non-root user with every
#: capability dropped, and 80/443 are the app's own), and a real TCP port.
MIN_PORT: Final = 1024
MAX_PORT: Final = 65535

#: Bounds on the sidecar's resources, requests and limits alike: beyond them a value is a typo
#: ("1e400", a page of nines) that the API server would round or the scheduler never satisfy.
MAX_CPU: Final = Decimal(64)  # cores
CPU_STEP: Final = Decimal("0.001")  # Kubernetes' CPU resolution (1m)
MIN_MEMORY: Final = Decimal(1 << 20)  # 1Mi: below it "64m" (millibytes) was meant as 64Mi
MAX_MEMORY: Final = Decimal(64 << 30)  # 64Gi

#: A value echoed in a problem is cut to this many characters (annotations may hold 256 KiB).
_SHOWN: Final = 40

#: Largest request body the sidecar may be told to accept.
_MAX_BODY_LIMIT: Final = 1 << 30

#: Variables outside the allow-list that users reach for, with the way to do it instead.
_REFUSED_ENV: Final[Mapping[str, str]] = {
    env.LISTEN_ADDRESS: (
        "it would move the state API off the pod's loopback, where anyone who reaches the pod "
        "could call it; apps in the pod reach it on 127.0.0.1 already, so remove it"
    ),
    env.COMPONENTS_PATH: (
        "the operator wires the sidecar's components (the statecar-wiring Secret); declare them "
        "as StateStoreComponents and remove it"
    ),
    env.SECRETS_FILE: (
        "the operator resolves the components' secrets into the wiring; reference them with "
        "secretKeyRef in the StateStoreComponent and remove it"
    ),
    "DAPR_APP_ID": f"the app id is set by the injector; use {ann.APP_ID}",
    env.DAPR_APP_ID: f"the app id is set by the injector; use {ann.APP_ID}",
    env.DAPR_NAMESPACE: "the namespace is the pod's own; remove it",
}

#: Env the injector sets on the sidecar; `statecar.io/env` may not override them.
_RESERVED_SIDECAR_ENV: Final[Mapping[str, str]] = {
    env.APP_ID: ann.APP_ID,
    env.NAMESPACE: "(the pod's namespace)",
    env.WIRING_FILE: "(the wiring Secret)",
    env.HTTP_PORT: ann.HTTP_PORT,
    env.GRPC_PORT: ann.GRPC_PORT,
    env.METRICS_PORT: ann.METRICS_PORT,
    env.LOG_LEVEL: ann.LOG_LEVEL,
    env.LOG_JSON: ann.LOG_AS_JSON,
    env.API_TOKEN: ann.API_TOKEN_SECRET,
    env.MAX_BODY_BYTES: ann.MAX_BODY_SIZE,
    env.COMPONENTS: ann.COMPONENTS,
    env.DAPR_API_TOKEN: ann.API_TOKEN_SECRET,
    env.DAPR_HTTP_PORT: ann.HTTP_PORT,
    env.DAPR_GRPC_PORT: ann.GRPC_PORT,
}


@dataclass(frozen=True)
class SecretKey:
    name: str
    key: str


def shown(value: object) -> str:
    """`value` as problems quote it: its repr, cut short so a huge value is not echoed back."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    return f"{text[: _SHOWN - 1]}\u2026 ({len(str(value))} characters)"


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


def bool_problem(key: str, raw: str) -> str:
    return f'{key}: {shown(raw)} is not a boolean; use "true" or "false"'


def read_optional_bool(ours: Mapping[str, str], key: str, problems: list[str]) -> bool | None:
    if key not in ours:
        return None
    value = parse_bool(ours[key])
    if value is None:
        problems.append(bool_problem(key, ours[key]))
    return value


def unknown_keys(ours: Mapping[str, str]) -> list[str]:
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


def read_app_id(
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
    if explicit is not None and not app_id:
        problems.append(
            f"{ann.APP_ID} is empty; give the app id, or remove it to use the workload's name"
        )
        return None
    if not app_id:
        problems.append(
            f"no app id: set {ann.APP_ID} (the pod has no owner, name or generateName to derive it from)"
        )
        return None
    if not is_valid_app_id(app_id):
        problems.append(
            f"{source}: {shown(app_id)} must be letters, digits, '-', '_' or '.', start and end with a "
            "letter or digit, at most 253 characters"
        )
        return None
    return app_id


def read_port(ours: Mapping[str, str], key: str, default: int, problems: list[str]) -> int | None:
    raw = ours.get(key)
    if raw is None:
        if not MIN_PORT <= default <= MAX_PORT:
            problems.append(
                f"the operator's default for {key} is {default}, outside {MIN_PORT}-{MAX_PORT}; "
                f"set {key}, or fix the operator's STATECAR_OPERATOR_SIDECAR_* setting"
            )
            return None
        return default
    text = raw.strip()
    if not _DIGITS.match(text):
        problems.append(
            f"{key}: {shown(raw)} is not a port number; write it in digits 0-9 "
            f"({MIN_PORT}-{MAX_PORT})"
        )
        return None
    port = int(text)
    if not MIN_PORT <= port <= MAX_PORT:
        problems.append(
            f"{key}: {port} is outside {MIN_PORT}-{MAX_PORT}; ports below {MIN_PORT} are "
            "privileged (the sidecar runs without capabilities) and usually the app's own, so "
            f"pick one in {MIN_PORT}-{MAX_PORT}"
        )
        return None
    return port


def read_log_level(raw: str, problems: list[str]) -> str:
    level = LOG_LEVELS.get(raw.strip().lower())
    if level is None:
        problems.append(
            f"{ann.LOG_LEVEL}: {shown(raw)} is not a log level (debug, info, warning, error, critical)"
        )
        return "info"
    return level


def read_api_token(raw: str | None, problems: list[str]) -> SecretKey | None:
    if raw is None:
        return None
    name, _, key = raw.strip().partition(":")
    key = key or DEFAULT_TOKEN_KEY
    if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(
            f"{ann.API_TOKEN_SECRET}: {shown(raw)} must name a Secret of the pod's namespace, "
            "optionally with the key: <secret> or <secret>:<key> (default key 'token')"
        )
        return None
    if len(key) > 253 or not _SECRET_KEY.match(key):
        problems.append(f"{ann.API_TOKEN_SECRET}: {shown(key)} is not a valid Secret key")
        return None
    return SecretKey(name=name, key=key)


def read_resources(
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
        bound = _resource_problem(resource, amount)
        if bound is not None:
            problems.append(f"{where}: {shown(raw)} {bound}")
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


def _resource_problem(resource: str, amount: Decimal) -> str | None:
    """Why `amount` of `resource` cannot be the sidecar's, with the fix; None when it can."""
    if amount < 0:
        return "is negative"
    if resource == "cpu":
        if amount > MAX_CPU:
            return f"is above {MAX_CPU} cores; give the sidecar at most {MAX_CPU} (500m, 2)"
        if amount % CPU_STEP:
            return "is finer than 1m (a thousandth of a core); round it to whole millicores"
        return None
    if amount > MAX_MEMORY:
        return "is above 64Gi; give the sidecar at most 64Gi (256Mi, 1Gi)"
    if amount % 1:
        return "is not a whole number of bytes; write it with a unit (64Mi, not 64m)"
    if 0 < amount < MIN_MEMORY:
        return "is below 1Mi; write it with a unit (64Mi, 1Gi)"
    return None


def read_extra_env(raw: str | None, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if raw is None or not raw.strip():
        return ()
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            problems.append(f"{ann.ENV}: {shown(item.strip())} is not NAME=value")
            continue
        if name in _RESERVED_SIDECAR_ENV:
            problems.append(
                f"{ann.ENV}: {name} is set by the injector; use {_RESERVED_SIDECAR_ENV[name]}"
            )
            continue
        if name in _REFUSED_ENV:
            problems.append(f"{ann.ENV}: {name} cannot be set: {_REFUSED_ENV[name]}")
            continue
        if name not in env.USER_SETTABLE:
            problems.append(
                f"{ann.ENV}: {shown(name)} is not one a pod may set, because it could change how "
                "the sidecar is wired or secured; remove it (allowed: "
                + ", ".join(sorted(env.USER_SETTABLE))
                + ")"
            )
            continue
        if any(name == seen for seen, _ in pairs):
            problems.append(f"{ann.ENV}: {name} is given twice; keep one")
            continue
        pairs.append((name, value.strip()))
    return tuple(pairs)


def read_max_body(raw: str | None, problems: list[str]) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    try:
        # A bare number is megabytes, as Dapr's dapr.io/http-max-request-size; a quantity
        # ("16Mi") is taken as bytes.
        amount = Decimal(int(text)) * (1 << 20) if _DIGITS.match(text) else parse_quantity(text)
    except QuantityError:
        problems.append(
            f"{ann.MAX_BODY_SIZE}: {shown(raw)} is neither a number of megabytes nor a quantity (16Mi)"
        )
        return None
    if not 0 < amount <= _MAX_BODY_LIMIT:
        problems.append(f"{ann.MAX_BODY_SIZE}: {shown(raw)} must be above 0 and at most 1Gi")
        return None
    return int(amount)


def read_component_names(raw: str | None, problems: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    names: dict[str, None] = {}  # ordered, and a set: a long list costs linear time
    for item in raw.split(","):
        name = item.strip()
        if not name:
            continue
        if not _DNS_LABEL.match(name) or len(name) > 63:
            problems.append(f"{ann.COMPONENTS}: {shown(name)} is not a component name")
        else:
            names[name] = None
    if not names and not problems:
        problems.append(f"{ann.COMPONENTS}: names no component; remove it to use all in scope")
    return tuple(names)
