"""
`statecar <subcommand>`: sidecar, run, daprd, operator, inject, version.

Each subcommand imports its program only when chosen, so `statecar sidecar` never loads kopf
and `statecar operator` never loads FastAPI. Flags override the `STATECAR_*` environment.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from statecar_contract import package_version


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "statecar"


def _sidecar_flags(parser: argparse.ArgumentParser, *, local: bool) -> None:
    parser.add_argument("--app-id", help="the app id (key prefix and scopes); env STATECAR_APP_ID")
    parser.add_argument(
        "--components-path",
        type=Path,
        help="folder of StateStoreComponent and Dapr Component YAML files; env STATECAR_COMPONENTS_PATH"
        + (
            "; default: one SQLite store named 'statestore' in the user's data folder"
            if local
            else ""
        ),
    )
    parser.add_argument(
        "--wiring-file",
        type=Path,
        help="the operator's wiring file, or a folder of them (set by the injector)",
    )
    parser.add_argument(
        "--secrets-file", type=Path, help="YAML {secret: {key: value}} for local secretKeyRefs"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        help="state API port (default 3500; env STATECAR_HTTP_PORT or DAPR_HTTP_PORT)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="Dapr gRPC API port (default 50001, 0 disables; env STATECAR_GRPC_PORT or DAPR_GRPC_PORT)",
    )
    parser.add_argument(
        "--metrics-port", type=int, help="health + Prometheus port (default 9090, 0 disables)"
    )
    parser.add_argument(
        "--listen-address", help="state API address (default 127.0.0.1: loopback only)"
    )
    parser.add_argument(
        "--metrics-address",
        help="health + Prometheus address (default 0.0.0.0, for the kubelet and Prometheus;"
        " env STATECAR_METRICS_ADDRESS)",
    )
    parser.add_argument(
        "--graceful-shutdown-seconds",
        type=int,
        help="seconds in-flight calls get on SIGINT/SIGTERM before they are cancelled (default 5,"
        " as daprd; 0: no bound; env STATECAR_GRACEFUL_SHUTDOWN_SECONDS)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--log-json", action="store_true", default=None, help="structured JSON logs"
    )


def _settings(args: argparse.Namespace) -> object:
    from statecar_sidecar import settings as sidecar_settings

    base = sidecar_settings.from_environ()
    return base.with_overrides(
        app_id=args.app_id,
        components_path=args.components_path,
        wiring_file=args.wiring_file,
        secrets_file=args.secrets_file,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        listen_address=args.listen_address,
        metrics_address=args.metrics_address,
        log_level=args.log_level,
        log_json=args.log_json,
        shutdown_grace=(
            None
            if args.graceful_shutdown_seconds is None
            else sidecar_settings.shutdown_grace(
                args.graceful_shutdown_seconds, "--graceful-shutdown-seconds"
            )
        ),
    )


def cmd_sidecar(args: argparse.Namespace) -> int:
    from statecar_sidecar import server
    from statecar_sidecar.settings import SettingsError, SidecarSettings

    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"statecar sidecar: {exc}", file=sys.stderr)
        return 2
    assert isinstance(settings, SidecarSettings)
    return server.run(settings)


def cmd_run(args: argparse.Namespace) -> int:
    """Serve the state API locally and, if given, run the app with the Dapr ports and APP_ID exported."""
    from statecar_sidecar import server
    from statecar_sidecar.settings import SettingsError, SidecarSettings

    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"statecar run: {exc}", file=sys.stderr)
        return 2
    assert isinstance(settings, SidecarSettings)
    if not settings.app_id:
        settings = settings.with_overrides(app_id=Path.cwd().name or "app")
    if settings.components_path is None and settings.wiring_file is None:
        folder = _data_dir() / "components"
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "statestore.yaml").write_text(
                "apiVersion: statecar.io/v1alpha1\n"
                "kind: StateStoreComponent\n"
                "metadata:\n  name: statestore\n"
                "spec:\n  type: state.sqlite\n  metadata:\n"
                f"  - name: connectionString\n    value: {_data_dir() / 'state.db'}\n",
                encoding="utf-8",
            )
        settings = settings.with_overrides(components_path=folder)
    command = [c for c in args.command if c != "--"] if args.command else []
    if not command:
        return server.run(settings)
    return _run_with_app(settings, command)


def _run_with_app(settings: object, command: list[str]) -> int:
    """Start the sidecar in a thread, then the app; forward signals; exit with the app's code."""
    import asyncio

    from statecar_sidecar import server
    from statecar_sidecar.settings import SidecarSettings

    assert isinstance(settings, SidecarSettings)
    server.configure_logging(settings.log_level, settings.log_json)
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop_holder: list[asyncio.Event] = []

    def sidecar_thread() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> int:
            stop = asyncio.Event()
            stop_holder.append(stop)
            return await server.serve_until(settings, stop, ready=ready.set)

        loop.run_until_complete(main())

    thread = threading.Thread(target=sidecar_thread, name="statecar-sidecar", daemon=True)
    thread.start()
    if not ready.wait(timeout=30):
        print("statecar run: the sidecar did not start within 30 s", file=sys.stderr)
        return 1
    environment = dict(os.environ)
    environment["DAPR_HTTP_PORT"] = str(settings.http_port)
    environment["STATECAR_HTTP_PORT"] = str(settings.http_port)
    if settings.grpc_port:
        environment["DAPR_GRPC_PORT"] = str(settings.grpc_port)
    if settings.app_id:
        environment["APP_ID"] = settings.app_id
    if settings.api_token:
        environment["DAPR_API_TOKEN"] = settings.api_token
    try:
        app = subprocess.Popen(command, env=environment)  # noqa: S603 -- the user's own app command
    except OSError as exc:
        print(f"statecar run: cannot start {command[0]!r}: {exc}", file=sys.stderr)
        return 127

    def forward(signum: int, _frame: object) -> None:
        app.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    code = app.wait()
    if stop_holder:
        loop.call_soon_threadsafe(stop_holder[0].set)
    thread.join(timeout=10)
    return code if code >= 0 else 128 - code


