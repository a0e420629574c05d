"""
Issue 14's fuzz proof: keys, values and component names, over HTTP and gRPC, against `statecar
daprd` started with `dapr run`'s exact argv (tests/support/dapr_run.py).

The resources folder is written once per module with component names drawn from a seeded
generator (`STATECAR_FUZZ_SEED`, printed on failure): any legal Dapr component name (a DNS
subdomain, the names Kubernetes allows a components.dapr.io resource, up to 253 characters),
names YAML would read as something else (`123`, `true`, `no`, `1e3`), written in every style YAML
allows (plain, single- and double-quoted with `\\x`/`\\u`/`\\U` escapes and escaped line breaks,
literal and folded blocks, flow mappings, quoted and explicit keys, `!!str` tags). Hypothesis then
draws keys, values and names for each property:

1. any JSON text saved over HTTP comes back byte for byte over HTTP and over gRPC;
2. any bytes saved over gRPC come back byte for byte over gRPC and over HTTP (raw, not JSON);
3. a key with `||` (daprd's only illegal key: dapr pkg/components/state/state_config.go
   `checkKeyIllegal`) is refused on both transports with daprd's error: HTTP 400
   `ERR_MALFORMED_REQUEST` + ErrorInfo `DAPR_STATE_ILLEGAL_KEY`, gRPC INVALID_ARGUMENT with the
   same ErrorInfo (pkg/api/errors/state.go `InvalidKeyName`); so are the keys statecar refuses
   on every backend where daprd leaves it to the store (NUL, over 2048 bytes), with the same
   400 / INVALID_ARGUMENT;
4. a store name that is not served (any text) is HTTP 400 `ERR_STATE_STORE_NOT_FOUND` / gRPC
   INVALID_ARGUMENT with ErrorInfo `DAPR_STATE_NOT_FOUND`;

never a 5xx or gRPC INTERNAL/UNKNOWN, and the sidecar answers /v1.0/healthz afterwards.
Example counts are bounded (`STATECAR_FUZZ_EXAMPLES`, default 40 a property) to stay < 60 s.
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
import yaml
from google.rpc import error_details_pb2, status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The key and JSON-text generators the conformance tier's properties use (one definition).
from tests.conformance.test_properties import JSON_TEXTS, KEYS, url_key
from tests.support import processes
from tests.support.dapr_run import Daprd, dapr_home, dapr_run_argv, free_ports

from statecar_sidecar._protos.dapr.proto.common.v1 import common_pb2
from statecar_sidecar._protos.dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2

SEED = int(os.environ.get("STATECAR_FUZZ_SEED", "20261206"))
FUZZ = settings(
    max_examples=int(os.environ.get("STATECAR_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- component names -----------------------------------------------------------------------------

#: Names YAML 1.1 (PyYAML) or 1.2 would read as a number, boolean or null unless quoted.
TRICKY = ["123", "0", "1e3", "0x10", "0o7", "1.5", "true", "no", "on", "off", "null", "y", "n"]
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _label(rng: random.Random, length: int) -> str:
    if length == 1:
        return rng.choice(_ALNUM)
    middle = "".join(rng.choice(_ALNUM + "-") for _ in range(length - 2))
    return rng.choice(_ALNUM) + middle + rng.choice(_ALNUM)


def legal_name(rng: random.Random) -> str:
    """A DNS subdomain: dot-separated labels of [a-z0-9-], alphanumeric at both ends."""
    shape = rng.random()
    if shape < 0.15:
        return rng.choice(TRICKY)
    if shape < 0.25:  # as long as allowed
        return ".".join(_label(rng, n) for n in (63, 63, 63, 61))
    labels = [_label(rng, rng.choice([1, 2, 5, 12, 30, 63])) for _ in range(rng.randint(1, 4))]
    return ".".join(labels)[:253].rstrip(".-")


def _escaped(name: str, rng: random.Random) -> str:
    out = []
    for char in name:
        roll = rng.random()
        if roll < 0.15:
            out.append(f"\\x{ord(char):02x}")
        elif roll < 0.25:
            out.append(f"\\u{ord(char):04X}")
        elif roll < 0.3:
            out.append(f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return "".join(out)


def _name_yaml(name: str, rng: random.Random) -> str:
    """`metadata` holding `name`, written in one of the ways YAML allows."""
    half = len(name) // 2
    styles = [
        f"metadata:\n  name: {name}\n",
        f"metadata:\n  name: {name}   # a comment\n",
        f"metadata:\n  name: '{name}'\n",
        f'metadata:\n  name: "{_escaped(name, rng)}"\n',
        # An escaped line break joins the two halves with nothing between them.
        f'metadata:\n  name: "{name[:half]}\\\n    {name[half:]}"\n',
        f"metadata:\n  name: |-\n    {name}\n",
        f"metadata:\n  name: >-\n    {name}\n",
        f"metadata: {{name: '{name}', labels: {{a: b}}}}\n",
        f'metadata: {{"name": "{name}"}}\n',
        f"metadata:\n  'name': !!str {name}\n",
        f"metadata:\n  ? name\n  : '{name}'\n",
    ]
    for text in rng.sample(styles, len(styles)):
        # Plain styles only where YAML reads the name as that string (`no` is a boolean).
        if yaml.safe_load(text)["metadata"]["name"] == name:
            return text
    raise AssertionError(f"no YAML style kept {name!r}")  # the quoted ones always do


def component_documents(rng: random.Random, count: int) -> tuple[list[str], str]:
    names: list[str] = []
    while len(names) < count:
        name = legal_name(rng)
        if name and name not in names:
            names.append(name)
    documents = [
        "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
        + _name_yaml(name, rng)
        + "spec:\n  type: state.in-memory\n  version: v1\n"
        for name in names
    ]
    return names, "---\n".join(documents)


# -- the running sidecar -------------------------------------------------------------------------


@dataclass
class Dropin:
    url: str
    names: list[str]
    stub: dapr_pb2_grpc.DaprStub
    http: httpx.Client
    daprd: Daprd

    def assert_healthy(self) -> None:
        assert self.daprd.process.poll() is None, self.daprd.log
        assert self.http.get("/v1.0/healthz").status_code == 204


@pytest.fixture(scope="module")
def dropin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dropin]:
    home = dapr_home(tmp_path_factory.mktemp("fuzz"))
    resources = home / "components"
    resources.mkdir()
    names, text = component_documents(random.Random(SEED), 40)
    (resources / "fuzzed.yaml").write_text(text, encoding="utf-8")
    ports = free_ports()
    daprd = Daprd(home, dapr_run_argv(home, resources, "fuzz", ports))
    url = f"http://127.0.0.1:{ports['http']}"
    try:
        daprd.wait_ready(url, timeout=60)
        listed = {c["name"] for c in httpx.get(f"{url}/v1.0/metadata").json()["components"]}
        assert listed == set(names), f"seed {SEED}: {sorted(set(names) ^ listed)}"
        with (
            grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel,
            httpx.Client(base_url=url, timeout=10) as http,
        ):
            yield Dropin(url, names, dapr_pb2_grpc.DaprStub(channel), http, daprd)
    finally:
        assert processes.stop(daprd.process, sig=signal.SIGINT) == 0, daprd.log


@pytest.fixture(autouse=True)
def healthy_after(dropin: Dropin) -> Iterator[None]:
    """Whatever a property sent, the sidecar still runs and is ready afterwards."""
    yield
    dropin.assert_healthy()


def _grpc_details(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """(code, ErrorInfo reason) of a failed call."""
    reason = ""
    for metadatum in error.trailing_metadata() or ():
        if metadatum.key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(metadatum.value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason = info.reason
    return error.code(), reason


def _reason(body: dict[str, object]) -> str:
    details = body.get("details")
    assert isinstance(details, list), body
    return next(
        str(d["reason"])
        for d in details
        if d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo"
    )


def _json_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


#: Any key daprd and statecar both take over gRPC: any Unicode text without `||`, and without NUL
#: (statecar refuses it on every backend, PostgreSQL cannot store it: docs/state-api.md, "Keys").
GRPC_KEYS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=24
).filter(lambda key: "||" not in key)
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
#: daprd's illegal key: any text around the separator.
SEPARATOR_KEYS = st.builds(lambda a, b: f"{a}||{b}", _TEXT, _TEXT)
#: Keys statecar refuses where daprd leaves it to the store (docs/state-api.md, "Keys every
#: backend can store"): NUL anywhere, over 2048 bytes of UTF-8. Still a 400, never a 500.
STATECAR_REFUSED_KEYS = st.one_of(
    st.builds(lambda a, b: f"{a}\x00{b}", _TEXT, _TEXT).filter(lambda key: "||" not in key),
    st.builds(lambda a, n: a * n, st.sampled_from(["k", "é", "😀", "%/"]), st.just(2049)),
)


# -- 1 and 2: values round-trip, on both transports ----------------------------------------------


@FUZZ
@given(data=st.data(), key=KEYS, value=JSON_TEXTS)
def test_any_json_saved_over_http_reads_back_byte_exact_on_both_transports(
    dropin: Dropin, data: st.DataObject, key: str, value: str
) -> None:
    store = data.draw(st.sampled_from(dropin.names), label="store")
    body = f'[{{"key": {_json_key(key)}, "value": {value}}}]'.encode()
    saved = dropin.http.post(
        f"/v1.0/state/{store}", content=body, headers={"content-type": "application/json"}
    )
    assert saved.status_code == 204, saved.text
    got = dropin.http.get(f"/v1.0/state/{store}/{url_key(key)}")
    assert (got.status_code, got.content) == (200, value.encode())
    answer = dropin.stub.GetState(state_pb2.GetStateRequest(store_name=store, key=key))
    assert answer.data == value.encode()
    assert dropin.http.delete(f"/v1.0/state/{store}/{url_key(key)}").status_code == 204


@FUZZ
@given(data=st.data(), key=GRPC_KEYS, value=st.binary(min_size=1, max_size=2048))
def test_any_bytes_saved_over_grpc_read_back_byte_exact_on_both_transports(
    dropin: Dropin, data: st.DataObject, key: str, value: bytes
) -> None:
    store = data.draw(st.sampled_from(dropin.names), label="store")
    dropin.stub.SaveState(
        state_pb2.SaveStateRequest(
            store_name=store, states=[common_pb2.StateItem(key=key, value=value)]
        )
    )
    answer = dropin.stub.GetState(state_pb2.GetStateRequest(store_name=store, key=key))
    assert answer.data == value
    got = dropin.http.get(f"/v1.0/state/{store}/{url_key(key)}")
    assert (got.status_code, got.content) == (200, value)
    dropin.stub.DeleteState(state_pb2.DeleteStateRequest(store_name=store, key=key))
    assert dropin.http.get(f"/v1.0/state/{store}/{url_key(key)}").status_code == 204


# -- 3 and 4: what daprd refuses, it refuses the same way -----------------------------------------


@FUZZ
@given(data=st.data(), key=st.one_of(SEPARATOR_KEYS, STATECAR_REFUSED_KEYS))
def test_an_illegal_key_gets_daprds_error_on_both_transports(
    dropin: Dropin, data: st.DataObject, key: str
) -> None:
    store = data.draw(st.sampled_from(dropin.names), label="store")
    # daprd's ErrorInfo for its own rule; statecar's extra refusals are the same 400 / status.
    reason = "DAPR_STATE_ILLEGAL_KEY" if "||" in key else None
    answers = [
        dropin.http.get(f"/v1.0/state/{store}/{url_key(key)}"),
        dropin.http.delete(f"/v1.0/state/{store}/{url_key(key)}"),
        dropin.http.post(f"/v1.0/state/{store}", json=[{"key": key, "value": 1}]),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["errorCode"] == "ERR_MALFORMED_REQUEST"
        if reason is not None:
            assert _reason(body) == reason
    calls: list[Callable[[], object]] = [
        lambda: dropin.stub.GetState(state_pb2.GetStateRequest(store_name=store, key=key)),
        lambda: dropin.stub.SaveState(
            state_pb2.SaveStateRequest(
                store_name=store, states=[common_pb2.StateItem(key=key, value=b"1")]
            )
        ),
        lambda: dropin.stub.DeleteState(state_pb2.DeleteStateRequest(store_name=store, key=key)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        code, got_reason = _grpc_details(refused.value)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        if reason is not None:
            assert got_reason == reason


@FUZZ
@given(store=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40), key=KEYS)
def test_a_store_name_that_is_not_served_gets_daprds_not_found_on_both_transports(
    dropin: Dropin, store: str, key: str
) -> None:
    if store in dropin.names:
        return
    answers = [
        dropin.http.get(f"/v1.0/state/{url_key(store)}/{url_key(key)}"),
        dropin.http.post(f"/v1.0/state/{url_key(store)}", json=[{"key": key, "value": 1}]),
    ]
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as refused:
        dropin.stub.GetState(state_pb2.GetStateRequest(store_name=store, key=key))
    assert _grpc_details(refused.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "DAPR_STATE_NOT_FOUND",
    )


def test_nothing_the_fuzzing_sent_raised_inside_the_sidecar(dropin: Dropin) -> None:
    assert "Traceback" not in dropin.daprd.log
