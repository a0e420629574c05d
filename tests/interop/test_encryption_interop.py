"""
Dapr's automatic state encryption, statecar and daprd v1.18.1 on the same data (issue 10.4, and
issue 14's "encryption with a local-file secret store").

Both sidecars get the same component documents: a `secretstores.local.file` secret store and a
state store whose `primaryEncryptionKey` (and, rotating, `secondaryEncryptionKey`) is a
secretKeyRef into it. statecar runs as `statecar sidecar --components-path` and as
`statecar daprd` with daprd's own command line. Each side reads the other's ciphertext; the
stored bytes have daprd's format (`base64(nonce+ciphertext+tag)||<secret name>`).

Where daprd's own API changes the plaintext before encrypting it, the tests assert what daprd
does and that statecar reads the result identically (docs/state-api.md, "Encrypted stores"):
daprd's HTTP save and both its transactions encrypt Go's `%v` formatting of the decoded value
(`{"a":1}` becomes `map[a:1]`, `"hello"` becomes `hello`, gRPC transaction bytes become
`[104 105]`); statecar encrypts the bytes it would otherwise store, so daprd reads statecar's
values byte for byte.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from tests.interop.conftest import (
    KEYS,
    STATECAR_DAPRD,
    STATECAR_SIDECAR,
    Backend,
    Encryption,
    Interop,
    Pair,
    StatecarLauncher,
    stored,
)

from statecar_contract.settings import EncryptionKey, EncryptionSettings
from statecar_sidecar._protos.dapr.proto.runtime.v1 import state_pb2
from statecar_sidecar.stores.encryption import NONCE_BYTES, open_value, seal

ODD_JSON = b'{"z": 1, "price": 1.10, "html": "<&>", "a": [true, null]}'
BINARY = b'\x00\xff{"price": 1.10}\n\x80'
KEY_A = Encryption("key-a")
VECTORS = Path(__file__).parents[1] / "unit" / "fixtures" / "daprd_encryption_vectors.json"


def _format(raw: bytes | None, secret: str) -> bytes:
    """Check daprd's stored format and return the sealed bytes (nonce + ciphertext + tag)."""
    assert raw is not None
    match = re.fullmatch(rb"([A-Za-z0-9+/]+=*)\|\|" + re.escape(secret.encode()), raw)
    assert match, f"not daprd's encrypted format tagged {secret!r}: {raw!r}"
    return base64.b64decode(match.group(1), validate=True)


def _settings(primary: str, secondary: str | None = None) -> EncryptionSettings:
    def key(name: str) -> EncryptionKey:
        return EncryptionKey(name, bytes.fromhex(KEYS[name]))

    return EncryptionSettings(key(primary), key(secondary) if secondary else None)


@pytest.fixture(params=[STATECAR_SIDECAR, STATECAR_DAPRD])
def launcher(request: pytest.FixtureRequest) -> StatecarLauncher:
    launched: StatecarLauncher = request.param
    return launched


@pytest.fixture
def pair(interop: Interop) -> Iterator[Pair]:
    with interop.start(KEY_A) as started:
        yield started


def test_each_sidecar_reads_the_others_ciphertext(
    interop: Interop, backend: Backend, launcher: StatecarLauncher, key: Callable[[str], str]
) -> None:
    with interop.start(KEY_A, statecar=launcher) as pair:
        # statecar writes JSON over HTTP: stored encrypted, daprd reads the bytes as sent.
        pair.statecar.save_raw(
            b'[{"key":"' + key("s-json").encode() + b'","value":' + ODD_JSON + b"}]"
        )
        sealed = _format(backend.raw_value(stored(key("s-json"))), "key-a")
        assert len(sealed) == NONCE_BYTES + len(ODD_JSON) + 16
        assert pair.daprd.get(key("s-json")).data == ODD_JSON
        assert pair.daprd.grpc_get(key("s-json")).data == ODD_JSON
        assert pair.statecar.get(key("s-json")).data == ODD_JSON

        # Non-JSON bytes over gRPC, both ways.
        pair.statecar.grpc_save(key("s-bin"), BINARY)
        _format(backend.raw_value(stored(key("s-bin"))), "key-a")
        assert pair.daprd.grpc_get(key("s-bin")).data == BINARY
        pair.daprd.grpc_save(key("d-bin"), BINARY)
        _format(backend.raw_value(stored(key("d-bin"))), "key-a")
        assert pair.statecar.grpc_get(key("d-bin")).data == BINARY
        assert pair.statecar.get(key("d-bin")).data == BINARY

        # ETags are the backend's, untouched by encryption: the same on both sides.
        for k in (key("s-json"), key("s-bin"), key("d-bin")):
            assert pair.statecar.get(k).etag == pair.daprd.get(k).etag is not None


