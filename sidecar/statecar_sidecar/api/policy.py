"""
What a state request asks for, weighed against its component, and the store operations it becomes.

Pure: no I/O, no ASGI, no JSON. A transport (HTTP today, gRPC next) decodes a request into the
items below, hands over the raw `concurrency`/`consistency` header values, and gets back the
`SetOp`/`DeleteOp`s to run, or a `DaprError` naming what the client must fix. Save and
transaction build their operations with the same `operation()`, so the two routes cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar, overload

from statecar_contract.components import ResolvedComponent
from statecar_sidecar import keys
from statecar_sidecar.api import errors
from statecar_sidecar.stores.base import DeleteOp, SetOp

CONCURRENCY: Final = frozenset({"first-write", "last-write"})
CONSISTENCY: Final = frozenset({"eventual", "strong"})
TTL_METADATA: Final = "ttlInSeconds"
#: The largest TTL Dapr accepts (components-contrib state/utils/ttl.go: MaxInt32).
MAX_TTL: Final = 2**31 - 1
#: The longest user key, in bytes of UTF-8, on every backend (docs/state-api.md, "Keys").
#: PostgreSQL cannot index a key over ~2.7 KB (btree); 2 KiB leaves room for the prefix.
MAX_KEY_BYTES: Final = 2048
#: `ttlInSeconds`: an optional '-' then ASCII digits, nothing else (no spaces, '+', '_' or
#: non-ASCII digits, all of which Python's int() would take).
_TTL_GRAMMAR: Final = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class Options:
    """A request's `options` (Dapr docs, state API "Optional behaviors"); None means not given."""

    concurrency: str | None = None
    consistency: str | None = None


#: No `options` given: frozen, so every such item shares one.
NO_OPTIONS: Final = Options()


# Not frozen, as the operations they become (stores/base.py says why).
@dataclass(slots=True)
class SaveItem:
    """One item of a save or an upsert of a transaction, as the client gave it."""

    key: str
    value: bytes
    etag: str | None
    options: Options
    metadata: Mapping[str, str]


@dataclass(slots=True)
class DeleteItem:
    """One delete of a transaction, as the client gave it."""

    key: str
    etag: str | None
    options: Options
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Transaction:
    """A transaction's operations, in order, and its request-level metadata."""

    operations: list[SaveItem | DeleteItem]
    metadata: Mapping[str, str] = field(default_factory=dict)


