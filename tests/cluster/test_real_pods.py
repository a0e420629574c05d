"""The chart and the sidecar with real containers: helm, the kubelet, containerd, runc.

The tests run in file order and build on each other (one cluster per session): install, inject,
break things, upgrade to two replicas, uninstall.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.cluster.support import REPO, TIMINGS, Cluster

NS = "statecar-system"
APP_NS = "shop"
TOKEN = "s3cr3t-token"
ARBITRARY_UID = 1000770000


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {last!r}")


def get(c: Cluster, *args: str) -> Any:
    return json.loads(c.kubectl("get", *args, "-o", "json"))


def http(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions") or []
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conds)


def host_pid(c: Cluster, container_id: str) -> int:
    cid = container_id.split("://", 1)[1]
    for line in c.rc.ctr("tasks", "ls").splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] == cid:
            return int(parts[1])
    raise AssertionError(f"no task {cid}")


def proc_ids(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])
    gid = int(next(x for x in status.splitlines() if x.startswith("Gid:")).split()[1])
    return uid, gid


def values(c: Cluster, **extra: Any) -> list[str]:
    repo, tag = c.image.rsplit(":", 1)
    args = [
        "--set",
        f"image.repository={repo}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "image.pullPolicy=Never",
        # No kube-proxy here: in-cluster clients use the API server's real address.
        "--set",
        "operator.extraEnv[0].name=KUBERNETES_SERVICE_HOST",
        "--set",
        f"operator.extraEnv[0].value={c.rc.API_HOST}",
        "--set",
        "operator.extraEnv[1].name=KUBERNETES_SERVICE_PORT",
        "--set-string",
        f"operator.extraEnv[1].value={c.rc.API_PORT}",
    ]
    for key, value in extra.items():
        args += ["--set", f"{key}={value}"]
    return args


def operator_pods(c: Cluster) -> list[dict[str, Any]]:
    return [
        p
        for p in get(c, "pods", "-n", NS)["items"]
        if p["metadata"].get("deletionTimestamp") is None
    ]


def app_pod(c: Cluster) -> dict[str, Any]:
    pods = [
        p
        for p in get(c, "pods", "-n", APP_NS, "-l", "app=orders")["items"]
        if p["metadata"].get("deletionTimestamp") is None
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    pod: dict[str, Any] = pods[0]
    return pod


# --- 1. helm install ---------------------------------------------------------------------------


def test_helm_install_operator_ready_and_cabundle_patched(cluster: Cluster) -> None:
    started = time.monotonic()
    cluster.helm(
        "install",
        "statecar",
        str(REPO / "charts" / "statecar"),
        "-n",
        NS,
        "--create-namespace",
        *values(cluster),
        "--wait",
        "--timeout",
        "120s",
    )
    pods = wait_for("operator Ready", lambda: [p for p in operator_pods(cluster) if ready(p)], 120)
    TIMINGS["helm install -> operator Ready"] = time.monotonic() - started
    pod = pods[0]
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0, "the operator must not crash-loop (kopf identity)"
    # Non-root and read-only, as the kernel sees the process.
    spec = pod["spec"]["containers"][0]
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    uid, _ = proc_ids(host_pid(cluster, status["containerID"]))
    assert uid == 65532
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):

        def patched(kind: str = kind) -> bool:
            items = get(cluster, kind, "-l", "app.kubernetes.io/instance=statecar")["items"]
            return bool(items) and all(
                w["clientConfig"].get("caBundle") for i in items for w in i["webhooks"]
            )

        wait_for(f"{kind} caBundle", patched, 60)


# --- 2. an injected app through localhost:3500 --------------------------------------------------


def test_injected_app_saves_reads_etags_and_transactions(cluster: Cluster) -> None:
    c = cluster
    c.kubectl("create", "namespace", APP_NS)
    c.kubectl(
        "-n",
        APP_NS,
        "create",
        "configmap",
        "app",
        f"--from-file=app.py={REPO / 'tests' / 'cluster' / 'app.py'}",
    )
    c.kubectl(
        "-n",
        APP_NS,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "redis", "labels": {"app": "redis"}},
                "spec": {
                    "containers": [
                        {
                            "name": "redis",
                            "image": c.redis_image,
                            "imagePullPolicy": "Never",
                            "args": [
                                "--bind",
                                "0.0.0.0",
                                "--protected-mode",
                                "no",
                                "--save",
                                "",
                                "--appendonly",
                                "no",
                            ],
                        }
                    ]
                },
            }
        ),
    )
    redis = wait_for(
        "redis Ready",
        lambda: (lambda p: p if ready(p) else None)(get(c, "pod", "redis", "-n", APP_NS)),
        60,
    )
    redis_ip = redis["status"]["podIP"]
    c.kubectl(
        "-n",
        APP_NS,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "statecar.io/v1alpha1",
                        "kind": "StateStoreComponent",
                        "metadata": {"name": "statestore"},
                        "spec": {
                            "type": "state.redis",
                            "version": "v1",
                            "metadata": [{"name": "redisHost", "value": f"{redis_ip}:6379"}],
                        },
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "api-token"},
                        "stringData": {"token": TOKEN},
                    },
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": "orders"},
                        "spec": {
                            "replicas": 1,
                            "selector": {"matchLabels": {"app": "orders"}},
                            "template": {
                                "metadata": {
                                    "labels": {"app": "orders"},
                                    "annotations": {
                                        "statecar.io/enabled": "true",
                                        "statecar.io/app-id": "orders",
                                        "statecar.io/api-token-secret": "api-token",
                                    },
                                },
                                "spec": {
                                    "containers": [
                                        {
                                            "name": "app",
                                            "image": c.image,
                                            "imagePullPolicy": "Never",
                                            "command": ["python", "/app/app.py"],
                                            "env": [{"name": "LOOP_STORE", "value": "statestore"}],
                                            "volumeMounts": [
                                                {
                                                    "name": "app",
                                                    "mountPath": "/app",
                                                    "readOnly": True,
                                                }
                                            ],
                                            "securityContext": {
                                                "runAsNonRoot": True,
                                                "runAsUser": 12345,
                                                "readOnlyRootFilesystem": True,
                                                "allowPrivilegeEscalation": False,
                                            },
                                        }
                                    ],
                                    "volumes": [{"name": "app", "configMap": {"name": "app"}}],
                                },
                            },
                        },
                    },
                ],
            }
        ),
    )
    started = time.monotonic()
    pod = wait_for("orders Ready", lambda: (lambda p: p if ready(p) else None)(app_pod(c)), 120)
    TIMINGS["annotated Deployment -> pod Ready (2/2)"] = time.monotonic() - started
    init = pod["spec"]["initContainers"]
    assert init[0]["name"] == "statecar", init
    assert init[0]["restartPolicy"] == "Always", init
    assert init[0]["startupProbe"], "the app waits for the sidecar's startup probe"
    # Native sidecar: it started (and passed its startup probe) before the app started.
    side = pod["status"]["initContainerStatuses"][0]
    app = pod["status"]["containerStatuses"][0]
    assert side["started"], side
    assert side["ready"], side
    assert side["state"]["running"]["startedAt"] <= app["state"]["running"]["startedAt"]
    # Non-root, read-only root filesystem, as the kernel sees the sidecar process.
    assert init[0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert proc_ids(host_pid(c, side["containerID"]))[0] == 65532
    # The same image runs the app under an arbitrary uid (no passwd entry either).
    assert proc_ids(host_pid(c, app["containerID"]))[0] == 12345
    ip = pod["status"]["podIP"]
    result = http(f"http://{ip}:8000/run?store=statestore")
    assert (result["save"], result["get"], result["value"]) == (204, 200, {"n": 1}), result
    assert result["etag"], result
    assert (result["save_match"], result["save_stale"]) == (204, 409), result
    assert (result["tx"], json.loads(result["after_tx_a"])) == (204, "A"), result
    assert result["after_tx_deleted"] == 204, result
    # The API token from the Secret is enforced.
    assert http(f"http://{ip}:8000/noauth")["status"] == 401
    stats = http(f"http://{ip}:8000/stats")
    assert stats["ok"] > 0, stats
    assert stats["failed"] == 0, stats


# --- 3. a component edit reaches running pods (Secret-volume refresh), SQLite in the pod --------


def test_component_edit_reaches_the_running_pod_without_failed_requests(cluster: Cluster) -> None:
    c = cluster
    ip = app_pod(c)["status"]["podIP"]
    before = http(f"http://{ip}:8000/stats")
    started = time.monotonic()
    c.kubectl(
        "-n",
        APP_NS,
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "statecar.io/v1alpha1",
                "kind": "StateStoreComponent",
                "metadata": {"name": "local"},
                "spec": {
                    "type": "state.sqlite",
                    "version": "v1",
                    "metadata": [
                        {"name": "connectionString", "value": "/var/lib/statecar/local.db"}
                    ],
                },
            }
        ),
    )

    def reached() -> bool:
        body = http(f"http://{ip}:8000/metadata")["body"]
        return "local" in [x["name"] for x in body["components"]]

    wait_for("the new component in the sidecar's /v1.0/metadata", reached, 180, every=0.25)
    TIMINGS["component edit -> running sidecar (Secret-volume refresh)"] = (
        time.monotonic() - started
    )
    after = http(f"http://{ip}:8000/stats")
    assert after["failed"] == before["failed"], after
    assert after["ok"] > before["ok"]
    result = http(f"http://{ip}:8000/run?store=local")
    assert (result["save"], result["get"], result["save_stale"]) == (204, 200, 409), result
    assert result["tx"] == 204, result


def test_editing_a_live_component_swaps_the_store_without_failed_requests(
    cluster: Cluster,
) -> None:
    # The component the app's background loop is using: the sidecar rebuilds its Redis client
    # (make-before-break) when the refreshed wiring file arrives; not one request may fail.
    # The edit keeps the keyspace (a timeout, not `keyPrefix`): a loop's save just before the
    # swap and its GET just after would otherwise look for the key under the other name.
    c = cluster
    ip = app_pod(c)["status"]["podIP"]

    def reloads() -> float:
        """The sidecar's `statecar_component_reloads_total`: component sets applied."""
        with urllib.request.urlopen(f"http://{ip}:9090/metrics", timeout=10) as answer:
            lines = answer.read().decode().splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("statecar_component_reloads_total")
        )

    applied = reloads()
    before = http(f"http://{ip}:8000/stats")
    started = time.monotonic()
    redis_ip = get(c, "pod", "redis", "-n", APP_NS)["status"]["podIP"]
    metadata = [
        {"name": "redisHost", "value": f"{redis_ip}:6379"},
        {"name": "readTimeout", "value": "4s"},
    ]
    c.kubectl(
        "-n",
        APP_NS,
        "patch",
        "ssc",
        "statestore",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"metadata": metadata}}),
    )
    wait_for("the sidecar applying the edited component", lambda: reloads() > applied, 180)
    TIMINGS["component edit (readTimeout) -> running sidecar swapped store"] = (
        time.monotonic() - started
    )
    time.sleep(1)
    after = http(f"http://{ip}:8000/stats")
    assert after["failed"] == before["failed"], after
    assert after["ok"] > before["ok"], after


