"""
The sidecar's settings, read once at start-up into a frozen object and passed explicitly.

Sources, later wins: defaults, environment (`STATECAR_*`, plus daprd's `DAPR_HTTP_PORT`,
`DAPR_GRPC_PORT` and `DAPR_API_TOKEN` so an app's Dapr settings carry over), then command-line flags.
Nothing else in the sidecar reads the environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from statecar_contract import env

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024  # daprd's default --max-body-size (4 MiB)
# Slow clients (docs/state-api.md, "Slow and idle clients"). The header timeout is Go's common
# ReadHeaderTimeout; the body timeout lets a 4 MiB body cross a slow link but not a trickle.
DEFAULT_READ_HEADER_TIMEOUT = 10.0
DEFAULT_READ_BODY_TIMEOUT = 30.0
# The state API serves the app's own pooled connections; the metrics port, the kubelet's probes
# and Prometheus: a handful each. Both are lowered to fit the descriptor limit (server.py).
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_METRICS_MAX_CONNECTIONS = 64
# daprd's default --dapr-graceful-shutdown-seconds (dapr pkg/runtime/config.go
# DefaultGracefulShutdownDuration).
DEFAULT_SHUTDOWN_GRACE = 5.0
# Long enough for a store on the same node to answer a 10-operation transaction (~70 µs in
# Redis, ~100 µs in all) and for a client's next request (statecar_sidecar.busypoll;
# bench/README.md, "Issue 12").
DEFAULT_BUSY_POLL_US = 200
MAX_BUSY_POLL_US = 10_000


class SettingsError(ValueError):
    """A setting has a bad value; the message names the variable or flag and the fix."""


@dataclass(frozen=True)
class SidecarSettings:
    """Everything the sidecar reads from its flags and environment, once, at start-up."""

    app_id: str = ""
    namespace: str | None = None
    http_port: int = 3500
    #: The Dapr gRPC API's port (daprd's default 50001); 0 turns the gRPC API off.
    grpc_port: int = 50001
    listen_address: str = "127.0.0.1"
    metrics_port: int = 9090
    metrics_address: str = "0.0.0.0"  # noqa: S104 -- health and metrics must reach the kubelet and Prometheus
    components_path: Path | None = None
    wiring_file: Path | None = None
    secrets_file: Path | None = None
    api_token: str | None = field(default=None, repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT
    read_body_timeout: float = DEFAULT_READ_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    metrics_max_connections: int = DEFAULT_METRICS_MAX_CONNECTIONS
    log_level: str = "info"
    log_json: bool = False
    #: daprd's `spec.metrics.recordErrorCodes`: count answered errors in dapr_error_code_total.
    record_error_codes: bool = False
    reload_interval: float = 1.0
    #: The subset of the namespace's components this app asked for (`statecar.io/components`);
    #: empty means every component in scope.
    components: tuple[str, ...] = ()
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: More component folders after `components_path` (daprd's repeated `--resources-path`).
    extra_components_paths: tuple[Path, ...] = ()
    #: daprd's rule for a state component that cannot be served: unless it sets
    #: `spec.ignoreErrors: true`, the sidecar refuses to start (`statecar daprd` sets this).
    refuse_failed_components: bool = False
    #: Seconds the calls in flight get on SIGINT/SIGTERM before they are cancelled
    #: (`--dapr-graceful-shutdown-seconds`, daprd's default 5); `math.inf`: no bound (daprd's 0).
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    #: More addresses the state API binds, on the same ports (`--dapr-listen-addresses a,b`).
    extra_listen_addresses: tuple[str, ...] = ()
    #: Log each API call at info (`--enable-api-logging`).
    api_logging: bool = False
    #: How long, in µs, the event loop polls instead of sleeping when a store's reply or the
    #: client's next request is due (`statecar_sidecar.busypoll`); 0 never.
    busy_poll_us: int = DEFAULT_BUSY_POLL_US

    @property
    def components_paths(self) -> tuple[Path, ...]:
        """Every component folder, in the order given."""
        first = (self.components_path,) if self.components_path is not None else ()
        return first + self.extra_components_paths

    def with_overrides(self, **changes: Any) -> SidecarSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {value}")
    return value


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw) if raw.isascii() else float("nan")
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:  # also refuses nan and inf
        raise SettingsError(
            f"{name} must be a number of seconds above 0 (at most 86400), such as 10; got {raw!r}"
        )
    return value


def shutdown_grace(raw: str | int, name: str) -> float:
    """daprd's reading of a graceful-shutdown bound in whole seconds: a negative number is the
    default, 0 is no bound (dapr pkg/runtime/config.go, kit concurrency.NewRunnerCloserManager)."""
    try:
        seconds = int(raw)
    except ValueError:
        raise SettingsError(
            f"{name} must be a whole number of seconds, such as 5 (0: no bound); got {raw!r}"
        ) from None
    if seconds < 0:
        return DEFAULT_SHUTDOWN_GRACE
    return float(seconds) if seconds else math.inf


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _int(environ, name, default)
    if value < 1:
        raise SettingsError(f"{name} must be at least 1, got {value}")
    return value


def _busy_poll_us(environ: Mapping[str, str]) -> int:
    value = _int(environ, env.BUSY_POLL_US, DEFAULT_BUSY_POLL_US)
    if value > MAX_BUSY_POLL_US:
        raise SettingsError(
            f"{env.BUSY_POLL_US} is in µs and at most {MAX_BUSY_POLL_US} (a longer poll only "
            f"burns CPU); got {value}. Use {DEFAULT_BUSY_POLL_US}, the default, or 0 to turn "
            "busy-polling off"
        )
    return value


def _bool(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def from_environ(environ: Mapping[str, str] | None = None) -> SidecarSettings:
    environ = os.environ if environ is None else environ
    http_port = _int(environ, env.HTTP_PORT, _int(environ, env.DAPR_HTTP_PORT, 3500))
    grpc_port = _int(environ, env.GRPC_PORT, _int(environ, env.DAPR_GRPC_PORT, 50001))
    token = environ.get(env.API_TOKEN) or environ.get(env.DAPR_API_TOKEN) or None
    components = environ.get(env.COMPONENTS_PATH)
    wiring = environ.get(env.WIRING_FILE)
    secrets_file = environ.get(env.SECRETS_FILE)
    return SidecarSettings(
        app_id=environ.get(env.APP_ID) or environ.get(env.DAPR_APP_ID) or "",
        namespace=environ.get(env.NAMESPACE) or environ.get(env.DAPR_NAMESPACE) or None,
        http_port=http_port,
        grpc_port=grpc_port,
        listen_address=environ.get(env.LISTEN_ADDRESS) or "127.0.0.1",
        metrics_port=_int(environ, env.METRICS_PORT, 9090),
        metrics_address=environ.get(env.METRICS_ADDRESS) or "0.0.0.0",  # noqa: S104 -- see the field
        components_path=Path(components) if components else None,
        wiring_file=Path(wiring) if wiring else None,
        secrets_file=Path(secrets_file) if secrets_file else None,
        api_token=token,
        max_body_bytes=_int(environ, env.MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES),
        read_header_timeout=_seconds(environ, env.READ_HEADER_TIMEOUT, DEFAULT_READ_HEADER_TIMEOUT),
        read_body_timeout=_seconds(environ, env.READ_BODY_TIMEOUT, DEFAULT_READ_BODY_TIMEOUT),
        max_connections=_positive(environ, env.MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS),
        metrics_max_connections=_positive(
            environ, env.METRICS_MAX_CONNECTIONS, DEFAULT_METRICS_MAX_CONNECTIONS
        ),
        log_level=(environ.get(env.LOG_LEVEL) or "info").lower(),
        log_json=_bool(environ, env.LOG_JSON),
        record_error_codes=_bool(environ, env.RECORD_ERROR_CODES),
        busy_poll_us=_busy_poll_us(environ),
        shutdown_grace=shutdown_grace(
            (environ.get(env.GRACEFUL_SHUTDOWN_SECONDS) or "-1").strip(),
            env.GRACEFUL_SHUTDOWN_SECONDS,
        ),
        components=tuple(
            name.strip() for name in (environ.get(env.COMPONENTS) or "").split(",") if name.strip()
        ),
        # Locally, a secretKeyRef {name, key} resolves from the env var <NAME>_<KEY> (see loader).
        secrets={
            k: v for k, v in environ.items() if not k.startswith(("STATECAR_API", "DAPR_API"))
        },
    )
