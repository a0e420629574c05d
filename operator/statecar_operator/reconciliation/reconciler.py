"""
The reconcile loop: level-triggered, one namespace at a time, on the Lease holder only.

Watch events (kopf `on.event` handlers) only *mark* a namespace dirty; this loop then
reconciles the whole namespace from the indexes: resolve every component's secretKeyRefs,
render the wiring Secrets (`wiring_secret.plan_secrets`: the shared one and one per scoped app
id; created, updated, or deleted when no longer planned), measure
each backend, and write each component's status when it changed. Every `resync_interval` all
namespaces are marked, which re-measures backends (a stopped Redis shows up within one interval
plus the probe timeout) and repairs drift (an edited or deleted wiring Secret). A namespace that
fails is retried with the next pass; nothing here raises out of the loop.

Why not kopf's create/update/delete handlers and timers: they persist progress on the objects
(annotations, finalizers: kopf `processing.py`), written by every replica, while only the Lease
holder may write here; and a timer adds a finalizer to every component. A level-triggered loop
needs neither, and recovers from anything it missed while it was not the leader.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from statecar_contract.components import (
    ComponentError,
    ResolvedComponent,
    SecretKeyRef,
    resolve,
)
from statecar_contract.wiring import is_wiring_secret_name
from statecar_operator.cluster.events import EventRecorder, ObjectRef
from statecar_operator.cluster.kube import ConflictError, ForbiddenError, KubeError
from statecar_operator.manifests import labels
from statecar_operator.reconciliation import conditions, wiring_secret
from statecar_operator.reconciliation.component_index import ComponentEntry
from statecar_operator.reconciliation.conditions import ComponentFacts, Problem, Reachability
from statecar_operator.reconciliation.staleness import PodInfo, stale_in_scope

logger = logging.getLogger(__name__)


class ClusterAPI(Protocol):
    """The calls the reconciler makes (implemented by `cluster.kube.Kube`; faked in tests)."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_secret(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_secret(
        self, namespace: str, name: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    async def delete_secret(self, namespace: str, name: str, *, uid: str | None = None) -> None: ...

    async def list_wiring_secrets(self, namespace: str) -> dict[str, dict[str, Any]]: ...

    async def patch_component_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None: ...


Measure = Callable[[ResolvedComponent], Awaitable[Reachability]]


@dataclass(frozen=True)
class View:
    """Read access to the indexes (filled by kopf; plain callables so tests need no kopf)."""

    components: Callable[[str], Sequence[ComponentEntry]]
    component_namespaces: Callable[[], set[str]]
    wiring_namespaces: Callable[[], set[str]]
    #: The namespace's injected pods, or None when they are not watched.
    pods: Callable[[str], Sequence[PodInfo] | None] = lambda _: None