class _VersionAction(argparse.Action):
    """argparse's `version` action, the version read only when asked (cold start: the package
    metadata lookup costs every `statecar sidecar` start ~15 ms otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest=argparse.SUPPRESS,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"statecar {package_version()}")  # stdout, as argparse's own version action
        parser.exit()


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter, as wide as `shutil.get_terminal_size` would make it (COLUMNS, else
    the terminal, else 80 columns), found without shutil: argparse makes a formatter for every
    `add_argument` and would import shutil for it, with bz2 and lzma, ~2 ms of every start."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]  # None only in an embedded interpreter: AttributeError, caught
        except (AttributeError, ValueError, OSError):
            columns = 0
    return argparse.HelpFormatter(prog, width=(columns or 80) - 2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statecar",
        description="A Dapr-compatible state API for every pod.",
        formatter_class=_help_formatter,
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="subcommand", required=True)
    # Subparsers do not inherit the formatter.
    command = functools.partial(commands.add_parser, formatter_class=_help_formatter)

    sidecar = command("sidecar", help="serve the state API for one app (what the injector runs)")
    _sidecar_flags(sidecar, local=False)
    sidecar.set_defaults(func=cmd_sidecar)

    run = command(
        "run", help="serve the state API locally (embedded SQLite), optionally with an app"
    )
    _sidecar_flags(run, local=True)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- app command and its arguments")
    run.set_defaults(func=cmd_run)

    # Listed for --help only: main() hands these straight to their own parsers.
    command("operator", help="run the kopf operator and admission webhooks")
    command("inject", help="print manifests with the sidecar injected (offline)")
    command("daprd", help="serve the state API, started with daprd's command line (docs/daprd.md)")

    version = command("version", help="print the version")
    version.set_defaults(func=lambda _args: print(f"statecar {package_version()}") or 0)
    return parser


#: Subcommands whose own parser takes every argument after the name (argparse's REMAINDER
#: refuses a first argument that starts with "--", e.g. `statecar operator --help-env`).
_PASS_THROUGH = {
    "operator": "statecar_cli.operator_cli:run",
    "inject": "statecar_cli.inject_cli:main",
    "daprd": "statecar_cli.daprd_cli:main",
}


#: The commands that start a sidecar: they run with the cyclic GC paused until it serves.
_SIDECAR_COMMANDS = frozenset({"sidecar", "run", "daprd"})


@contextlib.contextmanager
def _gc_paused_for_startup() -> Iterator[None]:
    """Pause the cyclic GC while a sidecar starts; `server.serve_until` enables it, tuned, once
    it serves, and it is on again, as it was, when the command returns.

    Start-up allocates ~46,000 objects that all live as long as the process (imports, stores,
    the app): with the default thresholds that is ~60 collections, ~20 ms of the cold start on
    this VM (bench/README.md, "Issue 12"), that find almost nothing to free.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in _SIDECAR_COMMANDS:
        with _gc_paused_for_startup():
            return _dispatch(arguments)
    return _dispatch(arguments)


def _dispatch(arguments: list[str]) -> int:
    if arguments and arguments[0] in _PASS_THROUGH:
        module_name, _, function = _PASS_THROUGH[arguments[0]].partition(":")
        import importlib

        return int(getattr(importlib.import_module(module_name), function)(arguments[1:]))
    args = build_parser().parse_args(arguments)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
