"""
State encryption, the pure parts: daprd's value format (against ciphertexts daprd itself wrote,
captured by tests/interop/test_encryption_interop.py), the settings' rules, the secret names
that travel from a secretKeyRef to the store (folder, secret store, wiring), and the store
wrapper over a real in-memory store.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from statecar_contract import wiring
from statecar_contract.components import ComponentError, SecretKeyRef, parse_component, resolve
from statecar_contract.settings import EncryptionKey, EncryptionSettings
from statecar_sidecar.loader import load_folder, load_wiring_file
from statecar_sidecar.stores.base import DeleteOp, SetOp
from statecar_sidecar.stores.encryption import (
    NONCE_BYTES,
    DecryptionError,
    EncryptedQueryError,
    EncryptedStore,
    open_value,
    seal,
)
from statecar_sidecar.stores.memory import MemoryStore
from statecar_sidecar.stores.query import parse_query

VECTORS = json.loads(
    (Path(__file__).parent / "fixtures" / "daprd_encryption_vectors.json").read_text()
)["vectors"]
HEX_A = "6b3c0e9f3a5d4e1b2c7a8f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69788796"
HEX_B = "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210"
KEY_A = EncryptionKey("key-a", bytes.fromhex(HEX_A))
KEY_B = EncryptionKey("key-b", bytes.fromhex(HEX_B))


# --- daprd's format ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['keyName']}-{len(v['stored'])}")
def test_daprds_ciphertexts_open_and_reseal_to_the_same_bytes(vector: dict[str, str]) -> None:
    key = EncryptionKey(vector["keyName"], bytes.fromhex(vector["keyHex"]))
    stored = vector["stored"].encode()
    plaintext = base64.b64decode(vector["plaintextBase64"])
    assert open_value(stored, EncryptionSettings(key)) == plaintext
    # As a secondary key too: rotation reads by the name a value carries.
    assert open_value(stored, EncryptionSettings(KEY_A, key)) == plaintext
    nonce = base64.b64decode(stored.rsplit(b"||", 1)[0])[:NONCE_BYTES]
    assert seal(plaintext, key, nonce=nonce) == stored


def test_the_vectors_cover_aes_128_and_256_and_an_empty_value() -> None:
    assert {len(v["keyHex"]) for v in VECTORS} == {32, 64}
    assert "" in {v["plaintextBase64"] for v in VECTORS}


def test_each_seal_uses_a_fresh_nonce_and_tags_the_primary_name() -> None:
    first, second = seal(b"same", KEY_A), seal(b"same", KEY_A)
    assert first != second
    assert first.endswith(b"||key-a")
    assert open_value(first, EncryptionSettings(KEY_A)) == b"same"


def test_an_empty_stored_value_reads_as_empty_as_in_daprd() -> None:
    assert open_value(b"", EncryptionSettings(KEY_A)) == b""


@pytest.mark.parametrize(
    ("stored", "fragment"),
    [
        (b'{"plain":"json"}', "encryption key name not found on record"),
        (seal(b"x", KEY_B), "secret 'key-b'; this store has 'key-a'"),
        (b"!!not base64!!||key-a", "not base64"),
        (base64.b64encode(b"short") + b"||key-a", "shorter than a nonce and a tag"),
        (seal(b"x", EncryptionKey("key-a", bytes.fromhex(HEX_B))), "authentication failed"),
    ],
    ids=["plaintext", "unknown-key", "not-base64", "short", "wrong-key"],
)
def test_a_value_that_cannot_be_opened_says_why(stored: bytes, fragment: str) -> None:
    with pytest.raises(ValueError) as raised:  # noqa: PT011 -- the message is checked below
        open_value(stored, EncryptionSettings(KEY_A))
    assert fragment in str(raised.value)


# --- settings -----------------------------------------------------------------------------------


def _component(*items: dict[str, Any], secret_store: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {"type": "state.in-memory", "version": "v1", "metadata": list(items)},
    }
    if secret_store:
        document["auth"] = {"secretStore": "localsecrets"}
    return document


def _ref(setting: str, secret: str, key: str | None = None) -> dict[str, Any]:
    return {"name": setting, "secretKeyRef": {"name": secret, "key": key or secret}}


def test_a_key_given_as_a_plain_value_is_refused_naming_the_setting() -> None:
    with pytest.raises(ComponentError) as raised:
        parse_component(_component({"name": "primaryEncryptionKey", "value": HEX_A}))
    assert raised.value.field == "spec.metadata.primaryEncryptionKey"
    assert "secretKeyRef" in str(raised.value)
    assert HEX_A not in str(raised.value)


@pytest.mark.parametrize(
    ("items", "secrets", "field", "fragment"),
    [
        ([_ref("primaryEncryptionKey", "a")], {("a", "a"): "zz" * 32}, "primary", "in hex"),
        ([_ref("primaryEncryptionKey", "a")], {("a", "a"): "ab" * 20}, "primary", "20 bytes"),
        ([_ref("primaryEncryptionKey", "a")], {("a", "a"): " " + HEX_A}, "primary", "in hex"),
        ([_ref("secondaryEncryptionKey", "b")], {("b", "b"): HEX_B}, "secondary", "needs primary"),
        (
            [_ref("primaryEncryptionKey", "s", "one"), _ref("secondaryEncryptionKey", "s", "two")],
            {("s", "one"): HEX_A, ("s", "two"): HEX_B},
            "secondary",
            "same secret",
        ),
    ],
    ids=["not-hex", "wrong-size", "blank", "secondary-alone", "one-secret"],
)
def test_unusable_keys_are_refused_when_resolved(
    items: list[dict[str, Any]], secrets: dict[tuple[str, str], str], field: str, fragment: str
) -> None:
    values = {SecretKeyRef(name, key): value for (name, key), value in secrets.items()}
    with pytest.raises(ComponentError) as raised:  # at parse time when the names tell already
        resolve(parse_component(_component(*items)), values)
    assert raised.value.field == f"spec.metadata.{field}EncryptionKey"
    assert fragment in str(raised.value)
    for value in values.values():
        assert value.strip() not in str(raised.value)


def test_resolving_keeps_each_keys_secret_name_and_the_wiring_carries_it() -> None:
    spec = parse_component(
        _component(_ref("primaryEncryptionKey", "new", "k"), _ref("secondaryEncryptionKey", "old"))
    )
    resolved = resolve(spec, {SecretKeyRef("new", "k"): HEX_B, SecretKeyRef("old", "old"): HEX_A})
    assert resolved.key_names == {"primaryEncryptionKey": "new", "secondaryEncryptionKey": "old"}
    keys = resolved.encryption()
    assert keys == EncryptionSettings(
        EncryptionKey("new", bytes.fromhex(HEX_B)), EncryptionKey("old", bytes.fromhex(HEX_A))
    )
    assert HEX_A not in repr(keys)
    decoded = wiring.decode(wiring.encode_bytes(wiring.with_components("ns", [resolved])))
    assert decoded.components[0].encryption() == keys


def test_a_wiring_without_encryption_is_unchanged_and_a_corrupt_key_name_is_refused() -> None:
    plain = resolve(parse_component(_component()), {})
    assert b"keyNames" not in wiring.encode_bytes(wiring.with_components("ns", [plain]))
    document = json.loads(wiring.encode_bytes(wiring.with_components("ns", [plain])))
    document["components"][0]["keyNames"] = {"primaryEncryptionKey": 7}
    with pytest.raises(ComponentError, match="keyNames"):
        wiring.decode(json.dumps(document).encode())


def test_a_wiring_file_whose_key_has_no_secret_name_fails_that_component(tmp_path: Path) -> None:
    plain = resolve(parse_component(_component()), {})
    document = json.loads(wiring.encode_bytes(wiring.with_components("ns", [plain])))
    document["components"][0]["metadata"]["primaryEncryptionKey"] = HEX_A
    path = tmp_path / "components.json"
    path.write_bytes(json.dumps(document).encode())
    loaded = load_wiring_file(path)
    assert loaded.components == ()
    assert loaded.failed[0].error.field == "spec.metadata.primaryEncryptionKey"


@pytest.mark.parametrize("via", ["local.file", "secrets-file"])
def test_a_components_folder_resolves_keys_with_their_secret_names(
    tmp_path: Path, via: str
) -> None:
    items = [_ref("primaryEncryptionKey", "key-b"), _ref("secondaryEncryptionKey", "key-a")]
    documents: list[dict[str, Any]] = [_component(*items, secret_store=via == "local.file")]
    secrets_path = tmp_path / "secrets.json"
    secrets_file: Path | None = None
    if via == "local.file":
        secrets_path.write_text(json.dumps({"key-a": HEX_A, "key-b": HEX_B}))
        documents.append(
            {
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Component",
                "metadata": {"name": "localsecrets"},
                "spec": {
                    "type": "secretstores.local.file",
                    "version": "v1",
                    "metadata": [{"name": "secretsFile", "value": str(secrets_path)}],
                },
            }
        )
    else:
        secrets_path.write_text(json.dumps({"key-a": {"key-a": HEX_A}, "key-b": {"key-b": HEX_B}}))
        secrets_file = secrets_path
    folder = tmp_path / "resources"
    folder.mkdir()
    (folder / "c.yaml").write_text(yaml.safe_dump_all(documents))
    loaded = load_folder(folder, secrets_file=secrets_file)
    assert loaded.failed == ()
    assert loaded.components[0].encryption() == EncryptionSettings(KEY_B, KEY_A)


# --- the store wrapper -------------------------------------------------------------------------


async def test_the_wrapper_stores_ciphertext_and_leaves_etags_and_ttls_alone() -> None:
    inner = await MemoryStore.open({})
    store = EncryptedStore(inner, EncryptionSettings(KEY_B, KEY_A))
    try:
        assert store.features == inner.features
        await store.set(SetOp("app||k", b'{"a":1}', ttl=60))
        raw = await inner.get("app||k")
        assert raw is not None
        assert raw.value.endswith(b"||key-b")
        assert b'"a"' not in raw.value
        item = await store.get("app||k")
        assert item is not None
        assert item.value == b'{"a":1}'
        assert (item.etag, item.expire_at) == (raw.etag, raw.expire_at)
        assert item.expire_at is not None

        # Conditional writes are judged on the backend's ETag, unchanged.
        await store.set(SetOp("app||k", b"2", etag=item.etag))
        # Old-key values (the secondary's) read; transactions and bulk saves encrypt.
        await inner.set(SetOp("app||old", seal(b"old", KEY_A)))
        await store.transact([SetOp("app||t", b"t"), DeleteOp("app||k")])
        assert await store.set_many([SetOp("app||m", b"m")]) == [None]
        got = await store.bulk_get(["app||old", "app||t", "app||m", "app||k"])
        assert [i.value if i else None for i in got] == [b"old", b"t", b"m", None]
        for key in ("app||t", "app||m"):
            raw_item = await inner.get(key)
            assert raw_item is not None
            assert raw_item.value.endswith(b"||key-b")

        await inner.set(SetOp("app||plain", b'"not encrypted"'))
        with pytest.raises(DecryptionError, match="app\\|\\|plain"):
            await store.get("app||plain")
        with pytest.raises(EncryptedQueryError, match="primaryEncryptionKey"):
            await store.query(parse_query({"filter": {}}), key_prefix="app||")
    finally:
        await store.close()
