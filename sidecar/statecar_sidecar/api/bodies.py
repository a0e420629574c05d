"""
Decoding Dapr state request bodies into typed items, keeping each `value` as its exact text.

Pure functions: bytes and query parameters in, frozen items out, `DaprError` for anything a
client must fix (the message names the field). Shapes follow daprd's `pkg/api/http/http.go`,
plus two documented extensions: a save body that is a JSON *string* holding the array (the
Dapr docs' Python snippets send that), and a transaction ETag given as `{"value": "..."}`
(the JS SDK sends that). The items are `policy`'s vocabulary, which any transport shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from statecar_sidecar.api import rawjson
from statecar_sidecar.api.errors import DaprError, malformed
from statecar_sidecar.api.policy import (
    CONCURRENCY,
    CONSISTENCY,
    NO_OPTIONS,
    DeleteItem,
    Options,
    SaveItem,
    Transaction,
)

__all__ = [
    "DeleteItem",
    "Options",
    "SaveItem",
    "Transaction",
    "parse_bulk",
    "parse_metadata",
    "parse_options",
    "parse_save",
    "parse_save_in_full",
    "parse_transaction",
    "plain_upserts",
    "query_options",
    "sole_item",
]


def _canonical(body: bytes) -> Any | None:
    """The decoded body when orjson re-encodes it byte for byte, else None.

    orjson's output is compositional (compact, no indentation, one spelling per value), so
    when the whole body round-trips, each value's text is exactly `orjson.dumps(value)`: the
    values stay byte-exact without the pure-Python walker, which costs ~20x more (bench S4b).
    Anything else (whitespace, escapes, huge numbers, duplicate names) takes the walker.
    """
    try:
        document = orjson.loads(body)
        # orjson encodes less deeply than it decodes: such a body takes the walker.
        return document if orjson.dumps(document) == body else None
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None


class _Exact:
    """A value from a canonical body: `.text` is its exact JSON, as `rawjson.Raw` has."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _lowered(item: object) -> object:
    # Go's decoder matches member names case-insensitively, as the walker does.
    if isinstance(item, dict):
        return {str(k).lower(): v for k, v in item.items()}
    return item


def _decode_text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"the body is not UTF-8 text (byte {exc.start}); send JSON") from None


def _item_object(s: str, i: int) -> tuple[Any, int]:
    # Only an object is descended into; any other value is kept as decoded, for the shared
    # checks to refuse with the same message the fast path gives (the two parsers agree).
    if i < len(s) and s[i] == "{":
        return rawjson.scan_object(s, i, {"value": rawjson.scan_raw})
    return rawjson.scan_value(s, i)


def parse_options(raw: object, where: str) -> Options:
    if raw is None:
        return NO_OPTIONS
    if not isinstance(raw, dict):
        raise malformed(f'{where}.options must be an object like {{"concurrency": "first-write"}}')
    lowered = {str(k).lower(): v for k, v in raw.items()}
    concurrency = lowered.get("concurrency") or None
    consistency = lowered.get("consistency") or None
    # An object or an array is no choice either (and would not even hash for the set test).
    if concurrency is not None and (
        not isinstance(concurrency, str) or concurrency not in CONCURRENCY
    ):
        raise malformed(
            f"{where}.options.concurrency must be first-write or last-write, got {concurrency!r}"
        )
    if consistency is not None and (
        not isinstance(consistency, str) or consistency not in CONSISTENCY
    ):
        raise malformed(
            f"{where}.options.consistency must be eventual or strong, got {consistency!r}"
        )
    return Options(concurrency=concurrency, consistency=consistency)


def query_options(params: Mapping[str, str]) -> Options:
    """`?concurrency=` and `?consistency=` of a DELETE, checked like a body's options."""
    return parse_options(
        {
            "concurrency": params.get("concurrency") or None,
            "consistency": params.get("consistency") or None,
        },
        "query",
    )


