"""
Leader election with a coordination.k8s.io/v1 Lease: one replica reconciles, all serve webhooks.

Why not kopf peering: peering is not leader election (docs/peering.rst; nolar/kopf#1266), and a
paused kopf peer stops its *watch streams* (kopf `_cogs/clients/watching.py` waits on
`operator_paused`), so its indexes would go stale while it keeps answering admission requests
from them. Here every replica runs kopf standalone (watching, indexing, admitting) and only the
Lease holder writes (wiring Secrets, statuses, component Events).

The algorithm is client-go's `tools/leaderelection`: take the Lease when it is absent, released
or not renewed for `leaseDurationSeconds` *as observed on our own monotonic clock* (so clock skew
between nodes does not matter), renew every `retry_period`, and stop acting as leader when a
renewal has not succeeded for `renew_deadline` (< lease duration, so we stop before anyone may
take over). Writes use the Lease's resourceVersion: two candidates cannot both win.
`decide` is the pure part; `LeaderElector` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

logger = logging.getLogger(__name__)

Action = Literal["create", "renew", "acquire", "follow"]


class LeaseStore(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Decision:
    action: Action
    body: dict[str, Any] | None = None


def micro_time(moment: datetime) -> str:
    """metav1.MicroTime's wire format (RFC 3339 with microseconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decide(
    lease: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    identity: str,
    lease_duration: float,
    expired: bool,
    now: datetime,
) -> Decision:
    """What to do with the Lease as read: create it, renew ours, take it over, or follow."""
    stamp = micro_time(now)
    duration = max(1, round(lease_duration))
    if lease is None:
        return Decision(
            "create",
            {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "holderIdentity": identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            },
        )
    spec = dict(lease.get("spec") or {})
    holder = spec.get("holderIdentity") or ""
    if holder and holder != identity and not expired:
        return Decision("follow")
    metadata = {
        "name": name,
        "namespace": namespace,
        "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
    }
    if holder == identity:
        spec.update(renewTime=stamp, leaseDurationSeconds=duration)
        return Decision("renew", _lease(metadata, spec))
    spec.update(
        holderIdentity=identity,
        leaseDurationSeconds=duration,
        acquireTime=stamp,
        renewTime=stamp,
        leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1,
    )
    return Decision("acquire", _lease(metadata, spec))


def release_body(lease: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """Give the Lease up (client-go's ReleaseOnCancel): followers may take it at once."""
    spec = dict(lease.get("spec") or {})
    stamp = micro_time(now)
    spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=stamp, acquireTime=stamp)
    metadata = dict(lease.get("metadata") or {})
    return _lease(
        {k: metadata[k] for k in ("name", "namespace", "resourceVersion") if k in metadata}, spec
    )


def _lease(metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": dict(metadata),
        "spec": dict(spec),
    }


class LeaderElector:
    """Keeps trying to hold the Lease; `is_leader` says whether this replica may write."""

    def __init__(
        self,
        store: LeaseStore,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        on_change: Callable[[bool], None] = lambda leading: None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._on_change = on_change
        self._clock = clock
        self._wallclock = wallclock
        self._leading = False
        self._last_renewal = 0.0
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._lease: dict[str, Any] | None = None
        self._stopped = False
        self.holder: str | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def run(self) -> None:
        """Acquire, renew or follow every `retry_period`, forever."""
        while True:
            await self.step()
            await asyncio.sleep(self._retry_period)

    async def step(self) -> None:
        """One attempt; public for tests (a fake clock and store drive it)."""
        if self._stopped:
            return  # shutting down: never take the Lease back after handing it over
        try:
            await self._try_acquire_or_renew()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  # any failure is "not renewed"; the deadline decides
            logger.warning("Lease %s/%s: %s", self._namespace, self._name, exc)
        if self._leading and self._clock() - self._last_renewal > self._renew_deadline:
            logger.error("Lease not renewed for %.0fs: stepping down", self._renew_deadline)
            self._set_leading(False)

    async def _try_acquire_or_renew(self) -> None:
        lease = await self._store.read_lease(self._namespace, self._name)
        now = self._clock()
        duration = self._lease_duration
        if lease is not None:
            spec = lease.get("spec") or {}
            # Any write (a renewal) changes the resourceVersion: the holder is alive.
            version = (lease.get("metadata") or {}).get("resourceVersion")
            record = (spec.get("holderIdentity"), spec.get("renewTime"), version)
            if record != self._observed:
                self._observed, self._observed_at = record, now
            duration = float(spec.get("leaseDurationSeconds") or duration)
            self.holder = spec.get("holderIdentity") or None
        expired = lease is not None and now - self._observed_at > duration
        decision = decide(
            lease,
            namespace=self._namespace,
            name=self._name,
            identity=self.identity,
            lease_duration=self._lease_duration,
            expired=expired,
            now=self._wallclock(),
        )
        if decision.action == "follow":
            if self._leading:
                logger.warning("Lease taken over by %s", self.holder)
            self._set_leading(False)
            return
        assert decision.body is not None  # every action but "follow" carries a body
        if decision.action == "create":
            written = await self._store.create_lease(self._namespace, decision.body)
        else:
            written = await self._store.replace_lease(self._namespace, self._name, decision.body)
        self._lease = written
        self._last_renewal = self._clock()
        self.holder = self.identity
        if not self._leading:
            logger.info("Lease %s/%s acquired by %s", self._namespace, self._name, self.identity)
        self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            self._leading = leading
            self._on_change(leading)

    async def release(self) -> None:
        """At shutdown: hand the Lease back so a follower takes over without waiting."""
        self._stopped = True
        if not self._leading or self._lease is None:
            return
        self._set_leading(False)
        with contextlib.suppress(Exception):  # best effort; otherwise the Lease simply expires
            await self._store.replace_lease(
                self._namespace, self._name, release_body(self._lease, now=self._wallclock())
            )


class AlwaysLeader:
    """Leader election switched off (one replica, or local development)."""

    identity = "standalone"
    holder: str | None = "standalone"

    @property
    def is_leader(self) -> bool:
        return True

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def release(self) -> None:
        return None
