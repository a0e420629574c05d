"""
Unit tier: which table layout a component gets, and the pure rules of daprd's SQL layouts
(what is stored as JSON text, which ETags are valid). The layouts on real servers, and against a
real daprd, are in tests/conformance and tests/interop/test_sql_interop.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from statecar_contract.components import parse_component, resolve
from statecar_contract.errors import ComponentError
from statecar_sidecar.stores.errors import ETagInvalidError
from statecar_sidecar.stores.postgresql.dapr_layout import etag_given
from statecar_sidecar.stores.sql_common import json_text

PG = {"connectionString": "host=127.0.0.1 port=5432"}
SQLITE = {"connectionString": ":memory:"}


def _document(
    kind: str, type_: str, metadata: dict[str, str], version: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": type_,
        "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
    }
    if version is not None:
        spec["version"] = version
    api = "dapr.io/v1alpha1" if kind == "Component" else "statecar.io/v1alpha1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "s"}, "spec": spec}


def _layout(document: dict[str, Any]) -> str | None:
    return resolve(parse_component(document), {}).metadata.get("layout")


@pytest.mark.parametrize(
    ("type_", "metadata", "version", "layout"),
    [
        ("state.postgresql", PG, None, "dapr-v1"),
        ("state.postgresql", PG, "v1", "dapr-v1"),
        ("state.postgresql", PG, "v2", "dapr-v2"),
        ("state.sqlite", SQLITE, "v1", "dapr"),
        ("state.redis", {"redisHost": "127.0.0.1"}, "v1", None),
    ],
)
def test_a_dapr_component_gets_daprds_layout_of_its_version(
    type_: str, metadata: dict[str, str], version: str | None, layout: str | None
) -> None:
    assert _layout(_document("Component", type_, metadata, version)) == layout


def test_statecars_own_component_keeps_statecars_layout_unless_it_names_one() -> None:
    assert _layout(_document("StateStoreComponent", "state.sqlite", SQLITE)) is None
    named = {**SQLITE, "layout": "dapr"}
    assert _layout(_document("StateStoreComponent", "state.sqlite", named)) == "dapr"
    # A Dapr Component may keep statecar's layout by naming it.
    kept = {**PG, "layout": "statecar"}
    assert _layout(_document("Component", "state.postgresql", kept, "v1")) == "statecar"
    # spec.version v2 is daprd's v2 table layout, for a StateStoreComponent too.
    assert _layout(_document("StateStoreComponent", "state.postgresql", PG, "v2")) == "dapr-v2"


@pytest.mark.parametrize(
    ("type_", "metadata", "version", "field"),
    [
        ("state.sqlite", SQLITE, "v2", "spec.version"),
        ("state.postgresql", PG, "v3", "spec.version"),
        ("state.postgresql", {**PG, "layout": "dapr-v1"}, "v2", "spec.metadata.layout"),
        ("state.postgresql", {**PG, "tableName": "t"}, "v2", "spec.metadata.tableName"),
        ("state.postgresql", {**PG, "tablePrefix": "p_"}, "v1", "spec.metadata.tablePrefix"),
        ("state.postgresql", {**PG, "layout": "v2"}, "v1", "spec.metadata.layout"),
    ],
)
def test_a_version_or_layout_that_cannot_be_served_names_the_field(
    type_: str, metadata: dict[str, str], version: str, field: str
) -> None:
    with pytest.raises(ComponentError) as caught:
        parse_component(_document("Component", type_, metadata, version))
    assert caught.value.field == field


def test_metadata_table_name_belongs_to_daprds_layouts_only() -> None:
    document = _document(
        "StateStoreComponent", "state.sqlite", {**SQLITE, "metadataTableName": "m"}
    )
    with pytest.raises(ComponentError) as caught:
        parse_component(document)
    assert caught.value.field == "spec.metadata.metadataTableName"
    dapr = _document("Component", "state.sqlite", {**SQLITE, "metadataTableName": "m"}, "v1")
    assert resolve(parse_component(dapr), {}).metadata["metadataTableName"] == "m"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (b'{"a":1}', '{"a":1}'),
        (b'  "caf\xc3\xa9"  ', '  "café"  '),
        (b"12", "12"),
        (b"not json", None),
        (b"\xff\xfe", None),  # not UTF-8
        (b"NaN", None),  # Python reads it, JSON does not
        (b'{"a":1} {"b":2}', None),
    ],
)
def test_json_values_are_text_everything_else_binary(value: bytes, text: str | None) -> None:
    assert json_text(value) == text


def test_jsonb_gets_no_value_it_would_refuse_or_change() -> None:
    assert json_text(b'"\\u0000"') == '"\\u0000"'  # SQLite keeps it as text
    assert json_text(b'"\\u0000"', for_jsonb=True) is None  # jsonb refuses it
    assert json_text(b'"\\ud83d\\ude00"', for_jsonb=True) is None  # surrogate escapes
    assert json_text(b'{"a": 1}', for_jsonb=True) == '{"a": 1}'


@pytest.mark.parametrize("etag", ["1", "4294967295", "3000000000"])
def test_v1_etags_are_32_bit_transaction_ids(etag: str) -> None:
    assert etag_given("dapr-v1", "k", etag) == etag


@pytest.mark.parametrize(
    "etag", ["0", "01", "4294967296", "-1", "abc", "ffffffff-ffff-4fff-bfff-ffffffffffff"]
)
def test_anything_else_is_an_invalid_v1_etag(etag: str) -> None:
    with pytest.raises(ETagInvalidError):
        etag_given("dapr-v1", "k", etag)


def test_v2_etags_are_uuids_compared_in_lower_case() -> None:
    upper = "ABCDEF01-2345-4678-9ABC-DEF012345678"
    assert etag_given("dapr-v2", "k", upper) == upper.lower()
    for bad in ("1", "abcdef0123454678", "{abcdef01-2345-4678-9abc-def012345678}"):
        with pytest.raises(ETagInvalidError):
            etag_given("dapr-v2", "k", bad)
