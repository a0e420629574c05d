"""The webhook configurations the operator prints and the chart renders (pure)."""

from __future__ import annotations

import base64

import pytest

from statecar_operator.manifests import webhooks


def test_webhook_configurations_by_url() -> None:
    mutating, validating = webhooks.build_webhook_configurations(
        ca_bundle=b"CA", url="https://127.0.0.1:9443", excluded_namespaces=["kube-system", "ops"]
    )
    hook = mutating["webhooks"][0]
    assert hook["clientConfig"] == {
        "url": "https://127.0.0.1:9443/inject-pods",
        "caBundle": base64.b64encode(b"CA").decode(),
    }
    assert hook["rules"][0]["operations"] == ["CREATE"]
    assert hook["rules"][0]["resources"] == ["pods"]
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["failurePolicy"] == "Fail"
    assert "statecar.io/" in hook["matchConditions"][0]["expression"]
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", "ops"]
    vhook = validating["webhooks"][0]
    assert vhook["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-statestorecomponents"
    assert vhook["rules"][0]["resources"] == ["statestorecomponents"]


def test_webhook_configurations_by_service() -> None:
    mutating, _ = webhooks.build_webhook_configurations(
        ca_bundle=b"CA", service_name="statecar-webhook", service_namespace="statecar-system"
    )
    assert mutating["webhooks"][0]["clientConfig"]["service"] == {
        "name": "statecar-webhook",
        "namespace": "statecar-system",
        "port": 443,
        "path": "/inject-pods",
    }


def test_webhook_configurations_need_exactly_one_target() -> None:
    with pytest.raises(ValueError, match="either url or service_name"):
        webhooks.build_webhook_configurations(ca_bundle=b"CA")


def test_restricted_to_namespaces_both_webhooks_see_only_those() -> None:
    mutating, validating = webhooks.build_webhook_configurations(
        ca_bundle=b"ca", url="https://127.0.0.1:9443", namespaces=["shop", "cart"]
    )
    only = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["cart", "shop"]}
    assert only in mutating["webhooks"][0]["namespaceSelector"]["matchExpressions"]
    assert validating["webhooks"][0]["namespaceSelector"] == {"matchExpressions": [only]}
    mutating, validating = webhooks.build_webhook_configurations(ca_bundle=b"ca", url="https://x:1")
    assert "namespaceSelector" not in validating["webhooks"][0]
