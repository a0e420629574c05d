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
from statecar_sidecar.loader import LoadedComponents
from statecar_sidecar import keys
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
        raise StoreError(f"component {component.name}: metadata ttlInSeconds must be an integer, got {raw!r}") from None
    return ttl if ttl > 0 else None


class ComponentRuntime:
    def __init__(self, *, app_id: str, namespace: str | None) -> None:
        self.app_id = app_id
        self.namespace = namespace
        self.stores: dict[str, BoundStore] = {}
        self.last_reload_error: str | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._closing: set[asyncio.Task[None]] = set()

    def _bind(self, component: ResolvedComponent, store: StateStore) -> BoundStore:
        prefix = keys.store_prefix(
            component.key_prefix, app_id=self.app_id, store_name=component.name, namespace=self.namespace
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

    async def apply(self, components: Sequence[ResolvedComponent]) -> None:
        """Make `components` (those in scope for this app) the live set, or raise and keep the old."""
        wanted = {c.name: c for c in components if c.in_scope(self.app_id)}
        opened: dict[str, StateStore] = {}
        try:
            for name, component in wanted.items():
                current = self.stores.get(name)
                if current is not None and current.component == component:
                    continue
                try:
                    opened[name] = await self._open(component)
                except (StoreError, OSError, TimeoutError) as exc:
                    raise StoreError(f"component {name} ({component.type}): {exc}") from exc
            new = {
                name: self._bind(component, opened[name]) if name in opened else self.stores[name]
                for name, component in wanted.items()
            }
        except BaseException as exc:
            for store in opened.values():
                await store.close()
            self.reload_failures += 1
            self.last_reload_error = str(exc)
            raise
        replaced = [b.store for name, b in self.stores.items() if name not in new or new[name].store is not b.store]
        self.stores = new
        self.reloads += 1
        self.last_reload_error = None
        for store in replaced:
            self._close_later(store)

    def _close_later(self, store: StateStore) -> None:
        async def close() -> None:
            await asyncio.sleep(CLOSE_GRACE_SECONDS)
            await store.close()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def check_health(self, timeout: float = 2.0) -> dict[str, str | None]:
        """Ping every store concurrently: name -> None when healthy, else the reason."""

        async def one(bound: BoundStore) -> str | None:
            try:
                await asyncio.wait_for(bound.store.ping(), timeout)
            except TimeoutError:
                return f"no answer within {timeout:g}s"
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
        self, runtime: ComponentRuntime, load: Callable[[], LoadedComponents], interval: float
    ) -> None:
        self._runtime = runtime
        self._load = load
        self._interval = interval
        self.fingerprint: str | None = None

    async def load_initial(self) -> None:
        loaded = self._load()
        await self._runtime.apply(loaded.components)
        self.fingerprint = loaded.fingerprint

    def _report(self, message: str) -> None:
        # Log a failure once, not every poll, while it stays the same failure.
        if message != self._runtime.last_reload_error:
            log.error("components not reloaded, still serving the previous set: %s", message)
        self._runtime.last_reload_error = message

    async def poll_once(self) -> bool:
        """Apply the source if it changed; True when a new set went live."""
        try:
            loaded = await asyncio.to_thread(self._load)
        except Exception as exc:  # noqa: BLE001 -- a broken file must not stop the sidecar
            self._report(str(exc))
            return False
        if loaded.fingerprint == self.fingerprint:
            return False
        started = time.perf_counter()
        try:
            await self._runtime.apply(loaded.components)
        except Exception as exc:  # noqa: BLE001 -- keep serving the old stores; retried next poll
            self._report(str(exc))
            return False
        self.fingerprint = loaded.fingerprint
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