def parse_metadata(raw: object, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise malformed(f"{where}.metadata must be an object of strings")
    result: dict[str, str] = {}
    for name, value in raw.items():
        if isinstance(value, bool):
            result[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            result[name] = str(value)
        else:
            raise malformed(f"{where}.metadata.{name} must be a string")
    return result


def _parse_etag(raw: object, where: str, *, allow_object: bool) -> str | None:
    if raw is None:
        return None
    if allow_object and isinstance(raw, dict):
        lowered = {str(k).lower(): v for k, v in raw.items()}
        raw = lowered.get("value")
        if raw is None:
            return None
    if not isinstance(raw, str):
        raise malformed(f'{where}.etag must be a JSON string (e.g. "17"), got {type(raw).__name__}')
    return raw or None  # "" means no ETag (dapr/dapr#2320)


def _key(raw: object, where: str) -> str:
    if raw is None or raw == "":
        raise malformed(f'"key" is a required field ({where}.key)')
    if not isinstance(raw, str):
        raise malformed(f"{where}.key must be a string")
    return raw


def _value_bytes(raw: object) -> bytes:
    # A missing value is stored as JSON null, as daprd does.
    if isinstance(raw, rawjson.Raw):
        return raw.text.encode("utf-8")
    if isinstance(raw, _Exact):
        return orjson.dumps(raw.value)
    return b"null"


def _items_from_canonical(document: Any) -> list[Any] | None:
    if not isinstance(document, list):
        return None
    items: list[Any] = []
    for item in document:
        item = _lowered(item)
        if isinstance(item, dict) and "value" in item:
            item["value"] = _Exact(item["value"])
        items.append(item)
    return items


def parse_save(body: bytes, query_metadata: Mapping[str, str]) -> list[SaveItem]:
    sole = sole_item(body)
    if sole is not None:
        return [SaveItem(sole[0], sole[1], None, NO_OPTIONS, {**query_metadata})]
    return parse_save_in_full(body, query_metadata)


def parse_save_in_full(body: bytes, query_metadata: Mapping[str, str]) -> list[SaveItem]:
    """`parse_save` without its one-item shortcut, for a caller that tried `sole_item` first:
    a several-item body spelled `[{"key":...` would otherwise pay that try twice."""
    items = _items_from_canonical(_canonical(body))
    if items is None:
        items = _walk_save(body)
    return _save_items(items, query_metadata)


_KEY_FIRST: Final = b'[{"key":"'
_THEN_VALUE: Final = b'","value":'
_JSON_SPACE: Final = frozenset(b" \t\r\n")
# What a key spelled without escapes cannot hold: a quote would end it early, a backslash starts
# an escape, and JSON forbids raw control characters.
_NOT_IN_PLAIN_KEY: Final = bytes(range(0x20)) + b'"\\'
_KEY_START: Final = len(_KEY_FIRST)
_VALUE_AFTER_KEY: Final = len(_THEN_VALUE)


def sole_item(body: bytes) -> tuple[str, bytes] | None:
    """The key and the value's exact text of the common save, `[{"key":"k","value":V}]` spelled
    exactly so (no escape in the key, no space around V); None for any other body.

    `V` parsing whole as one JSON value is what proves the body is that one item: a second
    member or item would leave text after the value, which orjson refuses. So the body is read
    once (V's parse) instead of the general path's parse, re-encoding and comparison, and the
    item skips `_save_items`' per-field checks (bench S4a, a 1 KB save).
    """
    if not (body.startswith(_KEY_FIRST) and body.endswith(b"}]")):
        return None
    return _plain_item(body, _KEY_START, len(body) - 2)


def _plain_item(body: bytes, start: int, end: int) -> tuple[str, bytes] | None:
    """`body[start:end]` read as `k","value":V` (a key with no escape, V one JSON value with no
    space around it): the key and V's exact text, or None."""
    key_end = body.find(_THEN_VALUE, start, end)
    if key_end <= start:
        return None  # no such member, or an empty key (a 400 the general path words)
    raw_key = body[start:key_end]
    # One C-level pass for all three checks: parse_save 2.4 -> 1.8 µs (timeit; bench S4a).
    if len(raw_key.translate(None, _NOT_IN_PLAIN_KEY)) != key_end - start:
        return None
    value = body[key_end + _VALUE_AFTER_KEY : end]
    if not value or value[0] in _JSON_SPACE or value[-1] in _JSON_SPACE:
        return None
    try:
        orjson.loads(value)
        return raw_key.decode("utf-8"), value
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        return None


def _walk_save(body: bytes) -> list[Any]:
    s = _decode_text(body)
    try:
        stripped = rawjson.skip_ws(s, 0)
        if stripped < len(s) and s[stripped] == '"':
            # Extension: `requests.post(url, json=a_string)` double-encodes the array
            # (Dapr docs, "How-To: Build a stateful service"); unwrap one level.
            inner = rawjson.parse_document(s, rawjson.scan_value)
            if not isinstance(inner, str):
                raise rawjson.JSONShapeError("expected a JSON array of state items")
            s = inner
        items = rawjson.parse_document(s, lambda t, i: rawjson.scan_array(t, i, _item_object))
    except rawjson.JSONShapeError as exc:
        raise malformed(f"the body must be a JSON array of {{key, value}} items: {exc}") from None
    return list(items)


def _save_items(items: list[Any], query_metadata: Mapping[str, str]) -> list[SaveItem]:
    result: list[SaveItem] = []
    for index, item in enumerate(items):
        where = f"[{index}]"
        if not isinstance(item, dict):
            raise malformed(f"{where} must be an object with key and value")
        metadata = parse_metadata(item.get("metadata"), where)
        metadata.update(query_metadata)  # query metadata wins, as in daprd (maps.Copy)
        result.append(
            SaveItem(
                key=_key(item.get("key"), where),
                value=_value_bytes(item.get("value")),
                etag=_parse_etag(item.get("etag"), where, allow_object=False),
                options=parse_options(item.get("options"), where),
                metadata=metadata,
            )
        )
    return result


def parse_bulk(body: bytes) -> tuple[list[str], dict[str, str]]:
    s = _decode_text(body)
    try:
        document = rawjson.parse_document(s, rawjson.scan_object)
    except rawjson.JSONShapeError as exc:
        raise malformed(f"failed deserializing HTTP body: {exc}") from None
    keys = document.get("keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise malformed('failed deserializing HTTP body: "keys" must be an array of strings')
    parallelism = document.get("parallelism")
    if parallelism is not None and (
        not isinstance(parallelism, int) or isinstance(parallelism, bool)
    ):
        raise malformed('failed deserializing HTTP body: "parallelism" must be an integer')
    return keys, parse_metadata(document.get("metadata"), "body")


def _operation(s: str, i: int) -> tuple[Any, int]:
    if i < len(s) and s[i] == "{":
        return rawjson.scan_object(s, i, {"request": _item_object})
    return rawjson.scan_value(s, i)  # not an operation: the shared checks refuse it


def _operations(s: str, i: int) -> tuple[Any, int]:
    if i < len(s) and s[i] == "[":
        return rawjson.scan_array(s, i, _operation)
    return rawjson.scan_value(s, i)  # null, or a value the shared checks refuse


def _transaction_from_canonical(document: Any) -> dict[str, Any] | None:
    if not isinstance(document, dict):
        return None
    lowered: dict[str, Any] = {str(k).lower(): v for k, v in document.items()}
    operations = lowered.get("operations")
    if isinstance(operations, list):
        converted = []
        for op in operations:
            op = _lowered(op)
            if isinstance(op, dict):
                request = _lowered(op.get("request"))
                if isinstance(request, dict) and "value" in request:
                    request["value"] = _Exact(request["value"])
                op["request"] = request
            converted.append(op)
        lowered["operations"] = converted
    return lowered


_OPERATION_MEMBERS: Final = frozenset({"operation", "request"})
_KEY_AND_VALUE: Final = frozenset({"key", "value"})


def _plain_upserts(document: Any, query_metadata: Mapping[str, str]) -> Transaction | None:
    """A canonical transaction of upserts that give only a key and a value, read without the
    per-field checks; None for anything else.

    Such an upsert has no member to lower, and no ETag, options or metadata to check: the general
    path would build the same items (tests/unit/test_sidecar_pure.py), at ~2x the cost: the
    whole parse of 10 upserts of 1 KB takes 52 µs that way against 24 (timeit; bench S4b).
    """
    if type(document) is not dict or document.keys() != {"operations"}:
        return None
    operations = document["operations"]
    if type(operations) is not list:
        return None
    items: list[SaveItem | DeleteItem] = []
    # One copy of the query's metadata for all the items (none of them has its own), so that
    # `policy.transaction_operations` works their TTL out once.
    metadata = {**query_metadata}
    for op in operations:
        if type(op) is not dict or op.keys() != _OPERATION_MEMBERS or op["operation"] != "upsert":
            return None
        request = op["request"]
        if type(request) is not dict or request.keys() != _KEY_AND_VALUE:
            return None
        key = request["key"]
        if type(key) is not str or not key:
            return None
        items.append(SaveItem(key, orjson.dumps(request["value"]), None, NO_OPTIONS, metadata))
    return Transaction(operations=items, metadata={**query_metadata})


_UPSERTS_FIRST: Final = b'{"operations":[{"operation":"upsert","request":{"key":"'
_UPSERTS_BETWEEN: Final = b'}},{"operation":"upsert","request":{"key":"'
_UPSERTS_LAST: Final = b"}}]}"
# What the separator is searched for by: its head finds it faster than the whole of it, whose
# many distinct bytes defeat `bytes.find`'s skip table (0.44 against 0.75 µs per 1 KB value).
_UPSERTS_CUE: Final = _UPSERTS_BETWEEN[:15]


def plain_upserts(body: bytes) -> list[tuple[str, bytes]] | None:
    """The keys and values' exact texts of the common transaction, upserts of a key and a value
    spelled exactly `{"operations":[{"operation":"upsert","request":{"key":"k","value":V}},...]}`
    (no escape in a key, no space around a V); None for any other body.

    The body is cut at each `}},{"operation":"upsert","request":{"key":"` and every piece must
    read as `k","value":V` with V one whole JSON value (`_plain_item`). Then the body *is* that
    document, piece by piece, so it means what the general path would read from it, and each V
    is its exact text. A V that holds the separator itself (inside a nested array) leaves a
    piece that is not one JSON value: such a body takes the general path. One orjson parse per
    value instead of the general path's parse, re-encoding and comparison of the whole body,
    one re-encoding per value and one `SaveItem` per operation (bench S4b).
    """
    if not (body.startswith(_UPSERTS_FIRST) and body.endswith(_UPSERTS_LAST)):
        return None
    end = len(body) - len(_UPSERTS_LAST)
    start = len(_UPSERTS_FIRST)
    pairs: list[tuple[str, bytes]] = []
    while True:
        cut = body.find(_UPSERTS_CUE, start, end)
        if cut >= 0 and not body.startswith(_UPSERTS_BETWEEN, cut):
            # The cue inside a value: the whole separator is searched for past it, so a body
            # full of cues costs two C-level searches a piece, not a Python step a cue.
            cut = body.find(_UPSERTS_BETWEEN, cut + 1, end)
        pair = _plain_item(body, start, end if cut < 0 else cut)
        if pair is None:
            return None
        pairs.append(pair)
        if cut < 0:
            return pairs
        start = cut + len(_UPSERTS_BETWEEN)


def parse_transaction(body: bytes, query_metadata: Mapping[str, str]) -> Transaction:
    canonical = _canonical(body)
    plain = _plain_upserts(canonical, query_metadata)
    if plain is not None:
        return plain
    return _parse_transaction(body, canonical, query_metadata)


def _parse_transaction(
    body: bytes, canonical: Any, query_metadata: Mapping[str, str]
) -> Transaction:
    """Any transaction body; `canonical` is `_canonical(body)`."""
    document = _transaction_from_canonical(canonical)
    if document is None:
        s = _decode_text(body)
        try:
            document = rawjson.parse_document(
                s, lambda t, i: rawjson.scan_object(t, i, {"operations": _operations})
            )
        except rawjson.JSONShapeError as exc:
            raise malformed(f"failed deserializing HTTP body: {exc}") from None
    raw_operations = document.get("operations")
    if raw_operations is None:
        raw_operations = []
    elif not isinstance(raw_operations, list):
        raise malformed(
            'failed deserializing HTTP body: "operations" must be an array of '
            "{operation, request} objects"
        )
    metadata = parse_metadata(document.get("metadata"), "body")
    metadata.update(query_metadata)
    operations: list[SaveItem | DeleteItem] = []
    for index, op in enumerate(raw_operations):
        where = f"operations[{index}]"
        if not isinstance(op, dict):
            raise malformed(f"{where} must be an object with operation and request")
        kind = op.get("operation")
        request = op.get("request")
        if kind not in ("upsert", "delete"):
            raise DaprError(
                400, "ERR_NOT_SUPPORTED_STATE_OPERATION", f"operation type {kind} not supported"
            )
        if not isinstance(request, dict):
            raise malformed(f"{where}.request must be an object with a key")
        item_metadata = parse_metadata(request.get("metadata"), f"{where}.request")
        item_metadata.update(query_metadata)
        key = _key(request.get("key"), f"{where}.request")
        etag = _parse_etag(request.get("etag"), f"{where}.request", allow_object=True)
        options = parse_options(request.get("options"), f"{where}.request")
        if kind == "upsert":
            operations.append(
                SaveItem(key, _value_bytes(request.get("value")), etag, options, item_metadata)
            )
        else:
            operations.append(DeleteItem(key, etag, options, item_metadata))
    return Transaction(operations=operations, metadata=metadata)
