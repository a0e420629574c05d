"""
Where the Dapr gRPC API is: the sidecar's settings, the injector's env, `statecar.io/grpc-port`.

The SDKs find the gRPC API through DAPR_GRPC_PORT (else daprd's 50001); the injector exports it to
every app container and tells the sidecar the same port.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.test_operator_injection import annotated_pod, plan_for

from statecar_operator.injection.patching import apply_injection
from statecar_operator.injection.plan import InjectionError
from statecar_sidecar.settings import from_environ


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_sidecar_defaults_to_daprds_grpc_port_and_honours_both_variables() -> None:
    assert from_environ({}).grpc_port == 50001
    assert from_environ({"DAPR_GRPC_PORT": "50100"}).grpc_port == 50100
    assert (
        from_environ({"DAPR_GRPC_PORT": "50100", "STATECAR_GRPC_PORT": "50200"}).grpc_port == 50200
    )
    assert from_environ({"STATECAR_GRPC_PORT": "0"}).grpc_port == 0  # off


def test_the_injector_exports_the_grpc_port_to_the_app_and_the_sidecar() -> None:
    pod = annotated_pod()
    apply_injection(pod, plan_for(pod))
    (sidecar,) = pod["spec"]["initContainers"]
    (app,) = pod["spec"]["containers"]
    assert _env(sidecar)["STATECAR_GRPC_PORT"] == "50001"
    assert _env(app)["DAPR_GRPC_PORT"] == "50001"


def test_the_grpc_port_annotation_moves_both() -> None:
    pod = annotated_pod(**{"statecar.io/grpc-port": "50123"})
    apply_injection(pod, plan_for(pod))
    assert _env(pod["spec"]["initContainers"][0])["STATECAR_GRPC_PORT"] == "50123"
    assert _env(pod["spec"]["containers"][0])["DAPR_GRPC_PORT"] == "50123"


@pytest.mark.parametrize(
    ("annotations", "fragment"),
    [
        ({"statecar.io/grpc-port": "3500"}, "must differ"),
        ({"statecar.io/grpc-port": "seventy"}, "is not a port number"),
    ],
)
def test_a_bad_grpc_port_is_refused_with_the_annotation_named(
    annotations: dict[str, str], fragment: str
) -> None:
    with pytest.raises(InjectionError) as caught:
        plan_for(annotated_pod(**annotations))
    assert fragment in str(caught.value)
    assert "statecar.io/grpc-port" in str(caught.value)


def test_an_app_container_on_the_grpc_port_is_a_conflict() -> None:
    pod = annotated_pod()
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 50001}]
    with pytest.raises(InjectionError) as caught:
        plan_for(pod)
    assert "statecar.io/grpc-port" in str(caught.value)
