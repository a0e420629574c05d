"""
`statecar daprd [daprd's flags]`: statecar started with daprd's command line (docs/daprd.md).

The flags are read as daprd's Go `flag` package reads them: `-flag` and `--flag`, `=value` or the
next argument, a boolean takes no separate value (`--log-as-json`, `--log-as-json=false`), the
first argument that is not a flag ends the flags, and an unknown flag is an error (exit 2).

Every daprd flag is one of three things here (`FLAGS`): served; accepted and ignored because it
concerns what a state-only sidecar does not have (the app channel, actors, placement, the
scheduler, sentry/mTLS, profiling, the internal gRPC and public ports, app health checks), each
with its reason; or refused, with the reason, when statecar cannot honour a value and ignoring it
would change how state behaves (`--mode kubernetes`, `--unix-domain-socket`). `--config` files (daprd's `Configuration`) are applied in order.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml

from statecar_contract import __version__

Kind = Literal["string", "int", "bool", "list"]
Use = Literal["served", "ignored"]


@dataclass(frozen=True)
class Flag:
    kind: Kind
    use: Use
    why: str


_APP = "the app channel: statecar never calls the app"
_HEALTH = "app health checks: statecar never calls the app"

#: daprd's flags (dapr/dapr cmd/daprd/options/options.go, the logger's and the metrics' own).
FLAGS: dict[str, Flag] = {
    "app-id": Flag("string", "served", "the app id: key prefix and component scopes"),
    "dapr-http-port": Flag("string", "served", "the HTTP state API's port (default 3500)"),
    "dapr-grpc-port": Flag("string", "served", "the gRPC state API's port (default 50001)"),
    "metrics-port": Flag("string", "served", "health and Prometheus metrics (default 9090)"),
    "enable-metrics": Flag("bool", "served", "false turns the metrics port off"),
    "metrics-listen-address": Flag("string", "served", "the metrics port's address"),
    "dapr-listen-addresses": Flag(
        "string", "served", "the state API's addresses (HTTP and gRPC), comma-separated"
    ),
    "resources-path": Flag("list", "served", "a folder of component YAML; repeatable"),
    "components-path": Flag("string", "served", "as --resources-path (daprd's deprecated name)"),
    "config": Flag("list", "served", "daprd Configuration files, applied in order"),
    "log-level": Flag("string", "served", "debug, info, warn, error, fatal or panic"),
    "log-as-json": Flag("bool", "served", "one JSON object per log line"),
    "enable-api-logging": Flag("bool", "served", "log every API call at info"),
    "dapr-graceful-shutdown-seconds": Flag(
        "int",
        "served",
        "seconds in-flight calls get on SIGINT/SIGTERM before they are cancelled (default 5;"
        " negative: the default; 0: no bound)",
    ),
    "mode": Flag("string", "served", "standalone only: see docs/daprd.md"),
    "max-body-size": Flag("string", "served", "the largest request body (default 4Mi)"),
    "dapr-http-max-request-size": Flag("int", "served", "the largest request body, in MB"),
    "unix-domain-socket": Flag("string", "served", "refused when set: TCP only"),
    "version": Flag("bool", "served", "print the version and exit"),
    "build-info": Flag("bool", "served", "print the version and exit"),
    # Accepted, and not applying to a state-only sidecar.
    "app-port": Flag("string", "ignored", _APP),
    "app-protocol": Flag("string", "ignored", _APP),
    "app-channel-address": Flag("string", "ignored", _APP),
    "app-max-concurrency": Flag("int", "ignored", _APP),
    "app-ssl": Flag("bool", "ignored", _APP),
    "enable-app-health-check": Flag("bool", "ignored", _HEALTH),
    "app-health-check-path": Flag("string", "ignored", _HEALTH),
    "app-health-probe-interval": Flag("int", "ignored", _HEALTH),
    "app-health-probe-timeout": Flag("int", "ignored", _HEALTH),
    "app-health-threshold": Flag("int", "ignored", _HEALTH),
    "app-health-port": Flag("string", "ignored", _HEALTH),
    "placement-host-address": Flag("string", "ignored", "actors: statecar has none"),
    "scheduler-host-address": Flag("string", "ignored", "jobs, reminders: statecar has none"),
    "enable-mtls": Flag("bool", "ignored", "sidecar-to-sidecar mTLS: statecar has no such calls"),
    "sentry-address": Flag("string", "ignored", "sentry issues mTLS certificates: see enable-mtls"),
    "control-plane-address": Flag("string", "ignored", "Dapr's control plane: not used"),
    "control-plane-trust-domain": Flag("string", "ignored", "mTLS trust domain: not used"),
    "control-plane-namespace": Flag("string", "ignored", "Dapr's control plane: not used"),
    "enable-profiling": Flag("bool", "ignored", "Go's pprof: statecar is not Go"),
    "profile-port": Flag("string", "ignored", "Go's pprof: statecar is not Go"),
    "dapr-internal-grpc-port": Flag("string", "ignored", "sidecar-to-sidecar gRPC: none"),
    "dapr-internal-grpc-listen-address": Flag("string", "ignored", "sidecar-to-sidecar gRPC: none"),
    "dapr-public-port": Flag("string", "ignored", "healthz is on the state API's port"),
    "dapr-public-listen-address": Flag("string", "ignored", "see dapr-public-port"),
    "allowed-origins": Flag(
        "string", "ignored", "CORS for browser apps: not implemented; apps call from their process"
    ),
    "read-buffer-size": Flag("string", "ignored", "header buffer: statecar's parser has its own"),
    "dapr-http-read-buffer-size": Flag("int", "ignored", "see read-buffer-size"),
    "disable-builtin-k8s-secret-store": Flag("bool", "ignored", "Kubernetes mode only"),
    "dapr-block-shutdown-duration": Flag(
        "string", "ignored", "waits for the app to finish: statecar does not watch the app"
    ),
    "wait": Flag("bool", "ignored", "waits for daprd's outbound readiness: not used"),
}

#: Configuration `spec` sections: ignored (not applying) or refused (would change what is served).
_CONFIG_IGNORED = {
    "nameResolution": "service invocation's name resolution: statecar has none",
    "tracing": "tracing exporters: statecar exports no traces",
    "mtls": "sidecar-to-sidecar mTLS: none",
    "features": "preview features of daprd",
    "accessControl": "service invocation's access control: none",
    "appHttpPipeline": "middleware on calls to the app: statecar never calls the app",
    "workflow": "workflows: none",
    "wasm": "wasm: none",
    "logging": "served: apiLogging.enabled turns API logging on",
    "metric": "served: as metrics",
    "metrics": "served: enabled and recordErrorCodes",
}


class FlagError(ValueError):
    """A command line daprd would refuse, or a value statecar cannot honour (exit 2)."""


@dataclass
class Parsed:
    values: dict[str, object]
    rest: list[str]


_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_flags(argv: Sequence[str]) -> Parsed:
    """Go's `flag.FlagSet.Parse`, over `FLAGS`."""
    values: dict[str, object] = {}
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        if len(arg) < 2 or not arg.startswith("-"):
            break
        index += 1
        if arg == "--":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name.startswith(("-", "=")):
            raise FlagError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        if name in ("h", "help"):
            raise SystemExit(usage())
        flag = FLAGS.get(name)
        if flag is None:
            raise FlagError(f"flag provided but not defined: -{name}")
        if flag.kind == "bool":
            if not has_value:
                values[name] = True
            elif value in _TRUE or value in _FALSE:
                values[name] = value in _TRUE
            else:
                raise FlagError(f'invalid boolean value "{value}" for -{name}')
            continue
        if not has_value:
            if index >= len(args):
                raise FlagError(f"flag needs an argument: -{name}")
            value = args[index]
            index += 1
        if flag.kind == "int":
            try:
                values[name] = int(value, 0)
            except ValueError:
                raise FlagError(f'invalid value "{value}" for flag -{name}: parse error') from None
        elif flag.kind == "list":
            previous = values.setdefault(name, [])
            assert isinstance(previous, list)
            if value:
                previous.append(value)
        else:
            values[name] = value
    return Parsed(values, args[index:])


