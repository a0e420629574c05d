"""
The shared contract: component documents (ours and Dapr's) parse to what the operator and the
sidecar expect, errors name the field and the fix, and the wiring format is a round trip.
"""

from __future__ import annotations

import pytest

from statecar_contract import wiring
from statecar_contract.components import (
    ComponentError,
    ResolvedComponent,
    SecretKeyRef,
    parse_component,
    resolve,
)


def component(**spec: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "state.redis",
        "metadata": [{"name": "redisHost", "value": "r:6379"}],
    }
    base.update(spec)
    return {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": "orders"},
        "spec": base,
    }


def test_defaults_are_daprs() -> None:
    spec = parse_component(component())
    assert (spec.concurrency, spec.consistency, spec.key_prefix, spec.enforce) == (
        "last-write",
        "eventual",
        "appid",
        False,
    )


def test_policy_fields_parse() -> None:
    spec = parse_component(
        component(
            concurrency="first-write",
            consistency="strong",
            enforce=True,
            keyPrefix="MyPrefix",
            scopes=["a"],
        )
    )
    assert (spec.concurrency, spec.consistency, spec.enforce, spec.key_prefix, spec.scopes) == (
        "first-write",
        "strong",
        True,
        "myprefix",
        ("a",),
    )
    assert spec.in_scope("a")
    assert not spec.in_scope("b")


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ({"type": "state.mongodb"}, "spec.type", "state.in-memory"),
        ({"concurrency": "first"}, "spec.concurrency", "first-write, last-write"),
        ({"metadata": [{"name": "redishost", "value": "x"}]}, "spec.metadata[0].name", "known: "),
        ({"metadata": []}, "spec.metadata", "needs redisHost"),
        (
            {
                "metadata": [
                    {"name": "redisHost", "value": "x", "secretKeyRef": {"name": "s", "key": "k"}}
                ]
            },
            "spec.metadata[0]",
            "exactly one",
        ),
        (
            {"metadata": [{"name": "redisHost"}]},
            "spec.metadata[0]",
            "needs a value or a secretKeyRef",
        ),
        ({"keyPrefix": "a||b"}, "spec.keyPrefix", "must not contain '||'"),
    ],
)
def test_errors_name_the_field_and_the_fix(
    spec: dict[str, object], field: str, fragment: str
) -> None:
    with pytest.raises(ComponentError) as raised:
        parse_component(component(**spec), source="orders.yaml")
    assert raised.value.field == field
    assert fragment in str(raised.value)
    assert str(raised.value).startswith("orders.yaml: ")


def test_dapr_component_files_carry_over() -> None:
    document = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {
            "type": "state.redis",
            "version": "v1",
            "metadata": [
                {"name": "redisHost", "value": "localhost:6379"},
                {"name": "redisPassword", "value": ""},
                {"name": "actorStateStore", "value": "true"},
                {"name": "keyPrefix", "value": "name"},
            ],
        },
        "scopes": ["checkout"],
    }
    spec = parse_component(document)
    assert spec.key_prefix == "name"
    assert spec.scopes == ("checkout",)
    assert [m.name for m in spec.metadata] == ["redisHost", "redisPassword"]


def test_resolve_needs_every_secret() -> None:
    spec = parse_component(
        component(
            metadata=[
                {"name": "redisHost", "value": "r:6379"},
                {
                    "name": "redisPassword",
                    "secretKeyRef": {"name": "redis-auth", "key": "password"},
                },
            ]
        )
    )
    ref = SecretKeyRef("redis-auth", "password")
    assert resolve(spec, {ref: "pw"}).metadata == {"redisHost": "r:6379", "redisPassword": "pw"}
    with pytest.raises(ComponentError, match="secret 'redis-auth' has no key 'password'"):
        resolve(spec, {})


def test_wiring_round_trips_and_its_encoding_is_canonical() -> None:
    components = (
        ResolvedComponent(
            "b",
            "state.redis",
            metadata={"redisHost": "r", "redisPassword": "p"},
            concurrency="first-write",
            scopes=("x",),
        ),
        ResolvedComponent("a", "state.in-memory", enforce=True, key_prefix="none"),
    )
    document = wiring.with_components("shop", components)
    data = wiring.encode(document)
    decoded = wiring.decode(data[wiring.WIRING_FILE])
    assert decoded == document
    reordered = wiring.with_components("shop", tuple(reversed(components)))
    assert wiring.encode_bytes(reordered) == wiring.encode_bytes(document)
    changed = wiring.with_components("shop", (components[0],))
    assert wiring.encode_bytes(changed) != wiring.encode_bytes(document)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b'{"formatVersion": 99}', "different releases"),
        (b'{"formatVersion": 1, "namespace": "x", "components": [{"name": 1}]}', "name"),
    ],
)
def test_a_corrupt_wiring_file_is_a_clear_error(data: bytes, fragment: str) -> None:
    with pytest.raises(ComponentError, match=fragment):
        wiring.decode(data)


def test_merging_wiring_files_prefers_the_scoped_copy_and_refuses_mixed_namespaces() -> None:
    from statecar_contract.components import ComponentError, ResolvedComponent

    shared = wiring.with_components(
        "shop", [ResolvedComponent("a", "state.in-memory"), ResolvedComponent("b", "state.redis")]
    )
    scoped = wiring.with_components(
        "shop", [ResolvedComponent("b", "state.redis", scopes=("web",))]
    )
    for order in ((shared, scoped), (scoped, shared)):
        merged = wiring.merge(order)
        assert [(c.name, c.scopes) for c in merged.components] == [("a", ()), ("b", ("web",))]
        assert merged.namespace == "shop"
    with pytest.raises(ComponentError, match="different namespaces"):
        wiring.merge([shared, wiring.with_components("other", [])])
