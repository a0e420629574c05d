"""
The operator end to end, part 1: the CRD, and what the API server refuses by itself.

The first part: its fixtures (`conftest.py`) start the operator the later parts share.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
)
from tests.e2e.test_operator_e2e.helpers import (
    EXAMPLES,
    SCHEMA,
    SHOP,
    component_manifest,
    entry,
    kubectl_apply,
    orders_manifest,
)
from tests.support.redis_server import RedisProcess

pytestmark = pytest.mark.e2e


def test_crd_installs_and_its_examples_apply_with_defaults(
    cluster: LocalCluster, crd: dict[str, Any]
) -> None:
    """The CRD from crds/ is Established with short name ssc; every example passes the schema."""
    assert crd["spec"]["names"]["shortNames"] == ["ssc"]
    assert crd["spec"]["scope"] == "Namespaced"
    resources = cluster.kubectl("api-resources", "--api-group=statecar.io").stdout
    assert "ssc" in resources, resources
    assert "StateStoreComponent" in resources, resources
    components = {}
    for example in sorted(EXAMPLES.glob("*.yaml")):
        dry = cluster.kubectl(
            "apply", "--dry-run=server", "-n", SCHEMA, "-o", "json", "-f", str(example)
        )
        stored = json.loads(dry.stdout)
        if stored["kind"] == "StateStoreComponent":
            components[stored["metadata"]["name"]] = stored["spec"]
    assert set(components) == {"orders", "catalog", "scratch", "sessions"}
    # Defaults are filled in by the API server (not by the operator), with Dapr's values.
    sessions = components["sessions"]
    assert sessions["version"] == "v1"
    assert sessions["consistency"] == "eventual"
    assert sessions["keyPrefix"] == "appid"
    assert components["catalog"]["concurrency"] == "last-write"
    assert components["orders"]["enforce"] is False


INVALID_COMPONENTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "value-and-secretKeyRef": (
        {
            "type": "state.redis",
            "metadata": [
                {"name": "redisHost", "value": "r:6379", "secretKeyRef": {"name": "s", "key": "k"}}
            ],
        },
        [
            "spec.metadata[0]",
            "spec.metadata[name=redisHost]",
            "exactly one of value and secretKeyRef",
        ],
    ),
    "unknown-type": (
        {"type": "state.mongodb"},
        ["spec.type", 'Unsupported value: "state.mongodb"', "state.redis"],
    ),
    "bad-concurrency": (
        {"type": "state.in-memory", "concurrency": "sometimes"},
        ["spec.concurrency", 'Unsupported value: "sometimes"', "first-write"],
    ),
    "redis-without-host": (
        {"type": "state.redis", "metadata": [entry("redisPassword", "x")]},
        ["spec.metadata", "state.redis needs a redisHost entry"],
    ),
    "separator-in-key-prefix": (
        {"type": "state.in-memory", "keyPrefix": "a||b"},
        ["spec.keyPrefix", "must not contain '||'"],
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_COMPONENTS))
def test_api_server_rejects_invalid_components_naming_the_field(
    cluster: LocalCluster, api: Api, crd: dict[str, Any], case: str
) -> None:
    """Schema + CEL: `kubectl apply` fails with the API server's message naming the field."""
    spec, fragments = INVALID_COMPONENTS[case]
    result = kubectl_apply(cluster, component_manifest(case, SCHEMA, spec))
    assert result.returncode != 0, f"{case} was accepted:\n{result.stdout}"
    assert f'The StateStoreComponent "{case}" is invalid' in result.stderr, result.stderr
    assert "admission webhook" not in result.stderr, "the schema, not a webhook, must refuse it"
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in: {result.stderr}"
    assert api.component(SCHEMA, case) is None


def test_validating_webhook_rejects_what_the_schema_cannot(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """Unknown settings of a backend and impossible scopes are refused by the operator's webhook,
    on create and on update (the stored component stays as it was)."""
    typo = orders_manifest(redis.address)
    typo["metadata"]["name"] = "typo"
    typo["spec"]["metadata"].append(entry("redisHots", "x"))
    result = kubectl_apply(cluster, typo)
    assert result.returncode != 0
    assert (
        'admission webhook "validate.statestorecomponents.statecar.io" denied the request'
        in result.stderr
    ), result.stderr
    assert "spec.metadata[2].name: 'redisHots' is not a setting of state.redis" in result.stderr
    assert api.component(SHOP, "typo") is None

    scoped = component_manifest(
        "scoped", SHOP, {"type": "state.in-memory", "scopes": ["checkout", "not an app id!"]}
    )
    result = kubectl_apply(cluster, scoped)
    assert result.returncode != 0
    assert "spec.scopes[1]: 'not an app id!' can never be an app id" in result.stderr, result.stderr
    assert api.component(SHOP, "scoped") is None

    edited = orders_manifest(redis.address)
    edited["spec"]["metadata"].append(entry("poolsize", "10"))  # the setting is poolSize
    result = kubectl_apply(cluster, edited)
    assert result.returncode != 0
    assert "'poolsize' is not a setting of state.redis" in result.stderr, result.stderr
    now = api.component(SHOP, "orders")
    assert now is not None
    assert now["metadata"]["generation"] == orders["metadata"]["generation"]
    assert now["spec"] == orders["spec"]
