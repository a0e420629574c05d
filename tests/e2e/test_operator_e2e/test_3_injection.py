"""
The operator end to end, part 3: the API server calls the injector over TLS.

Runs after parts 1-2 on the fixtures they share (`conftest.py`).
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    OperatorProcess,
    env_of,
    names,
    run_statecar,
    subset_mismatches,
)
from tests.e2e.test_operator_e2e.helpers import (
    EMPTY,
    SHOP,
    WIRING,
    WIRING_FILE,
    WIRING_MOUNT,
    kubectl_apply,
    orders_manifest,
    pod_manifest,
    wait_event,
)
from tests.support.redis_server import RedisProcess

from statecar_contract.wiring import app_secret_name
from statecar_operator.reconciliation.wiring_secret import pod_config_hash

pytestmark = pytest.mark.e2e


def test_annotated_pod_is_stored_with_the_native_sidecar(
    api: Api, checkout_pod: dict[str, Any], orders: dict[str, Any]
) -> None:
    """The sidecar is FIRST in initContainers with restartPolicy Always, a startupProbe on its
    health port, its env and the read-only wiring volume; the app gets the port env; the pod is
    stamped with what was injected and the wiring's config hash."""
    spec = checkout_pod["spec"]
    assert names(spec["initContainers"]) == ["statecar", "migrate"]
    sidecar = spec["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["statecar", "sidecar"]
    env = env_of(sidecar)
    assert env["STATECAR_APP_ID"] == "checkout"
    assert env["STATECAR_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    assert env["STATECAR_WIRING_FILE"] == WIRING_MOUNT  # the folder: shared.json + app.json
    assert env["STATECAR_HTTP_PORT"] == "3500"
    assert env["STATECAR_GRPC_PORT"] == "50001"
    metrics_port = int(env["STATECAR_METRICS_PORT"])
    startup = sidecar["startupProbe"]["httpGet"]
    assert (startup["path"], startup["port"]) == ("/v1.0/healthz", metrics_port)
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["resources"]["limits"]["cpu"] == "500m"  # statecar.io/sidecar-cpu-limit: 0.5
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts[WIRING_MOUNT]["name"] == "statecar-wiring"
    assert mounts[WIRING_MOUNT]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    sources = volumes["statecar-wiring"]["projected"]["sources"]
    assert [(s["secret"]["name"], s["secret"]["items"]) for s in sources] == [
        (WIRING, [{"key": WIRING_FILE, "path": "shared.json"}]),
        (app_secret_name("checkout"), [{"key": WIRING_FILE, "path": "app.json"}]),
    ]
    # The sidecar never holds the app's ServiceAccount token (it never calls the API).
    token_mount = mounts["/var/run/secrets/kubernetes.io/serviceaccount"]
    assert not token_mount["name"].startswith("kube-api-access")

    for container in [spec["initContainers"][1], *spec["containers"]]:
        app_env = env_of(container)
        assert app_env["DAPR_HTTP_PORT"] == "3500", container["name"]
        assert app_env["STATECAR_HTTP_PORT"] == "3500", container["name"]
        assert app_env["DAPR_GRPC_PORT"] == "50001", container["name"]  # where the SDKs dial
    assert env_of(spec["containers"][0])["GREETING"] == "hello"

    metadata = checkout_pod["metadata"]
    assert metadata["labels"]["statecar.io/injected"] == "true"
    stamp = json.loads(metadata["annotations"]["statecar.io/status"])
    assert stamp["appId"] == "checkout"
    assert stamp["image"] == sidecar["image"]
    # The hash of what this pod mounts: the shared Secret and its own app's, combined.
    shared, own = api.secret(SHOP, WIRING), api.secret(SHOP, app_secret_name("checkout"))
    assert shared is not None
    assert own is not None
    assert stamp["configHash"] == pod_config_hash(
        shared["metadata"]["annotations"]["statecar.io/config-hash"],
        own["metadata"]["annotations"]["statecar.io/config-hash"],
    )


def test_pods_that_do_not_ask_are_untouched(cluster: LocalCluster, api: Api, orders: Any) -> None:
    """No statecar annotation (or enabled: "false"): stored exactly as the API server alone
    would store it, with no warning."""
    for name, extra in (
        ("plain", {"example.com/team": "shop"}),
        ("opted-out", {"statecar.io/enabled": "false"}),
    ):
        manifest = pod_manifest(name, SHOP, extra, init_container=True)
        created = kubectl_apply(cluster, manifest)
        assert created.returncode == 0, created.stderr
        assert "Warning" not in created.stderr, created.stderr
        pod = api.pod(SHOP, name)
        assert pod is not None
        assert names(pod["spec"]["initContainers"]) == ["migrate"]
        assert not any(v["name"].startswith("statecar") for v in pod["spec"]["volumes"])
        assert "statecar.io/injected" not in (pod["metadata"].get("labels") or {})
        assert "statecar.io/status" not in pod["metadata"]["annotations"]
        for container in [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]:
            assert "DAPR_HTTP_PORT" not in env_of(container), name


def test_deployment_template_is_not_mutated_but_its_pods_would_be(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], redis: RedisProcess
) -> None:
    """The webhook only sees pods: a Deployment is stored as written. `statecar inject -f` shows
    what its pods get, and a pod created the way its ReplicaSet would create it gets exactly that
    (app id = the Deployment's name)."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": SHOP},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {
                    "labels": {"app": "web"},
                    "annotations": {"statecar.io/enabled": "true"},
                },
                "spec": {"containers": [{"name": "app", "image": "example.com/shop/web:1"}]},
            },
        },
    }
    cluster.apply(deployment)
    stored = api.get(f"/apis/apps/v1/namespaces/{SHOP}/deployments/web")
    assert stored is not None
    template = stored["spec"]["template"]
    assert "initContainers" not in template["spec"]
    assert "statecar.io/status" not in template["metadata"].get("annotations", {})

    offline = run_statecar(
        "inject",
        "-f",
        "-",
        input=yaml.safe_dump_all([orders_manifest(redis.address), deployment]),
    )
    documents = list(yaml.safe_load_all(offline))
    injected = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]
    would_get = injected["spec"]["initContainers"][0]
    assert would_get["name"] == "statecar"
    assert env_of(would_get)["STATECAR_APP_ID"] == "web"

    # What the ReplicaSet controller would create (there is none here): the template, with
    # the controller's owner reference, template hash label and a generated name.
    template_hash = "5d8f7c9b64"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"web-{template_hash}-",
            "namespace": SHOP,
            "labels": {**template["metadata"]["labels"], "pod-template-hash": template_hash},
            "annotations": dict(template["metadata"]["annotations"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": f"web-{template_hash}",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(template["spec"]),
    }
    created = json.loads(
        cluster.kubectl("create", "-o", "json", "-f", "-", input=yaml.safe_dump(pod)).stdout
    )
    got = created["spec"]["initContainers"][0]
    assert got["name"] == "statecar"
    problems = subset_mismatches(would_get, got)
    assert not problems, "the webhook and `statecar inject` disagree:\n" + "\n".join(problems)
    app_env = env_of(created["spec"]["containers"][0])
    assert app_env == env_of(injected["spec"]["containers"][0])


def _resubmission(stored: dict[str, Any], name: str) -> dict[str, Any]:
    """The stored pod as a new object (what the API server assigned is dropped)."""
    metadata = stored["metadata"]
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": copy.deepcopy(stored["spec"]),
    }


def test_second_admission_changes_nothing(
    cluster: LocalCluster,
    checkout_pod: dict[str, Any],
    operator: OperatorProcess,
    webhook_pki: tuple[Path, Path, Path],
) -> None:
    """The stored, injected pod admitted again (server-side dry run through the webhook) comes
    back identical, and the webhook itself answers that review with no patch at all."""
    again = _resubmission(checkout_pod, "checkout-again")
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=yaml.safe_dump(again)
    )
    assert "Warning" not in result.stderr, result.stderr
    readmitted = json.loads(result.stdout)
    assert readmitted["spec"] == checkout_pod["spec"]
    assert readmitted["metadata"]["labels"] == again["metadata"]["labels"]
    assert readmitted["metadata"]["annotations"] == again["metadata"]["annotations"]

    # The same review, straight to the webhook over TLS (verified with the caBundle's CA).
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": SHOP,
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": checkout_pod,
            "dryRun": True,
        },
    }
    answer = httpx.post(
        f"{operator.webhook_url}/inject-pods",
        json=review,
        verify=ssl.create_default_context(cafile=str(webhook_pki[0])),
        timeout=10,
        trust_env=False,
    ).json()["response"]
    assert answer["allowed"] is True
    assert "patch" not in answer, base64.b64decode(answer.get("patch", "")).decode()


def test_bad_annotation_is_rejected_with_its_message_and_an_event(
    cluster: LocalCluster, api: Api, orders: dict[str, Any], operator: OperatorProcess
) -> None:
    """Invalid statecar.io/* values refuse the pod, naming each annotation, and leave an Event."""
    manifest = pod_manifest(
        "bad-annotations",
        SHOP,
        {
            "statecar.io/enabled": "true",
            "statecar.io/app-id": "checkout",
            "statecar.io/http-port": "x",
            "statecar.io/log-level": "loud",
        },
    )
    result = kubectl_apply(cluster, manifest)
    assert result.returncode != 0
    assert 'admission webhook "inject.statecar.io" denied the request' in result.stderr
    assert "statecar cannot inject this pod" in result.stderr
    assert "statecar.io/http-port: 'x' is not a port number" in result.stderr, result.stderr
    assert "statecar.io/log-level" in result.stderr
    assert "loud" in result.stderr
    assert api.pod(SHOP, "bad-annotations") is None
    event = wait_event(api, SHOP, "bad-annotations", "InjectionRejected")
    assert event["type"] == "Warning"
    assert "statecar.io/http-port" in event["message"]
    # An expected refusal is an answer, logged at INFO; kopf alone would say ERROR.
    lines = [line for line in operator.log().splitlines() if "'x' is not a port number" in line]
    assert lines, operator.log_tail()
    assert all(" INFO " in line and "refused the request" in line for line in lines), lines


def test_pod_without_components_in_scope_is_injected_with_a_warning(
    cluster: LocalCluster, api: Api, orders: dict[str, Any]
) -> None:
    """A pod that asks for statecar before any component is in its scope (no component in the
    namespace, or none for its app id) gets its sidecar anyway, with an admission warning
    (kubectl prints it): the order things are applied in does not matter."""
    for namespace, name, app_id, says in (
        (EMPTY, "lonely", "lonely", f"no valid StateStoreComponent in namespace {EMPTY!r} yet"),
        (SHOP, "billing", "billing", "is in scope for app id 'billing' yet"),
    ):
        annotations = {"statecar.io/enabled": "true", "statecar.io/app-id": app_id}
        result = kubectl_apply(cluster, pod_manifest(name, namespace, annotations))
        assert result.returncode == 0, result.stderr
        assert "Warning:" in result.stderr, result.stderr
        assert says in result.stderr, result.stderr
        pod = api.pod(namespace, name)
        assert pod is not None
        assert [c["name"] for c in pod["spec"]["initContainers"]] == ["statecar"]
        wiring = next(v for v in pod["spec"]["volumes"] if v["name"] == "statecar-wiring")
        # The pod starts before the Secrets exist.
        assert all(s["secret"]["optional"] is True for s in wiring["projected"]["sources"])
