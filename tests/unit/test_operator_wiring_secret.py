"""The wiring Secret the operator renders (pure)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from statecar_contract.components import ResolvedComponent
from statecar_contract.wiring import WIRING_FILE, app_secret_name, decode, encode_bytes
from statecar_operator.reconciliation import wiring_secret
from statecar_operator.reconciliation.wiring_secret import ComponentOwner

ORDERS = ResolvedComponent(
    name="orders",
    type="state.redis",
    metadata={"redisHost": "redis:6379", "redisPassword": "s3cret"},
    concurrency="first-write",
    scopes=("checkout",),
)
SESSIONS = ResolvedComponent(name="sessions", type="state.in-memory")


def secret(components: list[ResolvedComponent], salt: str = "salt") -> dict[str, Any]:
    return wiring_secret.build_wiring_secret(
        namespace="shop",
        components=components,
        owners=[ComponentOwner("sessions", "uid-2"), ComponentOwner("orders", "uid-1")],
        salt=salt,
    )


def test_the_wiring_secret_holds_the_contract_format() -> None:
    body = secret([SESSIONS, ORDERS])
    assert body["metadata"]["name"] == "statecar-wiring"
    assert body["metadata"]["namespace"] == "shop"
    assert body["type"] == "statecar.io/wiring"
    assert body["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "statecar"
    wiring = decode(base64.b64decode(body["data"][WIRING_FILE]))
    assert wiring.namespace == "shop"
    assert [c.name for c in wiring.components] == ["orders", "sessions"]
    assert wiring.components[0].metadata["redisPassword"] == "s3cret"


def test_every_component_owns_the_secret_so_garbage_collection_removes_it_last() -> None:
    owners = secret([ORDERS])["metadata"]["ownerReferences"]
    assert [(o["name"], o["uid"], o["kind"]) for o in owners] == [
        ("orders", "uid-1", "StateStoreComponent"),
        ("sessions", "uid-2", "StateStoreComponent"),
    ]
    assert all(o["apiVersion"] == "statecar.io/v1alpha1" for o in owners)


def test_the_config_hash_is_keyed_stable_and_moves_with_content() -> None:
    one = wiring_secret.hash_of(secret([ORDERS, SESSIONS]))
    assert one == wiring_secret.hash_of(secret([SESSIONS, ORDERS]))  # order does not matter
    assert one != wiring_secret.hash_of(secret([ORDERS, SESSIONS], salt="other"))
    rotated = ResolvedComponent(
        **{**ORDERS.__dict__, "metadata": {**ORDERS.metadata, "redisPassword": "new"}}
    )
    assert one != wiring_secret.hash_of(secret([rotated, SESSIONS]))
    assert one is not None
    assert len(one) == 16
    # The hash on pods is not the plain hash of the wiring (which would let pod readers test
    # password guesses offline).
    wiring = wiring_secret.build_wiring("shop", [ORDERS, SESSIONS])
    assert one != hashlib.sha256(encode_bytes(wiring)).hexdigest()[:16]


def test_the_salt_is_kept_on_the_secret() -> None:
    body = secret([ORDERS], salt="abc")
    assert wiring_secret.salt_of(body) == "abc"
    assert wiring_secret.salt_of(None) is None
    assert wiring_secret.hash_of(None) is None


def test_differs_and_merge_keep_what_others_added() -> None:
    existing = secret([ORDERS])
    existing["metadata"]["resourceVersion"] = "42"
    existing["metadata"]["uid"] = "u"
    existing["metadata"]["labels"]["team"] = "platform"
    existing["metadata"]["annotations"]["note"] = "hello"
    assert not wiring_secret.secret_differs(existing, secret([ORDERS]))
    desired = secret([ORDERS, SESSIONS])
    assert wiring_secret.secret_differs(existing, desired)
    merged = wiring_secret.merge_for_update(existing, desired)
    assert merged["metadata"]["resourceVersion"] == "42"
    assert merged["metadata"]["labels"]["team"] == "platform"
    assert merged["metadata"]["annotations"]["note"] == "hello"
    assert merged["data"] == desired["data"]


def test_an_owner_change_alone_is_a_difference() -> None:
    existing = secret([ORDERS])
    desired = wiring_secret.build_wiring_secret(
        namespace="shop",
        components=[ORDERS],
        owners=[ComponentOwner("orders", "uid-9")],
        salt="salt",
    )
    assert wiring_secret.secret_differs(existing, desired)


def test_managed_detection() -> None:
    assert wiring_secret.is_managed(secret([ORDERS]))
    assert not wiring_secret.is_managed({"metadata": {"name": "statecar-wiring"}})


# --- which components go to which Secret (issue 11.1) -------------------------------------------


def live(
    name: str, scopes: tuple[str, ...] | None, *, resolved: bool = True
) -> wiring_secret.LiveComponent:
    component = ResolvedComponent(name=name, type="state.in-memory", scopes=scopes or ())
    return wiring_secret.LiveComponent(
        ComponentOwner(name, f"uid-{name}"), scopes, component if resolved else None
    )


def test_unscoped_components_are_shared_and_scoped_ones_go_to_their_apps_only() -> None:
    plans = wiring_secret.plan_secrets(
        [
            live("sessions", ()),
            live("orders", ("checkout", "cart")),
            live("ledger", ("billing",)),
        ]
    )
    by_name = {n: [c.name for c in p.components] for n, p in plans.items()}
    assert by_name == {
        "statecar-wiring": ["sessions"],
        app_secret_name("billing"): ["ledger"],
        app_secret_name("cart"): ["orders"],
        app_secret_name("checkout"): ["orders"],
    }
    assert plans[app_secret_name("cart")].app_id == "cart"
    assert plans["statecar-wiring"].app_id is None
    # Owners: the shared Secret every component (GC once all are gone); an app's, its scopers.
    assert [o.name for o in plans["statecar-wiring"].owners] == ["sessions", "orders", "ledger"]
    assert [o.name for o in plans[app_secret_name("billing")].owners] == ["ledger"]
    assert wiring_secret.secrets_of(plans, "orders") == sorted(
        [app_secret_name("cart"), app_secret_name("checkout")]
    )


def test_an_unresolved_or_invalid_component_is_in_no_content_but_keeps_its_app_secret() -> None:
    plans = wiring_secret.plan_secrets(
        [live("orders", ("checkout",), resolved=False), live("broken", None, resolved=False)]
    )
    assert set(plans) == {"statecar-wiring", app_secret_name("checkout")}
    assert all(p.components == () for p in plans.values())
    assert [o.name for o in plans["statecar-wiring"].owners] == ["orders", "broken"]
    assert wiring_secret.plan_secrets([]) == {}


def test_app_secret_names_are_valid_distinct_and_stable() -> None:
    import re

    ids = ["checkout", "Checkout", "check_out", "check.out", "a" * 253, "x-" * 50 + "y"]
    names = [app_secret_name(i) for i in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert len(name) <= 253
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), name
        assert name.startswith("statecar-wiring-")
    assert app_secret_name("checkout") == app_secret_name("checkout")


def test_a_per_app_secret_names_its_app_and_the_pod_hash_combines_both() -> None:
    body = wiring_secret.build_wiring_secret(
        namespace="shop",
        components=[ORDERS],
        owners=[ComponentOwner("orders", "uid-1")],
        salt="s",
        name=app_secret_name("checkout"),
        app_id="checkout",
    )
    assert body["metadata"]["name"] == app_secret_name("checkout")
    assert body["metadata"]["annotations"]["statecar.io/app-id"] == "checkout"
    assert wiring_secret.pod_config_hash(None, None) is None
    both = wiring_secret.pod_config_hash("a", "b")
    assert both not in (None, wiring_secret.pod_config_hash("a", None))
    assert both != wiring_secret.pod_config_hash("a", "c")