def test_daprds_http_api_encrypts_gos_formatting_and_statecar_reads_it_the_same(
    pair: Pair, backend: Backend, key: Callable[[str], str]
) -> None:
    # dapr/dapr pkg/api/http/http.go onPostState: fmt.Appendf(nil, "%v", value) before
    # encrypting, so a JSON object/string is stored as Go prints it, not as JSON.
    pair.daprd.save(
        [
            {"key": key("object"), "value": {"a": 1, "b": "x"}},
            {"key": key("string"), "value": "hello"},
            {"key": key("number"), "value": 42},
        ]
    )
    expected = {key("object"): b"map[a:1 b:x]", key("string"): b"hello", key("number"): b"42"}
    for k, value in expected.items():
        assert pair.daprd.get(k).data == value
        assert pair.statecar.get(k) == pair.daprd.get(k)
        assert pair.statecar.grpc_get(k).data == value
    # pkg/api/grpc/grpc.go ExecuteStateTransaction: the same `%v`, of the request's bytes.
    pair.daprd.grpc_upsert_transaction({key("tx-bytes"): b"hi"})
    assert pair.daprd.grpc_get(key("tx-bytes")).data == b"[104 105]"
    assert pair.statecar.grpc_get(key("tx-bytes")).data == b"[104 105]"
    # statecar's transactions encrypt the bytes themselves: daprd reads them unchanged.
    pair.statecar.grpc_upsert_transaction({key("s-tx-bytes"): b"hi"})
    assert pair.daprd.grpc_get(key("s-tx-bytes")).data == b"hi"
    reply = pair.statecar.transaction(
        [{"operation": "upsert", "request": {"key": key("s-tx-json"), "value": {"a": 1}}}]
    )
    assert reply.status_code == 204, reply.text
    _format(backend.raw_value(stored(key("s-tx-json"))), "key-a")
    assert pair.daprd.get(key("s-tx-json")).data == b'{"a":1}'


def test_bulk_reads_decrypt_the_others_writes(pair: Pair, key: Callable[[str], str]) -> None:
    theirs = {key(f"d-{i}"): b"\x00daprd %d" % i for i in range(3)}
    for k, value in theirs.items():
        pair.daprd.grpc_save(k, value)
    ours = [key(f"s-{i}") for i in range(3)]
    pair.statecar.save([{"key": k, "value": {"i": i}} for i, k in enumerate(ours)])
    assert {k: v for k, (v, _) in pair.statecar.grpc_bulk(list(theirs)).items()} == theirs
    assert pair.daprd.grpc_bulk(ours) == pair.statecar.grpc_bulk(ours)
    assert [i["data"] for i in pair.daprd.bulk(ours)] == [{"i": i} for i in range(3)]
    assert pair.daprd.bulk(ours) == pair.statecar.bulk(ours)


def test_etags_and_ttls_work_across_sidecars_on_encrypted_values(
    pair: Pair, backend: Backend, key: Callable[[str], str]
) -> None:
    k = key("guarded")
    pair.daprd.grpc_save(k, b"v1", metadata={"ttlInSeconds": "100"})
    first = pair.statecar.get(k)
    assert first.data == b"v1"
    assert first.ttl_expire_time is not None
    theirs = pair.daprd.get(k).ttl_expire_time
    assert theirs == (first.ttl_expire_time if backend.daprd_reports_ttl else None)
    pair.statecar.save([{"key": k, "value": "v2", "etag": first.etag}])
    second = pair.daprd.get(k)
    assert second.data == b'"v2"'
    assert second.etag != first.etag
    stale = pair.daprd.save_raw(json.dumps([{"key": k, "value": 3, "etag": first.etag}]).encode())
    assert stale.status_code == 409, stale.text
    assert second.etag is not None
    pair.daprd.grpc_save(k, b"v3", etag=second.etag)
    assert pair.statecar.get(k).data == b"v3"