def usage() -> str:
    lines = ["Usage of statecar daprd (daprd's flags; docs/daprd.md):"]
    for name, flag in FLAGS.items():
        lines.append(f"  -{name} ({flag.kind}, {flag.use}): {flag.why}")
    return "\n".join(lines)


def _port(values: Mapping[str, object], name: str) -> int | None:
    raw = values.get(name)
    if raw is None:
        return None
    try:
        port = int(str(raw))
    except ValueError:
        raise FlagError(f"--{name} must be a port number, got {raw!r}") from None
    if not 0 <= port <= 65535:
        raise FlagError(f"--{name} must be a port number (0-65535), got {port}")
    return port


_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
}


def parse_quantity(raw: str, name: str) -> int:
    """A Kubernetes quantity, as `--max-body-size` takes it (`4Mi`, `4M`, `4194304`)."""
    text = raw.strip()
    number = text.rstrip("kMGi")
    unit = text[len(number) :]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise FlagError(f"--{name}: {raw!r} is not a size such as 4Mi") from None
    if value < 0:
        raise FlagError(
            f"--{name} {raw}: statecar always bounds request bodies; give a size such as 16Mi"
        )
    return int(value)


def _log_level(raw: str) -> str:
    levels = {
        "debug": "debug",
        "info": "info",
        "warn": "warning",
        "warning": "warning",
        "error": "error",
        "fatal": "critical",
        "panic": "critical",
    }
    level = levels.get(raw.strip().lower())
    if level is None:
        raise FlagError(f"--log-level {raw!r}: use debug, info, warn, error, fatal or panic")
    return level


