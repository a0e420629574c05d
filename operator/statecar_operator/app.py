"""
The operator's composition root: settings -> API client -> parts -> kopf, in one asyncio loop.

`run(settings)` is what `statecar operator` calls once its flags and environment are read (the
command line lives in `statecar_cli.operator_cli`). Running means: kopf (watches, indexes,
admission webhooks over TLS; every replica serves admission), the Lease elector, the reconciler
(acts only while holding the Lease), the webhook certificate loop (`webhook_tls.sources`: every
replica serves the current certificate; the Lease holder keeps the operator-managed CA and the
caBundle), the Event poster, and `/healthz` + `/readyz` + `/metrics` (`health_server`). When any
of them stops, all stop; SIGTERM makes kopf exit gracefully, and the Lease is handed back on
the way out.

The webhook certificate comes from one of three places, in this order: the Secret the operator
manages (`STATECAR_OPERATOR_WEBHOOK_SECRET`, the chart's default), files
(`STATECAR_OPERATOR_WEBHOOK_CERT`/`_KEY`, mounted by cert-manager or the user), or a throwaway
self-signed pair (development).

This is the only module that builds the parts and hands them to each other; everything else
receives what it needs as arguments (or, in kopf handlers, as the `memo`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
import signal
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import kopf
from kopf._core.engines import peering as kopf_peering

from statecar_operator import handlers, health_server
from statecar_operator.cluster import kube
from statecar_operator.cluster.dapr_injector import DaprInjectorPresence
from statecar_operator.cluster.events import EventRecorder
from statecar_operator.cluster.leader import AlwaysLeader, LeaderElector
from statecar_operator.memo import Indexes, Memo
from statecar_operator.reconciliation import reachability
from statecar_operator.reconciliation.reconciler import Reconciler
from statecar_operator.reconciliation.sidecar_updates import SidecarUpdates
from statecar_operator.settings import OperatorSettings
from statecar_operator.webhook_tls import issuing, rotation
from statecar_operator.webhook_tls.server import LiveTLS, StatecarWebhookServer
from statecar_operator.webhook_tls.sources import FileCertificates, ManagedCertificates

logger = logging.getLogger("statecar_operator")


def run(settings: OperatorSettings) -> int:
    """Configure logging and run the operator until SIGTERM/SIGINT; returns the exit code."""
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
        policy = rotation.Policy(
            names=issuing.serving_names(settings.webhook_host, settings.extra_sans),
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
    generated = issuing.self_signed(hosts)
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
    handlers.quiet_expected_rejections()
    with tempfile.TemporaryDirectory(prefix="statecar-operator-") as scratch:
        async with kube.connect() as api:
            await _operate(settings, Path(scratch), api)


async def _operate(settings: OperatorSettings, scratch: Path, api: kube.Kube) -> None:
    readiness = health_server.Readiness()
    listening = asyncio.Event()

    def certificate_readiness() -> None:
        # Ready to admit only once the server listens *and* has a certificate to present.
        readiness.cert_loaded = listening.is_set() and tls.loaded

    def on_listening() -> None:
        listening.set()
        certificate_readiness()

    tls = LiveTLS(scratch, on_change=certificate_readiness)
    server = build_webhook_server(settings, tls, on_listening)
    indexes = Indexes(watches_pods=settings.watches_pods)
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
    dapr_injector = DaprInjectorPresence(api) if settings.injector.dapr_annotations else None
    memo = Memo(
        settings=settings,
        readiness=readiness,
        events=events,
        reconciler=reconciler,
        leadership=elector,
        indexes=indexes,
        dapr_injector=dapr_injector,
    )

    sidecar_updates = (
        SidecarUpdates(
            api=api,
            pods=indexes.all_pods,
            injector=settings.injector,
            events=events,
            is_leader=lambda: elector.is_leader,
            rollout=settings.auto_rollout,
            interval=settings.resync_interval,
        )
        if settings.watches_pods
        else None
    )

    def metrics() -> str:
        text = certificates.metrics()
        return text + (sidecar_updates.metrics() if sidecar_updates is not None else "")

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
        "health server": health_server.serve(
            readiness,
            addr=settings.health_addr,
            port=settings.health_port,
            details=details,
            metrics=metrics,
        ),
    }
    if dapr_injector is not None:
        parts["Dapr injector watch"] = dapr_injector.run()
    if sidecar_updates is not None:
        parts["stale sidecars"] = sidecar_updates.run()
    tasks = {asyncio.create_task(coro, name=name): name for name, coro in parts.items()}
    warmup = asyncio.create_task(
        health_server.wait_until_warm(
            readiness,
            functools.partial(
                api.list_component_uids,
                settings.namespaces,
                dapr_components=settings.dapr_components,
            ),
        )
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            **kopf_options(settings, server=server, memo=memo, stop=stop), ready_flag=started
        ),
        name="kopf",
    )
    tasks[asyncio.create_task(stop_on_signals(started, stop), name="signals")] = "signal handler"
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
        elif operator in done and (operator.cancelled() or operator.exception() is not None):
            # kopf itself died (not a SIGTERM, after which it returns normally): a crash must
            # exit non-zero, so the pod's restart count and `kubectl get pods` tell the truth.
            failure = _describe_failure("kopf operator", operator)
            logger.error("%s", failure, exc_info=_exception(operator))
    finally:
        for task in [*tasks, warmup]:
            task.cancel()
        for task in [*tasks, warmup]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await elector.release()
    if failure is not None:
        raise OperatorFailed(failure)


async def stop_on_signals(started: asyncio.Event, stop: asyncio.Event) -> None:
    """Once kopf has started, make SIGTERM and SIGINT set the stop flag kopf was given.

    kopf installs its own handlers (they set a private future) and waits for our flag in a task
    of its own; left so, that waiter outlives the signal, kopf counts it as a hung task and
    waits 5 s for it before exiting. kopf installs its handlers before its startup handlers
    finish (`started`, kopf's ready flag), so ours, installed after that, replace them.
    """
    await started.wait()
    loop = asyncio.get_running_loop()

    def received(signum: signal.Signals) -> None:
        logger.info("%s received: stopping", signum.name)
        stop.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, received, signum)
    await asyncio.Event().wait()  # a part like the others: runs until the operator stops


def kopf_options(
    settings: OperatorSettings,
    *,
    server: kopf.WebhookServerProtocol,
    memo: Memo,
    stop: asyncio.Event,
) -> dict[str, Any]:
    """The arguments of `kopf.operator`.

    `identity` is this replica's (the pod name from the downward API, else hostname + random):
    left to itself kopf derives one from `getpass.getuser()` even in standalone mode, which
    raises KeyError under a uid with no passwd entry (the image's 65532, or any arbitrary uid).
    """
    return {
        "registry": handlers.register(
            kopf.OperatorRegistry(),
            dapr_components=settings.dapr_components,
            pods=settings.watches_pods,
        ),
        "settings": handlers.kopf_settings(server, restricted=bool(settings.namespaces)),
        # With STATECAR_OPERATOR_NAMESPACES, only those (exact names: kopf then needs no access
        # to Namespace objects; it says so once at start-up and uses the names as given).
        **(
            {"clusterwide": False, "namespaces": list(settings.namespaces)}
            if settings.namespaces
            else {"clusterwide": True}
        ),
        "standalone": True,
        "memo": memo,
        "stop_flag": stop,
        "identity": kopf_peering.Identity(settings.identity),
    }


def _exception(task: asyncio.Task[None]) -> BaseException | None:
    return None if task.cancelled() else task.exception()


def _describe_failure(name: str, task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return f"the {name} was cancelled"
    exc = task.exception()
    return f"the {name} stopped: {exc!r}" if exc else f"the {name} stopped"
