"""
The operator e2e package's fixtures, shared by its modules for the whole package (scope
"package": one operator, one Redis, the `orders` component of namespace `e2e-shop`), and torn
down after its last module: the operator and its webhook configurations are gone before any
e2e module outside this package runs. (Package scope needs the `__init__.py`.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.kubelet import PodProcess
from tests.e2e.localcluster import LocalCluster, _make_pki
from tests.e2e.operator_fixtures import (
    Api,
    FailureContext,
    OperatorProcess,
    condition,
    run_statecar,
    wait_for,
    wait_for_object,
)
from tests.e2e.test_operator_e2e.helpers import (
    CRD_FILE,
    CRD_NAME,
    DAPR_CRD_FILE,
    DAPR_CRD_NAME,
    EXAMPLES,
    NAMESPACES,
    OPERATOR_ENV,
    PASSWORD,
    REACT,
    SCHEMA,
    SERVICE_ACCOUNT,
    SHOP,
    SYSTEM,
    OperatorIdentity,
    component_manifest,
    entry,
    orders_manifest,
    pod_manifest,
    running_pod_sidecar,
)
from tests.support.redis_server import RedisProcess, running_redis


@pytest.fixture(scope="package")
def diagnostics(request: pytest.FixtureRequest) -> Iterator[FailureContext]:
    plugin = FailureContext(Path(__file__).resolve().parent)
    request.config.pluginmanager.register(plugin, "statecar-operator-e2e-diagnostics")
    yield plugin
    request.config.pluginmanager.unregister(plugin)


@pytest.fixture(scope="package")
def api(cluster: LocalCluster) -> Iterator[Api]:
    client = Api(cluster)
    yield client
    client.close()


@pytest.fixture(scope="package")
def namespaces(cluster: LocalCluster) -> tuple[str, ...]:
    for namespace in NAMESPACES:
        cluster.create_namespace(namespace)
    return NAMESPACES


@pytest.fixture(scope="package")
def crd(cluster: LocalCluster, api: Api, namespaces: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The CRD, applied from crds/ and Established; deleted again (with its objects) at the end.
    Dapr's Component CRD too (a minimal stand-in), as the operator also watches Dapr's."""
    cluster.kubectl("apply", "-f", str(DAPR_CRD_FILE))
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    installed = wait_for_object(
        "the CRD to be Established",
        lambda: api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}"),
        lambda body: condition(body, "Established").get("status") == "True",
        timeout=REACT,
    )
    wait_for(
        "statecar.io/v1alpha1 to be served",
        lambda: api.get(f"/apis/statecar.io/v1alpha1/namespaces/{SCHEMA}/statestorecomponents"),
        lambda body: body is not None,
        timeout=REACT,
    )
    wait_for(
        "dapr.io/v1alpha1 to be served",
        lambda: api.get(f"/apis/dapr.io/v1alpha1/namespaces/{SCHEMA}/components"),
        lambda body: body is not None,
        timeout=REACT,
    )
    yield installed
    for name in (CRD_NAME, DAPR_CRD_NAME):
        cluster.kubectl("delete", "crd", name, "--ignore-not-found", "--timeout=60s", check=False)


@pytest.fixture(scope="package")
def redis() -> Iterator[RedisProcess]:
    with running_redis(["--requirepass", PASSWORD]) as server:
        yield server


@pytest.fixture(scope="package")
def operator_identity(
    cluster: LocalCluster,
    crd: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorIdentity]:
    """A ServiceAccount bound to exactly what `statecar operator rbac` prints, and its token."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": SYSTEM},
        }
    )
    rbac = run_statecar(
        "operator",
        "rbac",
        "--namespace",
        SYSTEM,
        "--service-account",
        SERVICE_ACCOUNT,
        "--dapr-annotations",
        "--dapr-components",
        "--stale-sidecars",
        "--auto-rollout",
    )
    cluster.apply(rbac)
    token = cluster.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", SYSTEM, "--duration=2h"
    ).stdout.strip()
    kubeconfig = cluster.write_kubeconfig(
        tmp_path_factory.mktemp("operator") / "kubeconfig", token, user=SERVICE_ACCOUNT
    )
    yield OperatorIdentity(
        kubeconfig, token, f"system:serviceaccount:{SYSTEM}:{SERVICE_ACCOUNT}", rbac
    )
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=rbac, check=False)


@pytest.fixture(scope="package")
def webhook_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA, serving certificate, key) for 127.0.0.1: the files a Secret would mount."""
    return _make_pki(tmp_path_factory.mktemp("webhook-pki"))