def test_key_rotation_reads_either_key_and_writes_with_the_primary(
    interop: Interop, backend: Backend, launcher: StatecarLauncher, key: Callable[[str], str]
) -> None:
    with interop.start(KEY_A, statecar=launcher) as pair:
        pair.daprd.grpc_save(key("old-daprd"), BINARY)
        pair.statecar.grpc_save(key("old-statecar"), ODD_JSON)
    _format(backend.raw_value(stored(key("old-daprd"))), "key-a")

    with interop.start(Encryption("key-b", "key-a"), statecar=launcher) as pair:
        # Values tagged with the secondary key's secret still read, on both sides.
        assert pair.statecar.grpc_get(key("old-daprd")).data == BINARY
        assert pair.daprd.grpc_get(key("old-statecar")).data == ODD_JSON
        # New writes use the primary, and the other side reads them.
        pair.statecar.grpc_save(key("new-statecar"), BINARY)
        _format(backend.raw_value(stored(key("new-statecar"))), "key-b")
        assert pair.daprd.grpc_get(key("new-statecar")).data == BINARY
        pair.daprd.grpc_save(key("new-daprd"), ODD_JSON)
        _format(backend.raw_value(stored(key("new-daprd"))), "key-b")
        assert pair.statecar.grpc_get(key("new-daprd")).data == ODD_JSON
        # Re-saving an old value through statecar re-encrypts it with the primary.
        pair.statecar.grpc_save(key("old-daprd"), BINARY)
        _format(backend.raw_value(stored(key("old-daprd"))), "key-b")

    with interop.start(Encryption("key-b"), statecar=launcher) as pair:
        # Once the old key is gone, statecar says which key a value needs.
        reply = pair.statecar.http.get(f"/v1.0/state/statestore/{key('old-statecar')}")
        assert reply.status_code == 500
        assert reply.json()["errorCode"] == "ERR_STATE_GET"
        assert "'key-a'" in reply.json()["message"]
        assert "secondaryEncryptionKey" in reply.json()["message"]
        assert pair.statecar.grpc_get(key("new-daprd")).data == ODD_JSON
        # daprd has no key of that name and decrypts with none (pkg/encryption/state.go
        # TryDecryptValue): the handler panics and the connection closes without an answer.
        with pytest.raises(httpx.RemoteProtocolError):
            pair.daprd.http.get(f"/v1.0/state/statestore/{key('old-statecar')}")


def test_a_query_on_an_encrypted_store_is_refused_naming_the_setting(
    pair: Pair, backend: Backend
) -> None:
    query = {"filter": {"EQ": {"a": 1}}}
    ours = pair.statecar.query(query)
    assert ours.status_code == 400, ours.text
    assert ours.json()["errorCode"] == "ERR_STATE_QUERY"
    assert "cannot query encrypted store" in ours.json()["message"]
    assert "primaryEncryptionKey" in ours.json()["message"]
    # daprd refuses it too, as a 500: with the same code and reason where its store can query
    # at all; else (PostgreSQL v2, SQLite) first because it cannot (state_query.go checks
    # `state.Querier` before encryption).
    if backend.daprd_queries:
        code, reason = "ERR_STATE_QUERY", "cannot query encrypted store"
    else:
        code, reason = "ERR_STATE_STORE_NOT_SUPPORTED", "does not support querying"
    theirs = pair.daprd.query(query)
    assert theirs.status_code == 500, theirs.text
    assert theirs.json()["errorCode"] == code
    assert reason in theirs.json()["message"]
    # Over gRPC both answer INTERNAL, statecar's message naming the setting too.
    request = state_pb2.QueryStateRequest(store_name="statestore", query=json.dumps(query))
    for side, expected in ((pair.statecar, "cannot query encrypted store"), (pair.daprd, reason)):
        with pytest.raises(grpc.RpcError) as raised:
            side.stub.QueryStateAlpha1(request)
        assert isinstance(raised.value, grpc.Call)
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert expected in (raised.value.details() or "")


def test_daprds_ciphertexts_open_and_reseal_byte_for_byte(
    interop: Interop, backend: Backend, key: Callable[[str], str]
) -> None:
    """The format, from daprd itself: what it stored opens with statecar's `open_value`, and
    `seal` with the same nonce gives the same bytes. With STATECAR_CAPTURE_VECTORS=1 the values
    are written to tests/unit/fixtures/daprd_encryption_vectors.json for the unit tier."""
    plaintexts = [b"", b"hi", BINARY, ODD_JSON, bytes(range(256)) * 4]
    vectors: list[dict[str, str]] = []
    for secret in ("key-b", "key-c"):  # AES-256 and AES-128
        with interop.start(Encryption(secret)) as pair:
            for index, plaintext in enumerate(plaintexts):
                k = key(f"vector-{secret}-{index}")
                pair.daprd.grpc_save(k, plaintext)
                raw = backend.raw_value(stored(k))
                assert raw is not None
                sealed = _format(raw, secret)
                primary = _settings(secret).primary
                assert seal(plaintext, primary, nonce=sealed[:NONCE_BYTES]) == raw
                assert open_value(raw, _settings(secret)) == plaintext
                vectors.append(
                    {
                        "keyName": secret,
                        "keyHex": KEYS[secret],
                        "plaintextBase64": base64.b64encode(plaintext).decode(),
                        "stored": raw.decode(),
                    }
                )
    if os.environ.get("STATECAR_CAPTURE_VECTORS") == "1":
        VECTORS.write_text(json.dumps({"daprd": "v1.18.1", "vectors": vectors}, indent=2) + "\n")