@dataclass
class ConfigResult:
    record_error_codes: bool | None = None
    metrics_enabled: bool | None = None
    api_logging: bool | None = None


def apply_config(path: Path, into: ConfigResult, warn: list[str]) -> None:
    """One daprd `Configuration` file: served sections into `into`, refused ones raise."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FlagError(f"--config {path}: cannot read it: {exc}") from None
    if not isinstance(document, Mapping) or document.get("kind") != "Configuration":
        raise FlagError(f"--config {path}: not a daprd Configuration (kind: Configuration)")
    spec = document.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise FlagError(f"--config {path}: spec must be an object")
    api = spec.get("api")
    if isinstance(api, Mapping) and (api.get("allowed") or api.get("denied")):
        raise FlagError(
            f"--config {path}: spec.api allow/deny lists are not implemented, and ignoring them"
            " would serve APIs they deny; remove them"
        )
    pipeline = spec.get("httpPipeline")
    if isinstance(pipeline, Mapping) and pipeline.get("handlers"):
        raise FlagError(
            f"--config {path}: spec.httpPipeline middleware is not implemented, and ignoring it"
            " would skip what it does to state calls; remove it"
        )
    components = spec.get("components")
    if isinstance(components, Mapping) and components.get("deny"):
        raise FlagError(
            f"--config {path}: spec.components.deny is not implemented, and ignoring it would"
            " serve denied components; remove the denied components from the folder instead"
        )
    secrets = spec.get("secrets")
    if isinstance(secrets, Mapping) and secrets.get("scopes"):
        raise FlagError(
            f"--config {path}: spec.secrets.scopes is not implemented, and ignoring it would let"
            " components read secrets it denies; remove it"
        )
    for section in (spec.get("metric"), spec.get("metrics")):
        if isinstance(section, Mapping):
            if "enabled" in section:
                into.metrics_enabled = section.get("enabled") is not False
            if "recordErrorCodes" in section:
                into.record_error_codes = section.get("recordErrorCodes") is True
    logging_ = spec.get("logging")
    if isinstance(logging_, Mapping) and isinstance(logging_.get("apiLogging"), Mapping):
        enabled = logging_["apiLogging"].get("enabled")
        if isinstance(enabled, bool):
            into.api_logging = enabled
    known = set(_CONFIG_IGNORED) | {"api", "httpPipeline", "components", "secrets"}
    for key in spec:
        if key not in known:
            warn.append(f"--config {path}: spec.{key} is not used by statecar")


def _strings(values: Mapping[str, object], name: str) -> list[str]:
    raw = values.get(name)
    return [str(v) for v in raw] if isinstance(raw, list) else []


def settings_from(parsed: Parsed, environ: Mapping[str, str]) -> tuple[object, list[str]]:
    """The sidecar's settings from daprd's flags and env; the notes to log at start."""
    from statecar_sidecar import settings as sidecar_settings

    values = parsed.values
    notes: list[str] = []
    mode = str(values.get("mode", "standalone"))
    if mode != "standalone":
        raise FlagError(
            f"--mode {mode}: statecar daprd runs standalone; in Kubernetes the statecar"
            " operator injects `statecar sidecar` (see README)"
        )
    if values.get("unix-domain-socket"):
        raise FlagError(
            "--unix-domain-socket: statecar serves TCP only, and an app told to use the socket"
            " would find nothing there; drop the flag"
        )
    addresses = [
        a.strip().strip("[]")
        for a in str(values.get("dapr-listen-addresses", "")).split(",")
        if a.strip()
    ]
    addresses = list(dict.fromkeys(addresses))
    folders = [Path(p) for p in _strings(values, "resources-path")]
    if values.get("components-path") and not folders:
        folders = [Path(str(values["components-path"]))]
    config = ConfigResult()
    for path in _strings(values, "config"):
        apply_config(Path(path), config, notes)
    max_body: int | None = None
    if "max-body-size" in values:
        max_body = parse_quantity(str(values["max-body-size"]), "max-body-size")
    elif "dapr-http-max-request-size" in values:
        megabytes = int(str(values["dapr-http-max-request-size"]))
        if megabytes < 0:
            raise FlagError("--dapr-http-max-request-size must not be negative")
        max_body = megabytes * 1024 * 1024
    ignored = sorted(n for n in values if FLAGS[n].use == "ignored")
    if ignored:
        notes.append(
            "accepted and not applying to a state-only sidecar: "
            + ", ".join(f"--{n} ({FLAGS[n].why})" for n in ignored)
        )
    if parsed.rest:
        notes.append(f"arguments after the flags are ignored, as daprd does: {parsed.rest}")

    base = sidecar_settings.from_environ(environ)
    metrics_port = _port(values, "metrics-port")
    if values.get("enable-metrics") is False or config.metrics_enabled is False:
        metrics_port = 0
    grace: float | None = None
    if "dapr-graceful-shutdown-seconds" in values:
        grace = sidecar_settings.shutdown_grace(
            str(values["dapr-graceful-shutdown-seconds"]), "--dapr-graceful-shutdown-seconds"
        )
        if math.isinf(grace):
            notes.append(
                "--dapr-graceful-shutdown-seconds 0: no bound, as daprd; a call in flight at"
                " SIGTERM holds the exit until it ends"
            )
    api_logging = values.get("enable-api-logging")
    settings = base.with_overrides(
        app_id=values.get("app-id"),
        http_port=_port(values, "dapr-http-port"),
        grpc_port=_port(values, "dapr-grpc-port"),
        metrics_port=metrics_port,
        metrics_address=values.get("metrics-listen-address") or None,
        listen_address=addresses[0] if addresses else None,
        extra_listen_addresses=tuple(addresses[1:]),
        components_path=folders[0] if folders else None,
        extra_components_paths=tuple(folders[1:]),
        log_level=_log_level(str(values["log-level"])) if "log-level" in values else None,
        log_json=values.get("log-as-json"),
        max_body_bytes=max_body,
        record_error_codes=config.record_error_codes,
        refuse_failed_components=True,
        shutdown_grace=grace,
        api_logging=api_logging if isinstance(api_logging, bool) else config.api_logging,
    )
    if environ.get("DAPR_HOST_IP"):
        notes.append(
            f"DAPR_HOST_IP={environ['DAPR_HOST_IP']}: the address daprd registers for service"
            " invocation; statecar has none to register"
        )
    return settings, notes


def main(argv: Sequence[str]) -> int:
    import logging
    import os

    from statecar_sidecar import server
    from statecar_sidecar.settings import SettingsError

    try:
        parsed = parse_flags(argv)
        if parsed.values.get("version") or parsed.values.get("build-info"):
            print(f"statecar {__version__} (daprd command line)")
            return 0
        settings, notes = settings_from(parsed, os.environ)
    except (FlagError, SettingsError) as exc:
        print(f"statecar daprd: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # -h / --help
        print(exc.code, file=sys.stderr)
        return 0
    from statecar_sidecar.settings import SidecarSettings

    assert isinstance(settings, SidecarSettings)
    server.configure_logging(settings.log_level, settings.log_json)
    log = logging.getLogger("statecar.daprd")
    for note in notes:
        log.info("%s", note)
    return server.run(settings)