@pytest.fixture(scope="package")
def operator(
    operator_identity: OperatorIdentity,
    webhook_pki: tuple[Path, Path, Path],
    diagnostics: FailureContext,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    ca, cert, key = webhook_pki
    process = OperatorProcess(
        kubeconfig=operator_identity.kubeconfig,
        namespace=SYSTEM,
        workdir=tmp_path_factory.mktemp("operator-log"),
        cert_file=cert,
        key_file=key,
        ca_file=ca,
        extra_env=OPERATOR_ENV,
    )
    diagnostics.add("operator log (tail)", process.log_tail)
    process.start()
    try:
        process.wait_ready()
    except BaseException:
        process.stop()
        raise
    yield process
    code = process.stop()  # None when a test killed it on purpose
    assert code in (0, None), f"the operator exited with {code} on SIGTERM:\n{process.log_tail()}"


@pytest.fixture(scope="package")
def webhooks(
    cluster: LocalCluster, operator: OperatorProcess, webhook_pki: tuple[Path, Path, Path]
) -> Iterator[str]:
    """The webhook configurations `statecar operator webhook-config` prints, applied."""
    configs = run_statecar(
        "operator",
        "webhook-config",
        "--url",
        operator.webhook_url,
        "--ca-file",
        str(webhook_pki[0]),
        "--exclude-namespace",
        SYSTEM,
        "--dapr-annotations",
    )
    cluster.apply(configs)
    # The API server loads webhook configurations through an informer: wait until both are
    # called (server-side dry runs: no object is stored, no Event posted).
    bad_component = component_manifest(
        "webhook-probe", SCHEMA, {"type": "state.in-memory", "metadata": [entry("nope", "x")]}
    )
    wait_for(
        "the validating webhook to be in effect",
        lambda: (
            cluster.kubectl(
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                input=yaml.safe_dump(bad_component),
                check=False,
            ).stderr
        ),
        # "denied": the operator answered over TLS (a TLS failure is "failed calling webhook").
        lambda stderr: 'webhook "validate.statestorecomponents.statecar.io" denied' in stderr,
        timeout=REACT,
    )
    bad_pod = pod_manifest(
        "webhook-probe", SHOP, {"statecar.io/enabled": "true", "statecar.io/http-port": "x"}
    )
    wait_for(
        "the mutating webhook to be in effect",
        lambda: (
            cluster.kubectl(
                "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(bad_pod), check=False
            ).stderr
        ),
        lambda stderr: 'webhook "inject.statecar.io" denied' in stderr,
        timeout=REACT,
    )
    yield configs
    cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=configs, check=False)


@pytest.fixture(scope="package")
def orders(cluster: LocalCluster, api: Api, webhooks: str, redis: RedisProcess) -> dict[str, Any]:
    """crds/examples' Redis component and its Secret in e2e-shop, pointed at the real Redis."""
    secret = yaml.safe_load((EXAMPLES / "state-redis-auth-secret.yaml").read_text())
    secret["metadata"]["namespace"] = SHOP
    secret["stringData"]["password"] = PASSWORD
    cluster.apply(secret)
    cluster.apply(orders_manifest(redis.address))
    return wait_for_object(
        "orders to be Ready",
        lambda: api.component(SHOP, "orders"),
        lambda c: condition(c, "Ready").get("status") == "True",
        timeout=REACT,
    )


@pytest.fixture(scope="package")
def checkout_pod(cluster: LocalCluster, api: Api, orders: dict[str, Any]) -> dict[str, Any]:
    """An annotated Pod (with its own init container), created through the API server."""
    manifest = pod_manifest(
        "checkout",
        SHOP,
        {
            "statecar.io/enabled": "true",
            "statecar.io/app-id": "checkout",
            "statecar.io/sidecar-cpu-limit": "0.5",
        },
        init_container=True,
    )
    created = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    assert "Warning" not in created.stderr, created.stderr
    pod = api.pod(SHOP, "checkout")
    assert pod is not None
    return pod


@pytest.fixture(scope="package")
def sidecar(
    cluster: LocalCluster, checkout_pod: dict[str, Any], diagnostics: FailureContext
) -> Iterator[PodProcess]:
    """The injected `statecar` container of the stored checkout Pod, run as the kubelet would."""
    with running_pod_sidecar(cluster, checkout_pod, diagnostics, "checkout") as process:
        yield process
