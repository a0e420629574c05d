"""
The sidecar's live components: opened stores by name, swapped make-before-break on reload.

A reload opens and pings each new or changed component first and swaps it in only if it works;
the replaced stores are closed after a grace period so requests already running on them finish.
Components fail one at a time: one that cannot be read (`redisPort: abc`, reported by the
loader with its file and field) or cannot open keeps its previous version serving, or stays
absent if it is new, while every other component goes live. Each failure is recorded by name
for `/v1.0/healthz`, `/v1.0/healthz/{store}`, `/v1.0/metadata` and the logs, and retried on the
next poll. The reloader never stops: any error is logged and the next poll reads everything
again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from statecar_contract.components import ComponentError, ResolvedComponent
from statecar_sidecar import keys
from statecar_sidecar.loader import FailedComponent, LoadedComponents
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


@dataclass(frozen=True, slots=True)
class ComponentFailure:
    """A declared component that is not serving as declared, and why."""

    name: str
    type: str | None
    #: The file it was declared in (a component file or the wiring file), when known.
    source: str | None
    reason: str
    #: True when an earlier version of the component still serves requests.
    previous_serving: bool = False


def _default_ttl(component: ResolvedComponent) -> int | None:
    """The component's `ttlInSeconds` (only `state.redis` has one), read by its settings class."""
    try:
        settings = component.settings()
    except ComponentError as exc:
        raise StoreError(str(exc)) from None
    if component.type != "state.redis":
        return None
    # Here, not at the top: the contract imports a backend's settings class with its first
    # component (statecar_contract.settings.BACKENDS), and this is a Redis one.
    from statecar_contract.settings import RedisSettings

    assert isinstance(settings, RedisSettings)
    return settings.ttl_in_seconds


