"""
The operator end to end, part 7: every replica admits, one reconciles, a follower takes over (runs last: kills the leader).

Runs after parts 1-6 on the fixtures they share (`conftest.py`).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.localcluster import LocalCluster
from tests.e2e.operator_fixtures import (
    Api,
    FailureContext,
    OperatorProcess,
    wait_for,
)
from tests.e2e.test_operator_e2e.helpers import (
    LEASE_DURATION,
    LIFECYCLE,
    OPERATOR_ENV,
    REACT,
    SHOP,
    SYSTEM,
    OperatorIdentity,
    component_manifest,
    pod_manifest,
    timing,
    wait_condition,
    wired,
)

pytestmark = pytest.mark.e2e


def _pod_review(pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "e2e"},
            "object": pod,
            "dryRun": True,
        },
    }


def test_second_replica_admits_and_takes_over_when_the_leader_dies(
    cluster: LocalCluster,
    api: Api,
    operator: OperatorProcess,
    operator_identity: OperatorIdentity,
    orders: dict[str, Any],
    webhook_pki: tuple[Path, Path, Path],
    diagnostics: FailureContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A second replica (same token, same Lease) serves admission while following and does no
    reconcile work; when the leader is SIGKILLed it takes the Lease within the lease duration and
    reconciles; on SIGTERM it exits 0 and hands the Lease back."""
    ca, cert, key = webhook_pki
    follower = OperatorProcess(
        kubeconfig=operator_identity.kubeconfig,
        namespace=SYSTEM,
        workdir=tmp_path_factory.mktemp("replica-log"),
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        identity="statecar-operator-e2e-1",
        extra_env=OPERATOR_ENV,
    )
    diagnostics.add("second replica log (tail)", follower.log_tail)
    follower.start()
    try:
        following = wait_for(
            "the second replica to be ready as a follower",
            follower.readyz,
            lambda body: body.get("ready") is True,
            timeout=60,
        )
        assert following["leader"] is False
        assert following["leaseHolder"] == operator.identity
        assert following["reconcilePasses"] == 0  # a follower writes nothing

        # Admission is served by every replica, from its own indexes.
        pod = pod_manifest(
            "via-follower", SHOP, {"statecar.io/enabled": "true", "statecar.io/app-id": "cart"}
        )
        answer = httpx.post(
            f"{follower.webhook_url}/inject-pods",
            json=_pod_review(pod),
            verify=ssl.create_default_context(cafile=str(ca)),
            timeout=10,
            trust_env=False,
        ).json()["response"]
        assert answer["allowed"] is True
        patch = json.loads(base64.b64decode(answer["patch"]))
        added = next(op for op in patch if op["path"] == "/spec/initContainers")
        assert added["value"][0]["name"] == "statecar"

        # The leader dies without handing over: the follower takes the Lease once it expires.
        operator.kill()
        started = time.monotonic()
        wait_for(
            "the second replica to hold the Lease",
            follower.readyz,
            lambda body: body.get("leader") is True,
            timeout=LEASE_DURATION + REACT,
        )
        timing("takeover after SIGKILL of the leader", time.monotonic() - started)
        cluster.apply(component_manifest("failover", LIFECYCLE, {"type": "state.in-memory"}))
        wait_condition(api, LIFECYCLE, "failover", "Ready", "True")
        assert "failover" in wired(api, LIFECYCLE)
        assert follower.readyz()["reconcilePasses"] > 0
    finally:
        stopping = time.monotonic()
        code = follower.stop()
        shutdown = time.monotonic() - stopping
        timing("shutdown of a replica on SIGTERM", shutdown)
        diagnostics.remove("second replica log (tail)")
    assert code == 0, f"the second replica exited with {code} on SIGTERM"
    # SIGTERM sets the stop flag kopf was given: no 5 s wait for our own tasks to hang up.
    assert shutdown < 3, f"shutdown took {shutdown:.1f}s"
    lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM}/leases/statecar-operator")
    assert lease is not None
    assert not lease["spec"].get("holderIdentity"), lease["spec"]  # handed back on the way out
    refusals = [line for line in follower.log().splitlines() if "forbidden" in line.lower()]
    assert refusals == [], "\n".join(refusals[:20])
