"""
The sidecar's live components: opened stores by name, swapped make-before-break on reload.

A reload opens and pings every new or changed component first; only if all of them work are
they swapped in, and the replaced stores are closed after a grace period so requests already
running on them finish. On any failure the old set keeps serving and the error is recorded
for `/v1.0/healthz/outbound`, `/v1.0/metadata` and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from statecar_contract.components import ResolvedComponent
from statecar_sidecar import keys
from statecar_sidecar.loader import LoadedComponents
from statecar_sidecar.stores.base import StateStore
from statecar_sidecar.stores.errors import StoreError
from statecar_sidecar.stores.registry import open_store

log = logging.getLogger("statecar.runtime")

CLOSE_GRACE_SECONDS = 5.0
OPEN_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class BoundStore:
    """A store as a request sees it: its component's policy and its key prefix."""

    name: str
    component: ResolvedComponent
    store: StateStore
    prefix: str
    default_ttl: int | None


def _default_ttl(component: ResolvedComponent) -> int | None:
    raw = component.metadata.get("ttlInSeconds")
    try:
        ttl = int(raw) if raw else 0
    except ValueError:
        raise StoreError(
            f"component {component.name}: metadata ttlInSeconds must be an integer, got {raw!r}"
        ) from None
    return ttl if ttl > 0 else None


class ComponentRuntime:
    def __init__(self, *, app_id: str, namespace: str | None, only: tuple[str, ...] = ()) -> None:
        self.app_id = app_id
        self.namespace = namespace
        self.only = frozenset(only)
        self.stores: dict[str, BoundStore] = {}
        self.last_reload_error: str | None = None
        self.failures: dict[str, str] = {}
        self.reloads = 0
        self.reload_failures = 0
        #: Attributes set by the metadata API (gRPC SetMetadata), shown under `extended`.
        self.extended_metadata: dict[str, str] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _bind(self, component: ResolvedComponent, store: StateStore) -> BoundStore:
        prefix = keys.store_prefix(
            component.key_prefix,
            app_id=self.app_id,
            store_name=component.name,
            namespace=self.namespace,
        )
        return BoundStore(component.name, component, store, prefix, _default_ttl(component))

    async def _open(self, component: ResolvedComponent) -> StateStore:
        store = await asyncio.wait_for(
            open_store(component.type, component.metadata), OPEN_TIMEOUT_SECONDS
        )
        try:
            await asyncio.wait_for(store.ping(), OPEN_TIMEOUT_SECONDS)
        except BaseException:
            await store.close()
            raise
        return store

    async def apply(self, components: Sequence[ResolvedComponent]) -> dict[str, str]:
        """Make `components` (those in scope for this app) live, one by one; returns failures.

        Each new or changed component is opened and pinged before it replaces the old one. One
        that fails keeps its previous version serving (or stays absent if it is new) and is
        reported by name; it is retried on the next poll.
        """
        wanted = {
            c.name: c
            for c in components
            if c.in_scope(self.app_id) and (not self.only or c.name in self.only)
        }
        new: dict[str, BoundStore] = {}
        failures: dict[str, str] = {}
        for name, component in wanted.items():
            current = self.stores.get(name)
            if current is not None and current.component == component:
                new[name] = current
                continue
            try:
                store = await self._open(component)
                new[name] = self._bind(component, store)
            except (StoreError, OSError, TimeoutError) as exc:
                failures[name] = f"{component.type}: {exc}"
                if current is not None:
                    new[name] = current
        replaced = [
            b.store
            for name, b in self.stores.items()
            if name not in new or new[name].store is not b.store
        ]
        self.stores = new
        self.failures = failures
        self.reloads += 1
        if failures:
            self.reload_failures += 1
            self.last_reload_error = "; ".join(f"{n}: {r}" for n, r in sorted(failures.items()))
        else:
            self.last_reload_error = None
        for store in replaced:
            self._close_later(store)
        return failures

    def _close_later(self, store: StateStore) -> None:
        async def close() -> None:
            await asyncio.sleep(CLOSE_GRACE_SECONDS)
            await store.close()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def check_health(self, within: float = 2.0) -> dict[str, str | None]:
        """Ping every store concurrently: name -> None when healthy, else the reason."""

        async def one(bound: BoundStore) -> str | None:
            try:
                await asyncio.wait_for(bound.store.ping(), within)
            except TimeoutError:
                return f"no answer within {within:g}s"
            except (StoreError, OSError) as exc:
                return str(exc)
            return None

        bound_stores = list(self.stores.values())
        results = await asyncio.gather(*(one(b) for b in bound_stores))
        return {b.name: r for b, r in zip(bound_stores, results, strict=True)}

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        for bound in self.stores.values():
            await bound.store.close()
        self.stores = {}


class Reloader:
    """Polls the components' source and applies changes; failures keep the old set serving."""

    def __init__(
        self,
        runtime: ComponentRuntime,
        load: Callable[[], LoadedComponents],
        interval: float,
        changed: Callable[[], str] | None = None,
    ) -> None:
        self._runtime = runtime
        self._load = load
        self._interval = interval
        # `changed` is a cheap fingerprint of the sources (file stats): while it stays the
        # same and nothing failed, a poll reads and parses nothing.
        self._changed = changed
        self._seen: str | None = None
        self.fingerprint: str | None = None

    async def load_initial(self) -> None:
        loaded = self._load()
        failures = await self._runtime.apply(loaded.components)
        self.fingerprint = loaded.fingerprint
        for name, reason in sorted(failures.items()):
            log.error(
                "component %s is not ready, retrying every %gs: %s", name, self._interval, reason
            )

    def _report(self, message: str) -> None:
        # Log a failure once, not every poll, while it stays the same failure.
        if message != self._runtime.last_reload_error:
            log.error("components not reloaded, still serving the previous set: %s", message)
        self._runtime.last_reload_error = message

    async def poll_once(self) -> bool:
        """Apply the source if it changed; True when a new set went live."""
        if self._changed is not None:
            seen = self._changed()
            if (
                seen == self._seen
                and not self._runtime.failures
                and not self._runtime.last_reload_error
            ):
                return False
            self._seen = seen
        try:
            loaded = await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 -- a broken file must not stop the sidecar
            self._report(str(exc))
            return False
        if loaded.fingerprint == self.fingerprint and not self._runtime.failures:
            return False
        started = time.perf_counter()
        previous_failures = dict(self._runtime.failures)
        failures = await self._runtime.apply(loaded.components)
        self.fingerprint = loaded.fingerprint
        for name, reason in failures.items():
            if previous_failures.get(name) != reason:
                log.error(
                    "component %s is not ready, still serving its previous version if any: %s",
                    name,
                    reason,
                )
        if (
            failures
            and loaded.fingerprint == self.fingerprint
            and previous_failures.keys() == failures.keys()
        ):
            return False
        log.info(
            "components reloaded in %.0f ms: %s",
            (time.perf_counter() - started) * 1000,
            ", ".join(sorted(self._runtime.stores)) or "(none)",
        )
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.poll_once()