class ComponentRuntime:
    def __init__(self, *, app_id: str, namespace: str | None, only: tuple[str, ...] = ()) -> None:
        self.app_id = app_id
        self.namespace = namespace
        self.only = frozenset(only)
        self.stores: dict[str, BoundStore] = {}
        #: Where each live store's component was declared (file path), by name.
        self.sources: dict[str, str] = {}
        self.last_reload_error: str | None = None
        self.failed: dict[str, ComponentFailure] = {}
        self.reloads = 0
        self.reload_failures = 0
        # daprd's dapr_runtime_component_{loaded,init_total,init_fail_total} (metrics.py renders).
        self.components_loaded = 0
        self.component_inits: dict[str, int] = {}
        self.component_init_failures: dict[tuple[str, str, str], int] = {}
        #: Attributes set by the metadata API (gRPC SetMetadata), shown under `extended`.
        self.extended_metadata: dict[str, str] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def failures(self) -> dict[str, str]:
        """Each failing component's reason, by name (a file's path when no name was read)."""
        return {name: failure.reason for name, failure in self.failed.items()}

    def _bind(self, component: ResolvedComponent, store: StateStore) -> BoundStore:
        prefix = keys.store_prefix(
            component.key_prefix,
            app_id=self.app_id,
            store_name=component.name,
            namespace=self.namespace,
        )
        return BoundStore(component.name, component, store, prefix, _default_ttl(component))

    async def _open(self, component: ResolvedComponent) -> StateStore:
        try:
            encryption = component.encryption()
        except ComponentError as exc:
            raise StoreError(str(exc)) from None
        store = await asyncio.wait_for(
            open_store(component.type, component.metadata), OPEN_TIMEOUT_SECONDS
        )
        if encryption is not None:
            # Imported here, not at start: the AES library is ~5 ms of every cold start, and
            # most components configure no keys (tests/unit/test_sidecar_imports.py).
            from statecar_sidecar.stores.encryption import EncryptedStore

            # Every backend, the same way: daprd encrypts in its API layer, above the store.
            store = EncryptedStore(store, encryption)
        try:
            await asyncio.wait_for(store.ping(), OPEN_TIMEOUT_SECONDS)
        except BaseException:
            await store.close()
            raise
        return store

    def _concerns(self, failure: FailedComponent) -> bool:
        """Whether a component that failed to load would be one of this app's, as far as known."""
        if failure.name is not None and self.only and failure.name not in self.only:
            return False
        return not failure.scopes or self.app_id in failure.scopes

    async def apply(
        self,
        components: Sequence[ResolvedComponent],
        failed: Sequence[FailedComponent] = (),
        sources: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Make `components` (those in scope for this app) live, one by one; returns failures.

        Each new or changed component is opened and pinged before it replaces the old one. One
        that fails, here or in the loader (`failed`), keeps its previous version serving (or
        stays absent if it is new) and is reported by name; it is retried on the next poll.
        A file that could not be read at all keeps every component that came from it.
        """
        sources = sources or {}
        wanted = {
            c.name: c
            for c in components
            if c.in_scope(self.app_id) and (not self.only or c.name in self.only)
        }
        new: dict[str, BoundStore] = {}
        failures: dict[str, ComponentFailure] = {}
        for name, component in wanted.items():
            current = self.stores.get(name)
            if current is not None and current.component == component:
                new[name] = current
                continue
            try:
                store = await self._open(component)
            except Exception as exc:  # one component's failure is its own
                if not isinstance(exc, StoreError | OSError | TimeoutError):
                    log.warning("opening component %s failed unexpectedly", name, exc_info=True)
                reason = f"{component.type}: {exc}" if str(exc) else f"{component.type}: {exc!r}"
                failures[name] = ComponentFailure(
                    name, component.type, sources.get(name), reason, current is not None
                )
                self._init_failed(component.type, name)
                if current is not None:
                    new[name] = current
                continue
            try:
                new[name] = self._bind(component, store)
            except Exception as exc:  # noqa: BLE001 -- as above
                self._init_failed(component.type, name)
                await self._close_quietly(store)
                failures[name] = ComponentFailure(
                    name,
                    component.type,
                    sources.get(name),
                    f"{component.type}: {exc}",
                    current is not None,
                )
                if current is not None:
                    new[name] = current
                continue
            self.components_loaded += 1
            self.component_inits[component.type] = self.component_inits.get(component.type, 0) + 1
        unreadable = {f.source for f in failed if f.name is None}
        for failure in failed:
            if not self._concerns(failure):
                continue
            kept = failure.name is not None and failure.name in self.stores
            if kept and failure.name not in new:
                assert failure.name is not None
                new[failure.name] = self.stores[failure.name]
            failures[failure.key] = ComponentFailure(
                failure.key, failure.type, failure.source, failure.reason, kept
            )
        for name, bound in self.stores.items():
            if name not in new and self.sources.get(name) in unreadable:
                new[name] = bound  # its file cannot be read right now: keep what it declared
        replaced = [
            b.store
            for name, b in self.stores.items()
            if name not in new or new[name].store is not b.store
        ]
        self.sources = {name: sources.get(name) or self.sources.get(name, "") for name in new}
        self.stores = new
        self.failed = failures
        self.reloads += 1
        if failures:
            self.reload_failures += 1
            self.last_reload_error = "; ".join(
                f"{n}: {f.reason}" for n, f in sorted(failures.items())
            )
        else:
            self.last_reload_error = None
        for store in replaced:
            self._close_later(store)
        return self.failures

    def _init_failed(self, component_type: str, name: str) -> None:
        key = (component_type, "init", name)
        self.component_init_failures[key] = self.component_init_failures.get(key, 0) + 1

    @staticmethod
    async def _close_quietly(store: StateStore) -> None:
        try:
            await store.close()
        except Exception:  # closing a store we are dropping must not fail a reload (logged)
            log.warning("closing a replaced store failed", exc_info=True)

    def _close_later(self, store: StateStore) -> None:
        async def close() -> None:
            await asyncio.sleep(CLOSE_GRACE_SECONDS)
            await self._close_quietly(store)

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
            except Exception as exc:  # noqa: BLE001 -- any failure of a ping is that store's answer
                return str(exc) or repr(exc)
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
        *,
        refuse_failed: bool = False,
    ) -> None:
        self._runtime = runtime
        self._refuse_failed = refuse_failed
        self._skipped: tuple[tuple[str, str], ...] = ()
        self._ignored: dict[str, str] = {}
        self._load = load
        self._interval = interval
        # `changed` is a cheap fingerprint of the sources (file stats): while it stays the
        # same and nothing failed, a poll reads and parses nothing.
        self._changed = changed
        self._seen: str | None = None
        self.fingerprint: str | None = None

    async def load_initial(self) -> None:
        """The first load; a source that cannot be read at all raises (the caller decides).

        With `refuse_failed` (daprd's rule), a Dapr Component that cannot be served and does not
        set `spec.ignoreErrors: true` raises too: the sidecar refuses to start.
        """
        loaded = self._load()
        fatal = [f for f in loaded.failed if f.fatal] if self._refuse_failed else []
        if fatal:
            raise ComponentError(
                ", ".join(f.key for f in fatal),
                "cannot be served, and spec.ignoreErrors is not true: "
                + "; ".join(f.reason for f in fatal),
            )
        failures = await self._apply(loaded)
        self.fingerprint = loaded.fingerprint
        for name, reason in sorted(failures.items()):
            log.error(
                "component %s is not ready, retrying every %gs: %s", name, self._interval, reason
            )

    async def _apply(self, loaded: LoadedComponents) -> dict[str, str]:
        # What the folder holds besides served stores: one line each time it changes.
        if loaded.skipped and loaded.skipped != self._skipped:
            log.info(
                "skipping %d component(s) that are not state stores (statecar serves state"
                " only): %s",
                len(loaded.skipped),
                ", ".join(f"{name} ({type_})" for name, type_ in loaded.skipped),
            )
        self._skipped = loaded.skipped
        ignored = {f.key: f.reason for f in loaded.ignored}
        for key, reason in ignored.items():
            if self._ignored.get(key) != reason:
                log.warning("component %s skipped (spec.ignoreErrors is true): %s", key, reason)
        self._ignored = ignored
        return await self._runtime.apply(loaded.components, loaded.failed, loaded.sources)

    def _report(self, message: str) -> None:
        # Log a failure once, not every poll, while it stays the same failure.
        if message != self._runtime.last_reload_error:
            log.error("components not reloaded, still serving the previous set: %s", message)
        self._runtime.last_reload_error = message

    async def poll_once(self) -> bool:
        """Apply the source if it changed; True when a new set went live. Never raises.

        Whatever goes wrong (an unreadable source, a store whose open fails in an unforeseen
        way, a bug) is logged and recorded for health and metadata, and the next poll reads
        everything again: later changes (a fix, a new component, a rotated password in the
        wiring file) are still picked up.
        """
        try:
            return await self._poll()
        except Exception as exc:  # the reloader must outlive any error (logged)
            self._seen = None  # read and apply everything again on the next poll
            message = str(exc) if isinstance(exc, ComponentError) else f"{exc!r}"
            if message != self._runtime.last_reload_error and not isinstance(exc, ComponentError):
                log.error("component reload failed; retrying on the next poll", exc_info=True)
            self._report(message)
            return False

    async def _poll(self) -> bool:
        if self._changed is not None:
            seen = self._changed()
            if (
                seen == self._seen
                and not self._runtime.failed
                and not self._runtime.last_reload_error
            ):
                return False
            self._seen = seen
        loaded = await asyncio.to_thread(self._load)
        if (
            loaded.fingerprint == self.fingerprint
            and not self._runtime.failed
            and not self._runtime.last_reload_error
        ):
            return False
        started = time.perf_counter()
        previous_failures = self._runtime.failures
        failures = await self._apply(loaded)
        changed_source = loaded.fingerprint != self.fingerprint
        self.fingerprint = loaded.fingerprint
        for name, reason in failures.items():
            if previous_failures.get(name) != reason:
                log.error(
                    "component %s is not ready, still serving its previous version if any: %s",
                    name,
                    reason,
                )
        for name in previous_failures.keys() - failures.keys():
            log.info("component %s recovered", name)
        if not changed_source and previous_failures.keys() == failures.keys():
            return False
        log.info(
            "components reloaded in %.0f ms: %s%s",
            (time.perf_counter() - started) * 1000,
            ", ".join(sorted(self._runtime.stores)) or "(none)",
            f"; not ready: {', '.join(sorted(failures))}" if failures else "",
        )
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.poll_once()
