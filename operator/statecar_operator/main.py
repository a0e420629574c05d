"""
`statecar operator`: start the operator, or print what deploying it needs.

    statecar operator                    run (settings from STATECAR_OPERATOR_* variables)
    statecar operator --help-env         list those variables with defaults
    statecar operator rbac               the ClusterRole/Role (+ bindings) it needs, as YAML
    statecar operator webhook-config     the Mutating/Validating webhook configurations, as YAML

Running means, in one asyncio loop: kopf (watches, indexes, admission webhooks over TLS; every
replica serves admission), the Lease elector, the reconciler (acts only while holding the
Lease), the Event poster, and `/healthz` + `/readyz`. When any of them stops, all stop;
SIGTERM makes kopf exit gracefully, and the Lease is handed back on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sys
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import kopf
import yaml

from statecar_operator import __version__, handlers, health, kube, rbac, reachability, rendering
from statecar_operator.certs import self_signed
from statecar_operator.events import EventRecorder
from statecar_operator.leader import AlwaysLeader, LeaderElector
from statecar_operator.reconciler import Reconciler
from statecar_operator.runtime import Indexes, Runtime
from statecar_operator.settings import OperatorSettings, SettingsError, env_variables
from statecar_operator.webhook_server import StatecarWebhookServer

logger = logging.getLogger("statecar_operator")


def run(argv: Sequence[str]) -> int:
    """Entry point of `statecar operator`; returns the process exit code."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.help_env:
        for variable, default, help_text in env_variables():
            print(f"{variable:48} {default or '-':28} {help_text}")
        return 0
    if args.command == "rbac":
        print(
            yaml.safe_dump_all(
                rbac.manifests(
                    namespace=args.namespace,
                    service_account=args.service_account,
                    lease_name=args.lease_name,
                ),
                sort_keys=False,
            ),
            end="",
        )
        return 0
    if args.command == "webhook-config":
        return _print_webhook_config(args)
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as exc:
        print(f"statecar operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        asyncio.run(operate(settings))
    except KeyboardInterrupt:
        return 0
    except OperatorFailed as exc:
        logger.error("%s", exc)
        return 1
    return 0


class OperatorFailed(RuntimeError):
    """A component of the operator stopped unexpectedly."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statecar operator",
        description=f"statecar's operator and sidecar injector ({__version__}).",
    )
    parser.add_argument("--help-env", action="store_true", help="list the settings' env variables")
    commands = parser.add_subparsers(dest="command")
    rbac_cmd = commands.add_parser("rbac", help="print the RBAC the operator needs")
    rbac_cmd.add_argument("--namespace", default="statecar-system")
    rbac_cmd.add_argument("--service-account", default="statecar-operator")
    rbac_cmd.add_argument("--lease-name", default="statecar-operator")
    hooks = commands.add_parser("webhook-config", help="print the webhook configurations")
    target = hooks.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="https://host:port of the operator's webhook server")
    target.add_argument("--service", help="Service name in front of the operator")
    hooks.add_argument("--service-namespace", default="statecar-system")
    hooks.add_argument("--service-port", type=int, default=443)
    hooks.add_argument("--ca-file", required=True, type=Path, help="PEM CA bundle (caBundle)")
    hooks.add_argument(
        "--exclude-namespace",
        action="append",
        default=[],
        help="namespaces never injected (kube-system and kube-node-lease always are)",
    )
    hooks.add_argument("--failure-policy", choices=["Fail", "Ignore"], default="Fail")
    return parser


def _print_webhook_config(args: argparse.Namespace) -> int:
    excluded = ["kube-system", "kube-node-lease", *args.exclude_namespace]
    if args.service:
        excluded.append(args.service_namespace)
    mutating, validating = rendering.build_webhook_configurations(
        ca_bundle=args.ca_file.read_bytes(),
        url=args.url,
        service_name=args.service,
        service_namespace=args.service_namespace if args.service else None,
        service_port=args.service_port,
        excluded_namespaces=excluded,
        inject_failure_policy=args.failure_policy,
    )
    print(yaml.safe_dump_all([mutating, validating], sort_keys=False), end="")
    return 0


def build_webhook_server(
    settings: OperatorSettings, readiness: health.Readiness, scratch: Path
) -> StatecarWebhookServer:
    """The HTTPS server: certificate files from settings, else a throwaway CA in `scratch`."""
    cert, key, ca = settings.webhook_cert, settings.webhook_key, settings.webhook_ca or None
    if not cert:
        hosts = list(
            dict.fromkeys([settings.webhook_host or "localhost", "localhost", "127.0.0.1"])
        )
        generated = self_signed(hosts)
        (scratch / "tls.crt").write_bytes(generated.cert_pem)
        (scratch / "tls.key").write_bytes(generated.key_pem)
        (scratch / "ca.crt").write_bytes(generated.ca_pem)
        cert, key, ca = str(scratch / "tls.crt"), str(scratch / "tls.key"), str(scratch / "ca.crt")
        logger.warning(
            "No STATECAR_OPERATOR_WEBHOOK_CERT: serving a self-signed certificate for %s", hosts
        )

    def listening() -> None:
        readiness.cert_loaded = True
        logger.info(
            "Webhook server listening on %s:%d", settings.webhook_addr, settings.webhook_port
        )

    return StatecarWebhookServer(
        on_listening=listening,
        addr=settings.webhook_addr,
        port=settings.webhook_port,
        host=settings.webhook_host or None,
        certfile=cert,
        pkeyfile=key,
        cafile=ca,
        cadump=settings.webhook_ca_dump or None,
    )


async def operate(settings: OperatorSettings) -> None:
    """Run until SIGTERM/SIGINT (returns) or until a part of the operator fails (raises)."""
    readiness = health.Readiness()
    with tempfile.TemporaryDirectory(prefix="statecar-operator-") as scratch:
        server = build_webhook_server(settings, readiness, Path(scratch))
        async with kube.connect() as api:
            await _operate(settings, readiness, server, api)


async def _operate(
    settings: OperatorSettings,
    readiness: health.Readiness,
    server: StatecarWebhookServer,
    api: kube.Kube,
) -> None:
    indexes = Indexes()
    events = EventRecorder(instance=settings.identity)
    elector: LeaderElector | AlwaysLeader
    reconciler = Reconciler(
        api=api,
        view=indexes.view(),
        measure=functools.partial(reachability.measure, timeout=settings.probe_timeout),
        events=events,
        is_leader=lambda: elector.is_leader,
        is_warm=lambda: readiness.indexes_warm,
        resync_interval=settings.resync_interval,
    )
    if settings.leader_election:
        elector = LeaderElector(
            api,
            namespace=settings.namespace,
            name=settings.lease_name,
            identity=settings.identity,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
            on_change=reconciler.leadership_changed,
        )
    else:
        elector = AlwaysLeader()
        reconciler.leadership_changed(True)
    runtime = Runtime(
        settings=settings,
        readiness=readiness,
        events=events,
        reconciler=reconciler,
        leadership=elector,
        indexes=indexes,
    )

    def details() -> dict[str, Any]:
        return {
            "identity": settings.identity,
            "leader": elector.is_leader,
            "leaseHolder": elector.holder,
            "reconcilePasses": reconciler.passes,
            "pendingEvents": events.pending(),
        }

    # Created before kopf starts: kopf.operator() treats tasks that exist when it starts as
    # not its own, and leaves them alone when it shuts down (kopf reactor/running.py).
    parts: dict[str, Coroutine[Any, Any, None]] = {
        "leader election": elector.run(),
        "reconciler": reconciler.run(),
        "event poster": events.run(api),
        "health server": health.serve(
            readiness, addr=settings.health_addr, port=settings.health_port, details=details
        ),
    }
    tasks = {asyncio.create_task(coro, name=name): name for name, coro in parts.items()}
    warmup = asyncio.create_task(health.wait_until_warm(readiness, api.list_component_uids))
    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=handlers.register(kopf.OperatorRegistry()),
            settings=handlers.kopf_settings(server),
            clusterwide=True,
            standalone=True,
            memo=runtime,
            stop_flag=stop,
        ),
        name="kopf",
    )
    failure: str | None = None
    try:
        done, _ = await asyncio.wait([operator, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not operator:
                failure = _describe_failure(tasks[task], task)
                logger.error("%s", failure)
        if failure is not None:
            stop.set()
            await operator
    finally:
        for task in [*tasks, warmup]:
            task.cancel()
        for task in [*tasks, warmup]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await elector.release()
    if failure is not None:
        raise OperatorFailed(failure)


def _describe_failure(name: str, task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return f"the {name} was cancelled"
    exc = task.exception()
    return f"the {name} stopped: {exc!r}" if exc else f"the {name} stopped"