class Reconciler:
    def __init__(
        self,
        *,
        api: ClusterAPI,
        view: View,
        measure: Measure,
        events: EventRecorder,
        is_leader: Callable[[], bool],
        resync_interval: float,
        is_warm: Callable[[], bool] = lambda: True,
        concurrency: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._view = view
        self._measure = measure
        self._events = events
        self._is_leader = is_leader
        self._is_warm = is_warm
        self._resync_interval = resync_interval
        self._semaphore = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._fingerprints: dict[str, tuple[str, tuple[object, ...]]] = {}
        #: Status we wrote, by component uid: the index may lag our own write by a moment.
        self._written_status: dict[str, dict[str, Any]] = {}
        #: Config hash we wrote, by (namespace, Secret): our own update's watch event is no news.
        self._written_hash: dict[tuple[str, str], str] = {}
        self.passes = 0

    # --- marking (called from watch handlers, on every replica) ------------------------------

    def mark(self, namespace: str) -> None:
        self._dirty.add(namespace)
        self._wake.set()

    def mark_all(self) -> None:
        for namespace in self._view.component_namespaces() | self._view.wiring_namespaces():
            self._dirty.add(namespace)
        self._wake.set()

    def component_changed(self, entry: ComponentEntry, *, deleted: bool) -> None:
        """A watch event for a component: mark its namespace unless only its status moved."""
        key = f"{entry.kind}/{entry.namespace}/{entry.name}"
        if deleted:
            self._fingerprints.pop(key, None)
            self._written_status.pop(entry.uid, None)
            self.mark(entry.namespace)
            return
        fingerprint = (entry.namespace, entry.fingerprint)
        if self._fingerprints.get(key) != fingerprint:
            self._fingerprints[key] = fingerprint
            self.mark(entry.namespace)

    def wiring_secret_changed(
        self, namespace: str, name: str, config_hash: str | None, *, deleted: bool
    ) -> None:
        """A watch event for a wiring Secret: only someone else's change needs a pass."""
        if deleted or config_hash != self._written_hash.get((namespace, name)):
            self.mark(namespace)

    def leadership_changed(self, leading: bool) -> None:
        # A new leader knows nothing it did not see itself: start from the cluster's state.
        self._written_status.clear()
        self._written_hash.clear()
        if leading:
            self.mark_all()

    # --- the loop (does work only while leading) ---------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time()
        while True:
            timeout = max(0.0, next_resync - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            if loop.time() >= next_resync:
                next_resync = loop.time() + self._resync_interval
                if self._is_leader():
                    self.mark_all()
            self._wake.clear()
            if not self._is_leader():
                self._dirty.clear()
                continue
            if not self._is_warm():
                # Until every component is in the index, a namespace could look empty and
                # lose its wiring Secret: wait (the marks stay) and look again shortly.
                next_resync = min(next_resync, loop.time() + 0.5)
                continue
            await asyncio.sleep(0.05)  # coalesce a burst of watch events into one pass
            await self.run_pass()

    async def run_pass(self) -> None:
        """Reconcile every dirty namespace (concurrently, bounded)."""
        namespaces, self._dirty = sorted(self._dirty), set()
        await asyncio.gather(*(self._guarded(ns) for ns in namespaces))
        self.passes += 1

    async def _guarded(self, namespace: str) -> None:
        async with self._semaphore:
            try:
                await self.reconcile_namespace(namespace)
            except asyncio.CancelledError:
                raise
            except ConflictError:
                logger.info("Namespace %s changed while reconciling; again soon", namespace)
                self.mark(namespace)
            except Exception:
                logger.exception("Reconciling namespace %s failed; retrying next pass", namespace)
                self._dirty.add(namespace)

    # --- one namespace ---------------------------------------------------------------------------

    async def reconcile_namespace(self, namespace: str) -> None:
        if not self._is_leader():
            return
        entries = sorted(self._view.components(namespace), key=lambda e: e.name)
        live = [e for e in entries if not e.deleting]
        existing = await self._api.list_wiring_secrets(namespace)
        if not live:
            await self._remove_wiring(namespace, existing, keep=set())
            return

        facts: dict[str, ComponentFacts] = {}
        resolved: dict[str, ResolvedComponent] = {}
        cache: dict[str, dict[str, Any] | None] = {}
        for entry in live:
            if entry.spec is None:
                facts[entry.name] = ComponentFacts(entry.generation, spec_error=entry.error)
                continue
            values, problem = await self._resolve_secrets(namespace, entry, cache)
            refs = len(entry.spec.secret_refs)
            if problem is not None:
                facts[entry.name] = ComponentFacts(
                    entry.generation, secrets_problem=problem, secret_refs=refs
                )
                continue
            try:
                resolved[entry.name] = resolve(entry.spec, values)
            except ComponentError as exc:
                # A Secret's value the backend cannot use (redisPort `abc`): this component's
                # problem (the message names the setting, never the value); the others in the
                # namespace still get their wiring and status.
                facts[entry.name] = ComponentFacts(
                    entry.generation,
                    secrets_problem=Problem("SecretValueInvalid", str(exc)),
                    secret_refs=refs,
                )
                continue
            facts[entry.name] = ComponentFacts(entry.generation, secret_refs=refs)

        plans = wiring_secret.plan_secrets(
            [
                wiring_secret.LiveComponent(
                    wiring_secret.ComponentOwner(e.name, e.uid, e.api_version, e.kind),
                    e.spec.scopes if e.spec is not None else None,
                    resolved.get(e.name),
                )
                for e in live
            ]
        )
        outcomes: dict[str, tuple[str | None, Problem | None]] = {}
        for name, plan in plans.items():
            outcomes[name] = await self._write_wiring(namespace, plan, existing.get(name))
        await self._remove_wiring(namespace, existing, keep=set(plans))
        reachability = await self._measure_all(resolved)
        pods = self._view.pods(namespace)
        for entry in live:
            fact = facts[entry.name]
            if pods is not None and entry.spec is not None:
                stale = stale_in_scope(pods, entry.spec.scopes)
                fact = dataclasses.replace(fact, stale_pods=stale)
            if entry.name in resolved:
                carried = [outcomes[n] for n in wiring_secret.secrets_of(plans, entry.name)]
                hashes = [h for h, _ in carried]
                problem = next((p for _, p in carried if p is not None), None)
                fact = ComponentFacts(
                    fact.generation,
                    secret_refs=fact.secret_refs,
                    wiring_problem=problem,
                    reachability=reachability[entry.name],
                    config_hash=_combined(hashes),
                    stale_pods=fact.stale_pods,
                )
            await self._write_status(entry, fact)

    async def _remove_wiring(
        self, namespace: str, existing: Mapping[str, Mapping[str, Any]], *, keep: set[str]
    ) -> None:
        """Delete our wiring Secrets of `namespace` that are not planned any more."""
        for name, secret in sorted(existing.items()):
            if name in keep or not wiring_secret.is_managed(secret):
                continue
            if not is_wiring_secret_name(name) or not self._is_leader():
                continue
            self._written_hash.pop((namespace, name), None)
            uid = (secret.get("metadata") or {}).get("uid")
            await self._api.delete_secret(namespace, name, uid=uid)
            reason = "no component left" if not keep else "no component in it any more"
            logger.info("Deleted %s/%s: %s", namespace, name, reason)

    async def _resolve_secrets(
        self, namespace: str, entry: ComponentEntry, cache: dict[str, dict[str, Any] | None]
    ) -> tuple[dict[SecretKeyRef, str], Problem | None]:
        assert entry.spec is not None
        values: dict[SecretKeyRef, str] = {}
        for index, item in enumerate(entry.spec.metadata):
            ref = item.secret_key_ref
            if ref is None:
                continue
            where = f"spec.metadata[{index}] ({item.name})"
            if ref.name not in cache:
                try:
                    cache[ref.name] = await self._api.read_secret(namespace, ref.name)
                except ForbiddenError as exc:
                    return values, Problem(
                        "SecretForbidden", f"{where}: cannot read Secret {ref.name!r}: {exc}"
                    )
            secret = cache[ref.name]
            if secret is None:
                return values, Problem(
                    "SecretNotFound",
                    f"{where}: Secret {ref.name!r} does not exist in namespace {namespace!r}",
                )
            data = secret.get("data") or {}
            if ref.key not in data:
                keys = ", ".join(sorted(data)) or "none"
                return values, Problem(
                    "SecretKeyNotFound",
                    f"{where}: Secret {ref.name!r} has no key {ref.key!r} (keys: {keys})",
                )
            try:
                values[ref] = base64.b64decode(data[ref.key], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return values, Problem(
                    "SecretValueInvalid",
                    f"{where}: key {ref.key!r} of Secret {ref.name!r} is not UTF-8 text",
                )
        return values, None

    async def _write_wiring(
        self,
        namespace: str,
        plan: wiring_secret.SecretPlan,
        existing: Mapping[str, Any] | None,
    ) -> tuple[str | None, Problem | None]:
        if existing is None:
            # Not among ours (by label): a Secret of that name may still be someone else's.
            existing = await self._api.read_secret(namespace, plan.name)
        if existing is not None and not wiring_secret.is_managed(existing):
            return None, Problem(
                "WiringConflict",
                f"Secret {namespace}/{plan.name} exists but is not managed by statecar "
                f"(no label {labels.MANAGED_BY_LABEL}={labels.MANAGED_BY}); move it away",
            )
        desired = wiring_secret.build_wiring_secret(
            namespace=namespace,
            components=plan.components,
            owners=plan.owners,
            salt=wiring_secret.salt_of(existing) or secrets.token_hex(16),
            name=plan.name,
            app_id=plan.app_id,
        )
        config_hash = wiring_secret.hash_of(desired)
        if existing is not None and not wiring_secret.secret_differs(existing, desired):
            return config_hash, None
        if not self._is_leader():
            return config_hash, None
        try:
            if existing is None:
                await self._api.create_secret(namespace, desired)
            else:
                body = wiring_secret.merge_for_update(existing, desired)
                await self._api.replace_secret(namespace, plan.name, body)
        except ConflictError:
            raise  # somebody wrote in between: the whole namespace again, from fresh reads
        except KubeError as exc:
            return None, Problem("WiringFailed", f"cannot write Secret {plan.name}: {exc}")
        if config_hash is not None:
            self._written_hash[(namespace, plan.name)] = config_hash
        verb = "Created" if existing is None else "Updated"
        logger.info("%s %s/%s (config hash %s)", verb, namespace, plan.name, config_hash)
        for component in plan.components:
            owner = next((o for o in plan.owners if o.name == component.name), None)
            if owner is None:
                continue
            self._events.record(
                ObjectRef.component(
                    namespace=namespace,
                    name=owner.name,
                    uid=owner.uid,
                    api_version=owner.api_version,
                    kind=owner.kind,
                ),
                type="Normal",
                reason="WiringUpdated",
                message=f"{verb.lower()} Secret {plan.name} (config hash {config_hash})",
            )
        return config_hash, None

    async def _measure_all(
        self, resolved: Mapping[str, ResolvedComponent]
    ) -> dict[str, Reachability]:
        names = list(resolved)
        outcomes = await asyncio.gather(
            *(self._measure(resolved[n]) for n in names), return_exceptions=True
        )
        results: dict[str, Reachability] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, Reachability):
                results[name] = outcome
            elif isinstance(outcome, asyncio.CancelledError):
                raise outcome
            else:
                results[name] = Reachability("Unknown", "MeasurementFailed", str(outcome)[:500])
        return results

    async def _write_status(self, entry: ComponentEntry, facts: ComponentFacts) -> None:
        previous = self._written_status.get(entry.uid) or entry.status
        status = conditions.compute_status(facts, previous=previous, now=self._clock())
        if _ours(status) == _ours(previous):
            return
        if not self._is_leader():
            return
        if not entry.is_dapr:
            # Dapr's Components are Dapr's objects: their status is not written, only Events
            # say what the operator found (the remembered status drives the transitions).
            await self._api.patch_component_status(entry.namespace, entry.name, status)
        self._written_status[entry.uid] = status
        ref = ObjectRef.component(
            namespace=entry.namespace,
            name=entry.name,
            uid=entry.uid,
            api_version=entry.api_version,
            kind=entry.kind,
        )
        for change in conditions.transitions(previous, status):
            self._events.record(
                ref,
                type="Warning" if change.warning else "Normal",
                reason=change.reason,
                message=f"{change.type} is {change.new}: {change.message}",
            )


def _combined(hashes: Sequence[str | None]) -> str | None:
    """A component's config hash: its one Secret's, or all of its Secrets' together."""
    if any(h is None for h in hashes) or not hashes:
        return None
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256(":".join(sorted(h or "" for h in hashes)).encode()).hexdigest()[:16]


def _ours(status: Mapping[str, Any] | None) -> dict[str, Any]:
    status = status or {}
    keys = ("conditions", "observedGeneration", "configHash", "staleSidecars")
    return {k: status.get(k) for k in keys}
