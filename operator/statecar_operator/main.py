"""
`statecar operator`: start the operator, or print what deploying it needs.

    statecar operator                    run (settings from STATECAR_OPERATOR_* variables)
    statecar operator --help-env         list those variables with defaults
    statecar operator rbac               the ClusterRole/Role (+ bindings) it needs, as YAML
    statecar operator webhook-config     the Mutating/Validating webhook configurations, as YAML

Running means, in one asyncio loop: kopf (watches, indexes, admission webhooks over TLS; every
replica serves admission), the Lease elector, the reconciler (acts only while holding the
Lease), the webhook certificate loop (`certificates`: every replica serves the current
certificate; the Lease holder keeps the operator-managed CA and the caBundle), the Event
poster, and `/healthz` + `/readyz` + `/metrics`. When any of them stops, all stop; SIGTERM
makes kopf exit gracefully, and the Lease is handed back on the way out.

The webhook certificate comes from one of three places, in this order: the Secret the operator
manages (`STATECAR_OPERATOR_WEBHOOK_SECRET`, the chart's default), files
(`STATECAR_OPERATOR_WEBHOOK_CERT`/`_KEY`, mounted by cert-manager or the user), or a throwaway
self-signed pair (development).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import logging
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import kopf
import yaml

from statecar_operator import (
    __version__,
    certs,
    handlers,
    health,
    kube,
    rbac,
    reachability,
    rendering,
)
from statecar_operator.certificates import FileCertificates, ManagedCertificates
from statecar_operator.events import EventRecorder
from statecar_operator.leader import AlwaysLeader, LeaderElector
from statecar_operator.reconciler import Reconciler
from statecar_operator.runtime import Indexes, Runtime
from statecar_operator.settings import OperatorSettings, SettingsError, env_variables
from statecar_operator.webhook_server import LiveTLS, StatecarWebhookServer

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
                    webhook_secret=args.webhook_secret,
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
    rbac_cmd.add_argument(
        "--webhook-secret",
        help="with operator-managed webhook certificates: the Secret's name (adds its rules)",
    )
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
    settings: OperatorSettings, tls: LiveTLS, on_listening: Callable[[], None]
) -> StatecarWebhookServer:
    """The HTTPS server; its certificate is whatever `tls` holds (see `build_certificates`)."""

    def listening() -> None:
        logger.info(
            "Webhook server listening on %s:%d", settings.webhook_addr, settings.webhook_port
        )
        on_listening()

    return StatecarWebhookServer(
        on_listening=listening,
        tls=tls,
        addr=settings.webhook_addr,
        port=settings.webhook_port,
        host=settings.webhook_host or None,
    )


def build_certificates(
    settings: OperatorSettings,
    *,
    tls: LiveTLS,
    scratch: Path,
    api: kube.Kube,
    events: EventRecorder,
    is_leader: Callable[[], bool],
) -> ManagedCertificates | FileCertificates:
    """Where the webhook certificate comes from: the managed Secret, files, or self-signed."""
    ca_dump = Path(settings.webhook_ca_dump) if settings.webhook_ca_dump else None
    if settings.webhook_secret:
        policy = certs.Policy(
            names=certs.serving_names(settings.webhook_host, settings.extra_sans),
            ca_validity=datetime.timedelta(seconds=settings.webhook_ca_validity),
            serving_validity=datetime.timedelta(seconds=settings.webhook_cert_validity),
            overlap=datetime.timedelta(seconds=settings.webhook_ca_overlap),
            ca_renew_before=(
                datetime.timedelta(seconds=settings.webhook_ca_renew_before)
                if settings.webhook_ca_renew_before
                else None
            ),
        )
        logger.info(
            "Webhook certificate: operator-managed in Secret %s/%s for %s",
            settings.namespace,
            settings.webhook_secret,
            ", ".join(policy.names),
        )
        return ManagedCertificates(
            api,
            tls,
            namespace=settings.namespace,
            secret_name=settings.webhook_secret,
            policy=policy,
            is_leader=is_leader,
            interval=settings.webhook_cert_sync,
            events=events,
            ca_dump=ca_dump,
        )
    if settings.webhook_cert:
        return FileCertificates(
            tls,
            cert=Path(settings.webhook_cert),
            key=Path(settings.webhook_key),
            ca=Path(settings.webhook_ca) if settings.webhook_ca else None,
            interval=settings.webhook_cert_sync,
            ca_dump=ca_dump,
        )
    hosts = list(
        dict.fromkeys(
            [settings.webhook_host or "localhost", "localhost", "127.0.0.1", *settings.extra_sans]
        )
    )
    generated = certs.self_signed(hosts)
    (scratch / "tls.crt").write_bytes(generated.cert_pem)
    (scratch / "tls.key").write_bytes(generated.key_pem)
    (scratch / "ca.crt").write_bytes(generated.ca_pem)
    logger.warning(
        "No STATECAR_OPERATOR_WEBHOOK_SECRET or _CERT: serving a self-signed certificate for %s",
        hosts,
    )
    return FileCertificates(
        tls,
        cert=scratch / "tls.crt",
        key=scratch / "tls.key",
        ca=scratch / "ca.crt",
        interval=settings.webhook_cert_sync,
        mode="self-signed",
        ca_dump=ca_dump,
    )


async def operate(settings: OperatorSettings) -> None:
    """Run until SIGTERM/SIGINT (returns) or until a part of the operator fails (raises)."""
    with tempfile.TemporaryDirectory(prefix="statecar-operator-") as scratch:
        async with kube.connect() as api:
            await _operate(settings, Path(scratch), api)


async def _operate(settings: OperatorSettings, scratch: Path, api: kube.Kube) -> None:
    readiness = health.Readiness()
    listening = asyncio.Event()

    def certificate_readiness() -> None:
        # Ready to admit only once the server listens *and* has a certificate to present.
        readiness.cert_loaded = listening.is_set() and tls.loaded

    def on_listening() -> None:
        listening.set()
        certificate_readiness()

    tls = LiveTLS(scratch, on_change=certificate_readiness)
    server = build_webhook_server(settings, tls, on_listening)
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
    certificates = build_certificates(
        settings,
        tls=tls,
        scratch=scratch,
        api=api,
        events=events,
        is_leader=lambda: elector.is_leader,
    )

    def leadership_changed(leading: bool) -> None:
        reconciler.leadership_changed(leading)
        certificates.wake()  # a new leader checks the Secret and the caBundle at once

    if settings.leader_election:
        elector = LeaderElector(
            api,
            namespace=settings.namespace,
            name=settings.lease_name,
            identity=settings.identity,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
            on_change=leadership_changed,
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
            "webhookCertificate": certificates.condition(),
        }

    # Created before kopf starts: kopf.operator() treats tasks that exist when it starts as
    # not its own, and leaves them alone when it shuts down (kopf reactor/running.py).
    parts: dict[str, Coroutine[Any, Any, None]] = {
        "leader election": elector.run(),
        "reconciler": reconciler.run(),
        "webhook certificate loop": certificates.run(),
        "event poster": events.run(api),
        "health server": health.serve(
            readiness,
            addr=settings.health_addr,
            port=settings.health_port,
            details=details,
            metrics=certificates.metrics,
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