# --- 4. readiness follows the backend -----------------------------------------------------------


def test_readiness_follows_the_backend_going_away_and_back(cluster: Cluster) -> None:
    c = cluster
    redis = get(c, "pod", "redis", "-n", APP_NS)
    pid = host_pid(c, redis["status"]["containerStatuses"][0]["containerID"])
    os.kill(pid, signal.SIGSTOP)  # Redis stops answering; its address stays
    try:
        started = time.monotonic()
        wait_for("app pod NotReady", lambda: not ready(app_pod(c)), 90)
        TIMINGS["backend gone -> pod NotReady"] = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    started = time.monotonic()
    wait_for("app pod Ready again", lambda: ready(app_pod(c)), 90)
    TIMINGS["backend back -> pod Ready"] = time.monotonic() - started
    ip = app_pod(c)["status"]["podIP"]
    assert http(f"http://{ip}:8000/run?store=statestore")["get"] == 200


# --- 5. kill the sidecar: the kubelet restarts it ------------------------------------------------


def test_killed_sidecar_is_restarted_and_the_app_recovers(cluster: Cluster) -> None:
    c = cluster
    pod = app_pod(c)
    side = pod["status"]["initContainerStatuses"][0]
    restarts = side["restartCount"]
    os.kill(host_pid(c, side["containerID"]), signal.SIGKILL)
    started = time.monotonic()

    def restarted() -> bool:
        s = app_pod(c)["status"]["initContainerStatuses"][0]
        return bool(s["restartCount"] > restarts and s.get("ready"))

    wait_for("sidecar restarted and ready", restarted, 120)
    ip = pod["status"]["podIP"]
    wait_for(
        "app requests succeed",
        lambda: http(f"http://{ip}:8000/run?store=statestore")["get"] == 200,
        60,
    )
    TIMINGS["sidecar SIGKILL -> restarted, app recovered"] = time.monotonic() - started
    assert app_pod(c)["status"]["containerStatuses"][0]["restartCount"] == 0