class Store(Protocol):
    """What the policy reads of a bound store (`runtime.BoundStore` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def component(self) -> ResolvedComponent: ...
    @property
    def prefix(self) -> str: ...
    @property
    def default_ttl(self) -> int | None: ...


_S_co = TypeVar("_S_co", covariant=True)


class Catalog(Protocol[_S_co]):
    """What a transport knows of the live components (the runtime satisfies it)."""

    @property
    def app_id(self) -> str: ...
    @property
    def stores(self) -> Mapping[str, _S_co]: ...
    @property
    def failures(self) -> Mapping[str, str]: ...


def serving_store(name: str, catalog: Catalog[_S_co]) -> _S_co:
    """The store a request names, or the error both transports answer when it isn't served.

    A declared component that failed is "not configured" with its reason; with no component at
    all every name is "not configured" (Dapr's answer before any store exists); otherwise the
    name is unknown and the error lists the stores that are. The failures are only looked at
    on a miss, so a served store costs one dict lookup.
    """
    bound = catalog.stores.get(name)
    if bound is not None:
        return bound
    failures = catalog.failures
    if name in failures:
        raise errors.store_not_configured(name, catalog.app_id, failures[name])
    if not catalog.stores:
        raise errors.store_not_configured(name, catalog.app_id)
    raise errors.store_not_found(name, catalog.app_id, list(catalog.stores))


def stored_key(store: Store, key: str) -> str:
    """The key as the backend stores it (daprd's key prefix), or a 400 for a key Dapr refuses
    or some backend cannot store: a lone surrogate (not UTF-8), or over `MAX_KEY_BYTES`.

    Every route's keys pass here (get, delete, save, bulk get, transaction), so the answer is
    the same on every backend.
    """
    try:
        stored = keys.stored_key(store.prefix, key)
    except keys.IllegalKeyError:
        raise errors.illegal_key(store.name, key) from None
    except keys.NulInKeyError as exc:
        raise errors.malformed(str(exc)) from None
    # An ASCII key's length is its UTF-8 size: the common key costs two C-level checks.
    if len(key) > MAX_KEY_BYTES or not key.isascii():
        _check_unicode_key(key)
    return stored


def _check_unicode_key(key: str) -> None:
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise errors.malformed(
            f"key has a lone surrogate (\\u{ord(key[exc.start]):04x}) at character {exc.start}, "
            "which is not Unicode text and no backend can store; send the pair, or the character"
        ) from None
    if size > MAX_KEY_BYTES:
        raise errors.malformed(
            f"key is {size} bytes of UTF-8; keys are limited to {MAX_KEY_BYTES} bytes on every "
            "backend (PostgreSQL cannot index longer ones)"
        )


def header_choice(raw: str | None, name: str, allowed: frozenset[str]) -> str | None:
    """A `concurrency`/`consistency` header's value, checked; None when the header is absent.

    Extension: the Dapr docs' snippets send these as headers. They count only where the request
    itself says nothing, so a bad header is refused only when it is actually consulted.
    """
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in allowed:
        raise errors.malformed(
            f"header {name} must be one of {', '.join(sorted(allowed))}, got {value!r}"
        )
    return value


def mode(store: Store, requested: str | None, kind: str) -> str:
    """The request's mode wins over the component's default, unless the component enforces.

    `kind` is "concurrency" or "consistency"; the component's spec fields of the same names
    are the defaults (docs/state-api.md, "Concurrency and ETags"; Dapr docs, state API "Concurrency").
    """
    default: str = getattr(store.component, kind)
    if requested is None:
        return default
    if store.component.enforce and requested != default:
        raise errors.malformed(
            f"state store {store.name} enforces {kind} {default}: the request asked for "
            f"{requested}; drop the {kind} option or use {default}"
        )
    return requested


def write_flags(
    store: Store, options: Options, concurrency_header: str | None, consistency_header: str | None
) -> tuple[bool, bool]:
    """(first_write, strong) for one write: options, then headers, then the component."""
    # Most writes send neither header: the two calls are made only for one that is there.
    concurrency = options.concurrency or (
        None
        if concurrency_header is None
        else header_choice(concurrency_header, "concurrency", CONCURRENCY)
    )
    consistency = options.consistency or (
        None
        if consistency_header is None
        else header_choice(consistency_header, "consistency", CONSISTENCY)
    )
    if concurrency is None and consistency is None:
        # The usual write asks for neither: the component's defaults, which `enforce` allows.
        component = store.component
        return component.concurrency == "first-write", component.consistency == "strong"
    return (
        mode(store, concurrency, "concurrency") == "first-write",
        mode(store, consistency, "consistency") == "strong",
    )


def read_strong(store: Store, requested: str | None, consistency_header: str | None) -> bool:
    """Whether a GET reads with strong consistency: `?consistency=`, the header, the component."""
    if requested is None and consistency_header is None:
        return store.component.consistency == "strong"  # the usual GET names neither
    consistency = requested or header_choice(consistency_header, "consistency", CONSISTENCY)
    if consistency and consistency not in CONSISTENCY:
        raise errors.malformed(
            f"query parameter consistency must be eventual or strong, got {consistency!r}"
        )
    return mode(store, consistency or None, "consistency") == "strong"


def ttl(metadata: Mapping[str, str], default: int | None) -> int | None:
    """Seconds until expiry, or None for no expiry (0, -1 and absent-without-default clear it).

    `metadata.ttlInSeconds` wins over the component's `ttlInSeconds` default (Dapr docs,
    "State Time-to-Live"); -1 means "never expires" even when the component sets a default.
    """
    raw = metadata.get(TTL_METADATA)
    if raw is None:
        return default
    if _TTL_GRAMMAR.fullmatch(raw) is None:
        raise errors.malformed(
            f"metadata.{TTL_METADATA} must be an integer number of seconds (>= -1), written as "
            f"an optional '-' and the digits 0-9, got {raw!r}; nothing was written"
        )
    # Past 10 digits (leading zeros aside) it is out of range; int() would refuse 4300+.
    digits = raw.lstrip("-").lstrip("0")
    seconds = int(raw) if len(digits) <= 10 else MAX_TTL + 1
    if seconds < -1 or seconds > MAX_TTL:
        raise errors.malformed(
            f"metadata.{TTL_METADATA} must be between -1 and {MAX_TTL}, got {raw}; "
            "nothing was written"
        )
    return seconds if seconds > 0 else None


@overload
def operation(
    store: Store,
    item: SaveItem,
    concurrency_header: str | None,
    consistency_header: str | None,
) -> SetOp: ...
@overload
def operation(
    store: Store,
    item: DeleteItem,
    concurrency_header: str | None,
    consistency_header: str | None,
) -> DeleteOp: ...
def operation(
    store: Store,
    item: SaveItem | DeleteItem,
    concurrency_header: str | None,
    consistency_header: str | None,
) -> SetOp | DeleteOp:
    """One item of a save or a transaction as the store operation to run.

    Checked in this order, so the first problem a client sees does not depend on the route:
    options (and `enforce`), then the key, then the TTL.
    """
    if isinstance(item, SaveItem):
        return set_operation(
            store,
            item.key,
            item.value,
            item.etag,
            item.options,
            item.metadata,
            concurrency_header,
            consistency_header,
        )
    first_write, strong = write_flags(store, item.options, concurrency_header, consistency_header)
    return DeleteOp(stored_key(store, item.key), item.etag, first_write, strong)


def set_operation(
    store: Store,
    key: str,
    value: bytes,
    etag: str | None,
    options: Options,
    metadata: Mapping[str, str],
    concurrency_header: str | None,
    consistency_header: str | None,
) -> SetOp:
    """`operation` for a save item given by its fields: what a one-item save takes straight
    from its body (`bodies.sole_item`), with no `SaveItem` in between (bench S4a)."""
    first_write, strong = write_flags(store, options, concurrency_header, consistency_header)
    return SetOp(
        stored_key(store, key), value, etag, first_write, strong, ttl(metadata, store.default_ttl)
    )


def save_operations(
    store: Store,
    items: Sequence[SaveItem],
    concurrency_header: str | None,
    consistency_header: str | None,
) -> list[SetOp]:
    """The writes of `POST /v1.0/state/{store}`, in the request's order."""
    # A loop, not a comprehension: on 3.11 a comprehension costs a frame, and most saves are
    # one item on the measured fast path (bench/README.md).
    ops: list[SetOp] = []
    for item in items:
        ops.append(operation(store, item, concurrency_header, consistency_header))
    return ops


def transaction_operations(
    store: Store,
    items: Sequence[SaveItem | DeleteItem],
    concurrency_header: str | None,
    consistency_header: str | None,
) -> list[SetOp | DeleteOp]:
    """The operations of `POST /v1.0/state/{store}/transaction`, in the request's order.

    What `operation` checks, in its order, but items without options share one answer for the
    flags, and items sharing a metadata mapping (the query's) one TTL: the usual transaction
    works each out once, not once per item (8.2 -> 5.4 µs for 10 upserts, timeit; bench S4b).
    Each is still worked out at the first item that needs it, so a bad header or TTL is
    reported where `operation` would report it.
    """
    ops: list[SetOp | DeleteOp] = []
    default_flags: tuple[bool, bool] | None = None
    ttl_metadata: Mapping[str, str] | None = None
    item_ttl: int | None = None
    for item in items:
        options = item.options
        if options.concurrency is None and options.consistency is None:
            if default_flags is None:
                default_flags = write_flags(store, options, concurrency_header, consistency_header)
            first_write, strong = default_flags
        else:
            first_write, strong = write_flags(
                store, options, concurrency_header, consistency_header
            )
        key = stored_key(store, item.key)
        if isinstance(item, SaveItem):
            if item.metadata is not ttl_metadata:
                item_ttl = ttl(item.metadata, store.default_ttl)
                ttl_metadata = item.metadata
            ops.append(SetOp(key, item.value, item.etag, first_write, strong, item_ttl))
        else:
            ops.append(DeleteOp(key, item.etag, first_write, strong))
    return ops


def upsert_operations(
    store: Store,
    upserts: Sequence[tuple[str, bytes]],
    metadata: Mapping[str, str],
    concurrency_header: str | None,
    consistency_header: str | None,
) -> list[SetOp]:
    """`transaction_operations` for a transaction of upserts that give only a key and a value
    (`bodies.plain_upserts`), all under the query's `metadata`: the same operations, errors and
    error order (the flags, then the first key, then the TTL), with no item in between."""
    if not upserts:
        return []
    first_write, strong = write_flags(store, NO_OPTIONS, concurrency_header, consistency_header)
    key, value = upserts[0]
    first_key = stored_key(store, key)
    expiry = ttl(metadata, store.default_ttl)
    ops = [SetOp(first_key, value, None, first_write, strong, expiry)]
    for key, value in upserts[1:]:
        ops.append(SetOp(stored_key(store, key), value, None, first_write, strong, expiry))
    return ops


def delete_operation(
    store: Store,
    key: str,
    etag: str | None,
    options: Options,
    concurrency_header: str | None,
    consistency_header: str | None,
) -> DeleteOp:
    """`DELETE /v1.0/state/{store}/{key}` for a key already mapped by `stored_key`.

    The route maps the key before it reads the query's options, so an illegal key is reported
    before a bad option.
    """
    first_write, strong = write_flags(store, options, concurrency_header, consistency_header)
    return DeleteOp(key, etag=etag, first_write=first_write, strong=strong)
