"""
The operator's settings: read once from `STATECAR_OPERATOR_*` environment variables, then passed.

Nothing else in the operator reads the environment. Every field names its variable in its
metadata (`env`), so the chart's values and `statecar operator --help-env` can be checked
against this one list. A bad value raises `SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import socket
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from statecar_contract import annotations as ann
from statecar_operator import __version__

ENV_PREFIX: Final = "STATECAR_OPERATOR_"
_NAMESPACE_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
SIDECAR_ENV_PREFIX: Final = ENV_PREFIX + "SIDECAR_"

#: Where a pod's ServiceAccount namespace is mounted (the operator's own namespace in-cluster).
_SA_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {message}")


def _env(name: str, help_text: str) -> dict[str, str]:
    return {"env": name, "help": help_text}


@dataclass(frozen=True)
class InjectorSettings:
    """
    Cluster-wide defaults of the injected sidecar; pod annotations override them per pod.

    Dapr has no cluster-wide default for sidecar resources (dapr/dapr#4718, #2147): here the
    defaults are requests that let HPAs work and a memory limit, and no CPU limit (a CPU limit
    throttles a latency-sensitive proxy long before it protects the node).
    """

    image: str = field(
        default=f"ghcr.io/statecar/statecar:{__version__}",
        metadata=_env("IMAGE", "sidecar image (the same image as the operator's)"),
    )
    image_pull_policy: str = field(
        default="IfNotPresent", metadata=_env("IMAGE_PULL_POLICY", "Always | IfNotPresent | Never")
    )
    http_port: int = field(
        default=ann.DEFAULT_HTTP_PORT,
        metadata=_env("HTTP_PORT", "state API port on the pod's loopback"),
    )
    metrics_port: int = field(
        default=ann.DEFAULT_METRICS_PORT,
        metadata=_env("METRICS_PORT", "metrics and health port (reachable by kubelet/Prometheus)"),
    )
    log_level: str = field(default="info", metadata=_env("LOG_LEVEL", "sidecar log level"))
    cpu_request: str | None = field(default="50m", metadata=_env("CPU_REQUEST", "quantity"))
    memory_request: str | None = field(default="64Mi", metadata=_env("MEMORY_REQUEST", "quantity"))
    cpu_limit: str | None = field(default=None, metadata=_env("CPU_LIMIT", "quantity"))
    memory_limit: str | None = field(default="256Mi", metadata=_env("MEMORY_LIMIT", "quantity"))
    run_as_user: int = field(
        default=65532, metadata=_env("RUN_AS_USER", "uid (and gid) the sidecar runs as")
    )
    version: str = field(default=__version__, metadata=_env("VERSION", "recorded in pod status"))
    dapr_annotations: bool = field(
        default=False,
        metadata=_env(
            "DAPR_ANNOTATIONS",
            "honour dapr.io/enabled, app-id, ports, log level, resources, env and API token "
            "(migration; skipped while Dapr's own injector is installed)",
        ),
    )

    def config_hash(self) -> str:
        """
        The identity of the injection configuration, recorded on every injected pod
        (`injectorHash` in `statecar.io/status`) so stale sidecars can be found
        (`reconciliation.staleness`). The version is recorded on its own; the Dapr-annotations
        option changes which pods are injected, not how.
        """
        fields = dataclasses.asdict(self)
        fields.pop("version", None)
        fields.pop("dapr_annotations", None)
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InjectorSettings:
        """Only the sidecar defaults (what `statecar inject` needs offline)."""
        env = os.environ if environ is None else environ
        return cls(**_read_fields(cls, SIDECAR_ENV_PREFIX, env))


@dataclass(frozen=True)
class OperatorSettings:
    """Everything `statecar operator` is configured with."""

    namespace: str = field(
        default="",
        metadata=_env(
            "NAMESPACE", "the operator's namespace (Lease); default: its ServiceAccount's"
        ),
    )
    identity: str = field(
        default="",
        metadata=_env("POD_NAME", "this replica's name in the Lease; default: hostname + random"),
    )
    leader_election: bool = field(
        default=True,
        metadata=_env("LEADER_ELECTION", "false = this replica always reconciles (one replica)"),
    )
    lease_name: str = field(default="statecar-operator", metadata=_env("LEASE_NAME", "Lease name"))
    lease_duration: float = field(
        default=15.0, metadata=_env("LEASE_DURATION_SECONDS", "followers wait this long")
    )
    renew_deadline: float = field(
        default=10.0, metadata=_env("RENEW_DEADLINE_SECONDS", "leader steps down after this")
    )
    retry_period: float = field(
        default=2.0, metadata=_env("RETRY_PERIOD_SECONDS", "Lease renew/acquire interval")
    )
    webhook_addr: str = field(
        default="0.0.0.0",  # noqa: S104  # the API server reaches the webhook from outside the pod
        metadata=_env("WEBHOOK_ADDR", "address the webhook server listens on"),
    )
    webhook_port: int = field(default=9443, metadata=_env("WEBHOOK_PORT", "webhook HTTPS port"))
    webhook_host: str = field(
        default="",
        metadata=_env("WEBHOOK_HOST", "host name in a self-signed certificate and printed URLs"),
    )
    webhook_cert: str = field(
        default="", metadata=_env("WEBHOOK_CERT", "PEM certificate file; empty = self-signed")
    )
    webhook_key: str = field(default="", metadata=_env("WEBHOOK_KEY", "PEM private key file"))
    webhook_ca: str = field(
        default="", metadata=_env("WEBHOOK_CA", "PEM CA bundle of WEBHOOK_CERT (for caBundle)")
    )
    webhook_ca_dump: str = field(
        default="",
        metadata=_env("WEBHOOK_CA_DUMP", "write the CA bundle (caBundle) of the server here"),
    )
    # Operator-managed certificates (see `webhook_tls.rotation` and `webhook_tls.sources`): the
    # Lease holder keeps a CA and the serving certificate in this Secret and the caBundle in both
    # configurations.
    webhook_secret: str = field(
        default="",
        metadata=_env(
            "WEBHOOK_SECRET",
            "Secret (operator's namespace) of the operator-managed CA and serving certificate",
        ),
    )
    watch_namespaces: str = field(
        default="",
        metadata=_env(
            "NAMESPACES",
            "comma-separated namespaces to operate in (components, wiring, injection); "
            "empty = the whole cluster",
        ),
    )
    webhook_extra_sans: str = field(
        default="",
        metadata=_env(
            "WEBHOOK_EXTRA_SANS", "comma-separated extra DNS names/IPs of the serving certificate"
        ),
    )
    webhook_ca_validity: float = field(
        default=365 * 86400.0,
        metadata=_env("WEBHOOK_CA_VALIDITY_SECONDS", "lifetime of a new CA (rotated at 1/3 left)"),
    )
    webhook_ca_renew_before: float = field(
        default=0.0,
        metadata=_env(
            "WEBHOOK_CA_RENEW_BEFORE_SECONDS",
            "rotate the CA this long before it expires; 0 = with 1/3 of its lifetime left",
        ),
    )
    webhook_cert_validity: float = field(
        default=90 * 86400.0,
        metadata=_env(
            "WEBHOOK_CERT_VALIDITY_SECONDS", "lifetime of a serving certificate (renewed at 1/3)"
        ),
    )
    webhook_ca_overlap: float = field(
        default=600.0,
        metadata=_env(
            "WEBHOOK_CA_OVERLAP_SECONDS", "each step of a CA rotation waits this long (old+new)"
        ),
    )
    webhook_cert_sync: float = field(
        default=10.0,
        metadata=_env(
            "WEBHOOK_CERT_SYNC_SECONDS",
            "re-check certificate and caBundle at least this often (watches are immediate)",
        ),
    )
    health_addr: str = field(
        default="0.0.0.0",  # noqa: S104  # the kubelet probes from outside the pod
        metadata=_env("HEALTH_ADDR", "address of /healthz and /readyz"),
    )
    health_port: int = field(
        default=8080, metadata=_env("HEALTH_PORT", "port of /healthz, /readyz")
    )
    resync_interval: float = field(
        default=10.0,
        metadata=_env("RESYNC_SECONDS", "re-measure backends and re-check every namespace"),
    )
    probe_timeout: float = field(
        default=3.0, metadata=_env("PROBE_TIMEOUT_SECONDS", "bound of one reachability check")
    )
    log_level: str = field(default="INFO", metadata=_env("LOG_LEVEL", "DEBUG | INFO | WARNING"))
    stale_sidecars: bool = field(
        default=False,
        metadata=_env(
            "STALE_SIDECARS",
            "watch injected pods (read access to pods) and report stale sidecars",
        ),
    )
    auto_rollout: str = field(
        default="off",
        metadata=_env(
            "AUTO_ROLLOUT",
            "off | annotated (workloads with statecar.io/auto-rollout: true) | all: restart "
            "workloads whose sidecars are stale, one at a time (implies STALE_SIDECARS)",
        ),
    )
    dapr_components: bool = field(
        default=False,
        metadata=_env(
            "DAPR_COMPONENTS",
            "also wire Dapr's own state.* Components (components.dapr.io); needs their CRD",
        ),
    )
    injector: InjectorSettings = field(default_factory=InjectorSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read the settings; unset variables keep their defaults."""
        env = os.environ if environ is None else environ
        injector = InjectorSettings.from_env(env)
        values = _read_fields(cls, ENV_PREFIX, env, skip={"injector"})
        settings = cls(**values, injector=injector)
        if not settings.namespace:
            settings = dataclasses.replace(settings, namespace=_default_namespace())
        if not settings.identity:
            # Unique per process even on one host (two operators on a laptop): the Lease must
            # tell them apart, as client-go's leader election requires unique identities.
            identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
            settings = dataclasses.replace(settings, identity=identity)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in self.namespaces:
            if not _NAMESPACE_NAME.fullmatch(name):
                raise SettingsError(ENV_PREFIX + "NAMESPACES", f"{name!r} is not a namespace name")
        for name, port in (("WEBHOOK_PORT", self.webhook_port), ("HEALTH_PORT", self.health_port)):
            if not 0 < port < 65536:
                raise SettingsError(ENV_PREFIX + name, f"{port} is not a port (1-65535)")
        if not self.renew_deadline < self.lease_duration:
            # client-go's rule (leaderelection.NewLeaderElector): a leader that cannot renew must
            # stop working before another replica may take the Lease over.
            raise SettingsError(
                ENV_PREFIX + "RENEW_DEADLINE_SECONDS", "must be shorter than LEASE_DURATION_SECONDS"
            )
        if not self.retry_period < self.renew_deadline:
            raise SettingsError(
                ENV_PREFIX + "RETRY_PERIOD_SECONDS", "must be shorter than RENEW_DEADLINE_SECONDS"
            )
        if bool(self.webhook_cert) != bool(self.webhook_key):
            raise SettingsError(
                ENV_PREFIX + "WEBHOOK_KEY", "set both WEBHOOK_CERT and WEBHOOK_KEY, or neither"
            )
        if self.auto_rollout not in ("off", "annotated", "all"):
            raise SettingsError(
                ENV_PREFIX + "AUTO_ROLLOUT",
                f"expected off, annotated or all, got {self.auto_rollout!r}",
            )
        if self.resync_interval <= 0 or self.probe_timeout <= 0:
            raise SettingsError(ENV_PREFIX + "RESYNC_SECONDS", "intervals must be positive")
        if self.webhook_secret and self.webhook_cert:
            raise SettingsError(
                ENV_PREFIX + "WEBHOOK_SECRET",
                "either the operator manages the certificate (WEBHOOK_SECRET) or it is given "
                "as files (WEBHOOK_CERT), not both",
            )
        for name, seconds in (
            ("WEBHOOK_CA_VALIDITY_SECONDS", self.webhook_ca_validity),
            ("WEBHOOK_CERT_VALIDITY_SECONDS", self.webhook_cert_validity),
            ("WEBHOOK_CA_OVERLAP_SECONDS", self.webhook_ca_overlap),
            ("WEBHOOK_CERT_SYNC_SECONDS", self.webhook_cert_sync),
        ):
            if not seconds > 0:
                raise SettingsError(ENV_PREFIX + name, f"{seconds} is not a positive duration")
        renew_before = self.webhook_ca_renew_before
        if renew_before < 0 or (renew_before and not renew_before < self.webhook_ca_validity):
            raise SettingsError(
                ENV_PREFIX + "WEBHOOK_CA_RENEW_BEFORE_SECONDS",
                "must be 0 or less than WEBHOOK_CA_VALIDITY_SECONDS",
            )
        if renew_before and renew_before <= 2 * self.webhook_ca_overlap:
            # The two overlap steps of a rotation must be over before the old CA expires.
            raise SettingsError(
                ENV_PREFIX + "WEBHOOK_CA_RENEW_BEFORE_SECONDS",
                "must be more than twice WEBHOOK_CA_OVERLAP_SECONDS",
            )
        if self.webhook_secret and self.webhook_ca_validity <= 6 * self.webhook_ca_overlap:
            # A rotation starts with a third of the CA's lifetime left and takes two overlap
            # steps: it must be over before the old CA expires.
            raise SettingsError(
                ENV_PREFIX + "WEBHOOK_CA_VALIDITY_SECONDS",
                "must be more than six times WEBHOOK_CA_OVERLAP_SECONDS",
            )

    @property
    def watches_pods(self) -> bool:
        """Injected pods are watched: to report stale sidecars, or to roll them out."""
        return self.stale_sidecars or self.auto_rollout != "off"

    @property
    def namespaces(self) -> tuple[str, ...]:
        """`NAMESPACES` as a sorted list without repeats; empty means cluster-wide."""
        return tuple(sorted({n.strip() for n in self.watch_namespaces.split(",") if n.strip()}))

    @property
    def extra_sans(self) -> tuple[str, ...]:
        """`WEBHOOK_EXTRA_SANS` as a list (e.g. 127.0.0.1 for an API server calling by URL)."""
        return tuple(n.strip() for n in self.webhook_extra_sans.split(",") if n.strip())


def env_variables() -> list[tuple[str, str, str]]:
    """(variable, default, help) for every setting: the reference printed by `--help-env`."""
    rows: list[tuple[str, str, str]] = []
    for prefix, cls in ((ENV_PREFIX, OperatorSettings), (SIDECAR_ENV_PREFIX, InjectorSettings)):
        defaults = cls()
        for f in dataclasses.fields(cls):
            if "env" in f.metadata:
                value = getattr(defaults, f.name)
                rows.append(
                    (
                        prefix + f.metadata["env"],
                        "" if value is None else str(value),
                        f.metadata["help"],
                    )
                )
    return rows


def _default_namespace() -> str:
    try:
        return _SA_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _read_fields(
    cls: type[Any],
    prefix: str,
    env: Mapping[str, str],
    skip: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or "env" not in f.metadata:
            continue
        variable = prefix + f.metadata["env"]
        raw = env.get(variable)
        if raw is None:
            continue
        values[f.name] = _convert(variable, raw.strip(), hints[f.name])
    return values


def _convert(variable: str, raw: str, hint: object) -> object:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = (
        next((a for a in typing.get_args(hint) if a is not type(None)), hint) if optional else hint
    )
    if optional and raw == "":
        return None
    if base is str:
        return raw
    if base is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(variable, f"expected true or false, got {raw!r}")
    if base is int:
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(variable, f"expected an integer, got {raw!r}") from None
    if base is float:
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(variable, f"expected a number of seconds, got {raw!r}") from None
    raise SettingsError(variable, f"unsupported setting type {hint!r}")  # pragma: no cover