# --- 6. helm upgrade to two replicas; delete the leader while pods are created --------------------


def test_two_replicas_leader_deleted_while_pods_are_created(cluster: Cluster) -> None:
    c = cluster
    started = time.monotonic()
    c.helm(
        "upgrade",
        "statecar",
        str(REPO / "charts" / "statecar"),
        "-n",
        NS,
        *values(
            c,
            replicaCount=2,
            # OpenShift-style: an arbitrary uid with no passwd entry, group 0.
            **{"podSecurityContext.runAsUser": ARBITRARY_UID, "podSecurityContext.runAsGroup": 0},
        ),
        "--wait",
        "--timeout",
        "180s",
    )
    wait_for(
        "two operator replicas Ready",
        lambda: len([p for p in operator_pods(c) if ready(p)]) == 2,
        180,
    )
    TIMINGS["helm upgrade replicaCount=2 -> both Ready"] = time.monotonic() - started
    for pod in operator_pods(c):
        status = pod["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0, status
        assert proc_ids(host_pid(c, status["containerID"])) == (ARBITRARY_UID, 0)
    leader = wait_for(
        "a Lease holder",
        lambda: get(c, "lease", "statecar-operator", "-n", NS)["spec"].get("holderIdentity"),
        60,
    )
    created: list[str] = []
    refused: list[str] = []

    def create_pods() -> None:
        for i in range(12):
            name = f"burst-{i}"
            manifest = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "annotations": {"statecar.io/enabled": "true", "statecar.io/app-id": "burst"},
                },
                "spec": {
                    "containers": [
                        {"name": "app", "image": c.rc.PAUSE_IMAGE, "imagePullPolicy": "Never"}
                    ]
                },
            }
            try:
                c.kubectl("-n", APP_NS, "create", "-f", "-", input=json.dumps(manifest))
                created.append(name)
            except RuntimeError as exc:
                refused.append(f"{name}: {exc}")
            time.sleep(0.5)

    worker = threading.Thread(target=create_pods)
    worker.start()
    time.sleep(1.5)
    c.kubectl("-n", NS, "delete", "pod", leader, "--wait=false")
    worker.join()
    for name in created:
        pod = get(c, "pod", name, "-n", APP_NS)
        names = [x["name"] for x in pod["spec"].get("initContainers") or []]
        assert "statecar" in names, f"{name} was admitted without its sidecar"
    for reason in refused:
        # failurePolicy Fail: a refusal must say why (the webhook could not be reached).
        assert "statecar" in reason or "webhook" in reason, reason
    assert created, refused
    TIMINGS[f"burst during leader deletion: {len(created)} injected, {len(refused)} refused"] = 0.0
    new_leader = wait_for(
        "a new Lease holder",
        lambda: (lambda h: h if h and h != leader else None)(
            get(c, "lease", "statecar-operator", "-n", NS)["spec"].get("holderIdentity")
        ),
        60,
    )
    assert new_leader != leader
    for name in created:
        c.kubectl("-n", APP_NS, "delete", "pod", name, "--wait=false")


# --- 7. helm uninstall leaves nothing that blocks pods --------------------------------------------


def test_uninstall_leaves_nothing_blocking_pod_creation(cluster: Cluster) -> None:
    c = cluster
    c.helm("uninstall", "statecar", "-n", NS, "--wait", "--timeout", "120s")
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        items = [
            i["metadata"]["name"]
            for i in get(c, kind)["items"]
            if "statecar" in i["metadata"]["name"]
        ]
        assert not items, items
    c.kubectl("create", "namespace", "after")
    c.kubectl(
        "-n",
        "after",
        "run",
        "plain",
        f"--image={c.rc.PAUSE_IMAGE}",
        "--image-pull-policy=Never",
        "--annotations=statecar.io/enabled=true",
    )
    pod = wait_for(
        "a pod after uninstall Running",
        lambda: (lambda p: p if ready(p) else None)(get(c, "pod", "plain", "-n", "after")),
        60,
    )
    assert not pod["spec"].get("initContainers")


if __name__ == "__main__":
    pytest.main([__file__])
