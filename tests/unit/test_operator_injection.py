"""
Golden tests of the injector's pure decision and transformation (`statecar_operator.injection`).

Each `golden/injection/<case>.yaml` holds a pod (and optionally the namespace's components);
`<case>.expected.yaml` holds what the injector makes of it: the injected pod, the skip, or the
rejection. Regenerate after a deliberate change with `STATECAR_UPDATE_GOLDEN=1 pytest ...` and
review the diff. Also: applying twice changes nothing, and kopf turns the transformation into a
JSON patch that a second admission leaves empty.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
import yaml

from statecar_contract.annotations import DAPR_EQUIVALENTS
from statecar_contract.components import ComponentSpec, parse_component
from statecar_contract.wiring import app_secret_name
from statecar_operator.injection.patching import apply_injection, is_injected
from statecar_operator.injection.plan import (
    InjectionError,
    InjectionPlan,
    Skip,
    from_dapr_annotations,
    plan_injection,
)
from statecar_operator.settings import InjectorSettings

GOLDEN = Path(__file__).parent / "golden" / "injection"
UPDATE = os.environ.get("STATECAR_UPDATE_GOLDEN") == "1"
SETTINGS = InjectorSettings(image="ghcr.io/statecar/statecar:0.1.0", version="0.1.0")

DEFAULT_COMPONENTS: list[dict[str, Any]] = [
    {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {
            "type": "state.redis",
            "metadata": [{"name": "redisHost", "value": "redis:6379"}],
            "concurrency": "first-write",
            "scopes": ["checkout", "cart"],
        },
    },
    {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": "sessions", "namespace": "shop"},
        "spec": {"type": "state.in-memory"},
    },
]

CASES = sorted(p for p in GOLDEN.glob("*.yaml") if not p.name.endswith(".expected.yaml"))


def expected_result(path: Path) -> str | None:
    expected = path.with_name(path.stem + ".expected.yaml")
    return yaml.safe_load(expected.read_text())["result"] if expected.exists() else None


INJECTED = [p for p in CASES if expected_result(p) == "injected"]


def load_case(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = yaml.safe_load(path.read_text())
    return case


def components_of(case: dict[str, Any]) -> list[ComponentSpec]:
    documents = case.get("components", DEFAULT_COMPONENTS)
    return [parse_component(d) for d in documents]


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(case["input"])
    try:
        decision = plan_injection(
            pod,
            namespace=case["namespace"],
            components_in_namespace=components_of(case),
            settings=dataclasses.replace(
                SETTINGS, dapr_annotations=bool(case.get("daprAnnotations"))
            ),
            owner_name_hint=case.get("ownerNameHint"),
            config_hash=case.get("configHash"),
            dapr_injector_installed=bool(case.get("daprInjectorInstalled")),
        )
    except InjectionError as exc:
        return {"result": "rejected", "problems": list(exc.problems)}
    if isinstance(decision, Skip):
        return {
            "result": "skipped",
            "reason": decision.reason,
            "notify": decision.notify,
            "message": decision.message,
        }
    apply_injection(pod, decision)
    return {
        "result": "injected",
        "componentsInScope": list(decision.components_in_scope),
        "warnings": list(decision.warnings),
        "pod": pod,
    }


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_pod(path: Path) -> None:
    actual = run_case(load_case(path))
    expected_path = path.with_name(path.stem + ".expected.yaml")
    if UPDATE:
        expected_path.write_text(yaml.safe_dump(actual, sort_keys=False, width=100))
    expected = yaml.safe_load(expected_path.read_text())
    assert actual == expected


@pytest.mark.parametrize("path", INJECTED, ids=[p.stem for p in INJECTED])
def test_applying_twice_equals_applying_once(path: Path) -> None:
    case = load_case(path)
    once = run_case(case)
    twice = run_case({**case, "input": once["pod"]})
    assert twice["result"] == "injected"
    assert twice["pod"] == once["pod"]


@pytest.mark.parametrize("name", ["already-injected", "already-injected-by-apiserver"])
def test_already_injected_golden_pods_come_out_unchanged(name: str) -> None:
    case = load_case(GOLDEN / f"{name}.yaml")
    assert run_case(case)["pod"] == case["input"]


def test_already_injected_pod_is_left_as_it_is() -> None:
    case = load_case(GOLDEN / "deployment-pod.yaml")
    injected = run_case(case)["pod"]
    assert is_injected(injected)
    again = run_case({**case, "input": injected})
    assert again["pod"] == injected


def plan_for(pod: dict[str, Any], **overrides: Any) -> InjectionPlan:
    decision = plan_injection(
        pod,
        namespace="shop",
        components_in_namespace=[parse_component(d) for d in DEFAULT_COMPONENTS],
        settings=SETTINGS,
        **overrides,
    )
    assert isinstance(decision, InjectionPlan)
    return decision


def annotated_pod(**annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {"statecar.io/enabled": "true", **annotations},
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }


def test_kopf_turns_the_transformation_into_a_json_patch_and_a_second_pass_into_none() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    plan = plan_for(pod)
    # kopf types a body as its RawBody TypedDict; to the injector it is the pod's plain dict.
    patch = kopf.Patch(body=kopf.Body(cast(kopf.RawBody, copy.deepcopy(pod))))
    patch.fns.append(lambda body: apply_injection(cast(dict[str, Any], body), plan))
    ops = patch.as_json_patch()
    paths = {op["path"] for op in ops}
    # Keys with '/' are escaped as '~1' (RFC 6901), the bug nolar/kopf#866 was about.
    assert "/metadata/annotations/statecar.io~1status" in paths
    assert "/metadata/labels" in paths
    assert "/spec/initContainers" in paths

    injected = copy.deepcopy(pod)
    apply_injection(injected, plan)
    again = kopf.Patch(body=kopf.Body(cast(kopf.RawBody, injected)))
    again.fns.append(lambda body: apply_injection(cast(dict[str, Any], body), plan_for(injected)))
    assert again.as_json_patch() == []


def test_the_sidecar_is_first_and_native() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    pod["spec"]["initContainers"] = [{"name": "setup", "image": "example/setup:1"}]
    apply_injection(pod, plan_for(pod))
    first = pod["spec"]["initContainers"][0]
    assert first["name"] == "statecar"
    assert first["restartPolicy"] == "Always"
    assert first["command"] == ["statecar", "sidecar"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["statecar", "setup"]


def test_the_api_token_is_a_secret_reference_never_a_literal() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart", "statecar.io/api-token-secret": "tok"})
    apply_injection(pod, plan_for(pod))
    sidecar = pod["spec"]["initContainers"][0]
    app = pod["spec"]["containers"][0]
    token_entries = [
        e
        for c in (sidecar, app)
        for e in c["env"]
        if e["name"] in {"STATECAR_API_TOKEN", "DAPR_API_TOKEN"}
    ]
    assert len(token_entries) == 2
    for entry in token_entries:
        assert "value" not in entry
        assert entry["valueFrom"] == {"secretKeyRef": {"name": "tok", "key": "token"}}


def test_probes_target_the_metrics_port_and_liveness_does_not_depend_on_the_backend() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart", "statecar.io/metrics-port": "9191"})
    apply_injection(pod, plan_for(pod))
    sidecar = pod["spec"]["initContainers"][0]
    for probe in ("startupProbe", "readinessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/v1.0/healthz", "port": 9191}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9191}
    assert sidecar["ports"] == [
        {"name": "statecar-metric", "containerPort": 9191, "protocol": "TCP"}
    ]


def test_the_security_context_is_restrictive() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    apply_injection(pod, plan_for(pod))
    context = pod["spec"]["initContainers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_wiring_secret_is_mounted_read_only() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    apply_injection(pod, plan_for(pod))
    mounts = {m["name"]: m for m in pod["spec"]["initContainers"][0]["volumeMounts"]}
    assert mounts["statecar-wiring"] == {
        "name": "statecar-wiring",
        "mountPath": "/var/run/statecar/wiring",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    # The namespace's shared Secret and the app's own, each optional, one key each: nothing of
    # another app's Secret is ever mounted.
    assert volumes["statecar-wiring"] == {
        "name": "statecar-wiring",
        "projected": {
            "sources": [
                {
                    "secret": {
                        "name": "statecar-wiring",
                        "optional": True,
                        "items": [{"key": "components.json", "path": "shared.json"}],
                    }
                },
                {
                    "secret": {
                        "name": app_secret_name("cart"),
                        "optional": True,
                        "items": [{"key": "components.json", "path": "app.json"}],
                    }
                },
            ]
        },
    }
    env = {e["name"]: e for e in pod["spec"]["initContainers"][0]["env"]}
    assert env["STATECAR_WIRING_FILE"]["value"] == "/var/run/statecar/wiring"


def test_a_pod_injected_by_an_earlier_release_is_reinjected_with_the_scoped_wiring() -> None:
    """An earlier release mounted the shared Secret whole: that volume is ours (not a user's
    volume taking a reserved name), and re-injection replaces it with the projected one."""
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    apply_injection(pod, plan_for(pod))
    volumes = pod["spec"]["volumes"]
    index = next(i for i, v in enumerate(volumes) if v["name"] == "statecar-wiring")
    volumes[index] = {
        "name": "statecar-wiring",
        "secret": {"secretName": "statecar-wiring", "optional": True},
    }
    apply_injection(pod, plan_for(pod))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "statecar-wiring")
    assert "secret" not in volume
    assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == [
        "statecar-wiring",
        app_secret_name("cart"),
    ]
    # A user's own volume of that name is still refused.
    other = annotated_pod(**{"statecar.io/app-id": "cart"})
    other["spec"]["volumes"] = [
        {"name": "statecar-wiring", "projected": {"sources": [{"secret": {"name": "mine"}}]}}
    ]
    with pytest.raises(InjectionError, match="reserved for statecar"):
        plan_for(other)


def test_the_status_annotation_records_what_was_injected() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    apply_injection(pod, plan_for(pod, config_hash="abc123"))
    status = json.loads(pod["metadata"]["annotations"]["statecar.io/status"])
    assert status == {
        "appId": "cart",
        "configHash": "abc123",
        "image": "ghcr.io/statecar/statecar:0.1.0",
        "injectorHash": SETTINGS.config_hash(),
        "version": "0.1.0",
    }
    # Any cluster-wide sidecar default moves the hash (stale sidecars are found by it); the
    # version and the Dapr-annotations option do not.
    assert dataclasses.replace(SETTINGS, memory_limit="1Gi").config_hash() != SETTINGS.config_hash()
    assert dataclasses.replace(SETTINGS, version="9").config_hash() == SETTINGS.config_hash()
    assert (
        dataclasses.replace(SETTINGS, dapr_annotations=True).config_hash() == SETTINGS.config_hash()
    )
    assert pod["metadata"]["labels"] == {"statecar.io/injected": "true"}


def test_a_container_added_after_injection_gets_the_env_on_reinvocation() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    apply_injection(pod, plan_for(pod))
    pod["spec"]["containers"].append({"name": "late", "image": "example/late:1"})
    apply_injection(pod, plan_for(pod))
    late = pod["spec"]["containers"][1]
    assert {e["name"] for e in late["env"]} == {
        "DAPR_HTTP_PORT",
        "STATECAR_HTTP_PORT",
        "DAPR_GRPC_PORT",
    }


def test_an_unknown_key_names_the_closest_known_one() -> None:
    with pytest.raises(InjectionError) as caught:
        plan_for(annotated_pod(**{"statecar.io/sidecar-cpu-limits": "1"}))
    assert "did you mean statecar.io/sidecar-cpu-limit?" in str(caught.value)


def test_an_unknown_key_far_from_any_known_one_lists_them() -> None:
    with pytest.raises(InjectionError) as caught:
        plan_for(annotated_pod(**{"statecar.io/zzz": "1"}))
    assert "known: statecar.io/api-token-secret" in str(caught.value)


@pytest.mark.parametrize(
    ("annotation", "value", "fragment"),
    [
        ("statecar.io/http-port", "0", "is outside 1024-65535"),
        ("statecar.io/http-port", "+3500", "write it in digits 0-9"),
        ("statecar.io/metrics-port", "443", "ports below 1024 are privileged"),
        ("statecar.io/metrics-port", "65536", "is outside 1024-65535"),
        ("statecar.io/http-max-request-size", "\u0664", "neither a number of megabytes"),
        ("statecar.io/http-max-request-size", "\u00b2", "neither a number of megabytes"),
        ("statecar.io/sidecar-cpu-limit", "65", "above 64 cores"),
        ("statecar.io/sidecar-cpu-limit", "1e999999999", "out of range"),
        ("statecar.io/sidecar-cpu-request", "0.0001", "finer than 1m"),
        ("statecar.io/sidecar-memory-limit", "64m", "not a whole number of bytes"),
        ("statecar.io/sidecar-memory-limit", "100", "below 1Mi"),
        ("statecar.io/sidecar-memory-limit", "65Gi", "above 64Gi"),
        ("statecar.io/env", "STATECAR_LISTEN_ADDRESS=0.0.0.0", "off the pod's loopback"),
        ("statecar.io/env", "APP_ID=x", "use statecar.io/app-id"),
        ("statecar.io/env", "DAPR_APP_ID=x", "use statecar.io/app-id"),
        ("statecar.io/env", "STATECAR_SECRETS_FILE=/x", "secretKeyRef"),
        ("statecar.io/env", "STATECAR_COMPONENTS_PATH=/x", "StateStoreComponents"),
        ("statecar.io/env", "LD_PRELOAD=/x.so", "not one a pod may set"),
        ("statecar.io/env", "TZ=UTC,TZ=CET", "TZ is given twice"),
        ("statecar.io/metrics-port", "3500", "must differ"),
        ("statecar.io/api-token-secret", "Not_A_Secret", "must name a Secret"),
        ("statecar.io/api-token-secret", "tok:bad key", "not a valid Secret key"),
        ("statecar.io/sidecar-image", "has space", "not an image reference"),
        ("statecar.io/http-max-request-size", "0", "must be above 0"),
        ("statecar.io/http-max-request-size", "lots", "neither a number of megabytes"),
        ("statecar.io/components", "Orders", "not a component name"),
        ("statecar.io/components", " , ", "names no component"),
        ("statecar.io/env", "NOVALUE", "is not NAME=value"),
        ("statecar.io/env", "DAPR_HTTP_PORT=1", "use statecar.io/http-port"),
        (
            "statecar.io/env",
            "STATECAR_GRPC_PORT=50002",
            "STATECAR_GRPC_PORT is set by the injector; use statecar.io/grpc-port",
        ),
        (
            "statecar.io/env",
            "DAPR_GRPC_PORT=50002",
            "DAPR_GRPC_PORT is set by the injector; use statecar.io/grpc-port",
        ),
        ("statecar.io/log-as-json", "maybe", "not a boolean"),
        ("statecar.io/app-id", "has space", "must be letters, digits"),
        ("statecar.io/sidecar-memory-request", "-1Mi", "is negative"),
    ],
)
def test_bad_values_are_rejected_with_the_annotation_named(
    annotation: str, value: str, fragment: str
) -> None:
    with pytest.raises(InjectionError) as caught:
        plan_for(annotated_pod(**{"statecar.io/app-id": "cart", annotation: value}))
    message = str(caught.value)
    assert fragment in message
    assert annotation in message or annotation == "statecar.io/app-id"


def test_max_body_accepts_dapr_megabytes_and_quantities() -> None:
    assert (
        plan_for(annotated_pod(**{"statecar.io/http-max-request-size": "4"})).max_body_bytes
        == 4 << 20
    )
    assert (
        plan_for(annotated_pod(**{"statecar.io/http-max-request-size": "512Ki"})).max_body_bytes
        == 512 << 10
    )


def test_requested_components_that_do_not_exist_are_a_warning_not_an_error() -> None:
    plan = plan_for(
        annotated_pod(**{"statecar.io/components": "orders,later", "statecar.io/app-id": "cart"})
    )
    assert plan.components_in_scope == ("orders",)
    assert plan.requested_components == ("orders", "later")
    assert any("later" in w for w in plan.warnings)


def test_a_component_of_another_namespace_is_not_in_scope() -> None:
    other = parse_component(
        {**DEFAULT_COMPONENTS[1], "metadata": {"name": "x", "namespace": "other"}}
    )
    decision = plan_injection(
        annotated_pod(),
        namespace="shop",
        components_in_namespace=[other],
        settings=SETTINGS,
    )
    assert isinstance(decision, InjectionPlan)
    assert decision.components_in_scope == ()
    assert any(
        "no valid StateStoreComponent in namespace 'shop' yet" in w for w in decision.warnings
    )


def test_a_pod_asking_before_its_components_exist_is_injected_all_the_same() -> None:
    """Order of apply does not matter: with no component at all, or none in scope, the pod
    still gets its sidecar (with a warning), which opens components as they appear."""
    for components, says in (
        ([], "no valid StateStoreComponent in namespace 'shop' yet"),
        (
            [
                parse_component(
                    {
                        **DEFAULT_COMPONENTS[1],
                        "spec": {**DEFAULT_COMPONENTS[1]["spec"], "scopes": ["other"]},
                    }
                )
            ],
            "is in scope for app id 'web'",
        ),
    ):
        pod = annotated_pod(**{"statecar.io/app-id": "web"})
        decision = plan_injection(
            pod, namespace="shop", components_in_namespace=components, settings=SETTINGS
        )
        assert isinstance(decision, InjectionPlan), decision
        assert decision.components_in_scope == ()
        assert any(says in w for w in decision.warnings), decision.warnings
        apply_injection(pod, decision)
        assert is_injected(pod)
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "statecar-wiring")
        # Starts before the Secrets exist.
        assert all(s["secret"]["optional"] is True for s in volume["projected"]["sources"])


def test_a_pod_template_takes_its_app_id_from_the_owner_hint() -> None:
    template = {
        "metadata": {"labels": {"app": "web"}, "annotations": {"statecar.io/enabled": "true"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    plan = plan_for(template, owner_name_hint="checkout")
    assert plan.app_id == "checkout"


def test_without_any_name_the_app_id_must_be_given() -> None:
    template = {
        "metadata": {"annotations": {"statecar.io/enabled": "true"}},
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    with pytest.raises(InjectionError, match="no app id"):
        plan_for(template)


def test_reserved_names_are_rejected() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    pod["spec"]["containers"].append({"name": "statecar", "image": "x"})
    pod["spec"]["volumes"] = [{"name": "statecar-wiring", "configMap": {"name": "mine"}}]
    with pytest.raises(InjectionError) as caught:
        plan_for(pod)
    assert len(caught.value.problems) == 2


def test_a_huge_value_is_not_echoed_back_whole() -> None:
    with pytest.raises(InjectionError) as caught:
        plan_for(annotated_pod(**{"statecar.io/log-level": "x" * 100_000}))
    assert len(str(caught.value)) < 300
    assert "100000 characters" in str(caught.value)


def test_the_allowed_env_reaches_the_sidecar() -> None:
    plan = plan_for(annotated_pod(**{"statecar.io/env": "TZ=UTC, PYTHONFAULTHANDLER=1"}))
    assert plan.extra_env == (("TZ", "UTC"), ("PYTHONFAULTHANDLER", "1"))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "statecar.io/app-id: has no value (null)"),
        (True, 'quote it (statecar.io/app-id: "true")'),
        (3500, 'quote it (statecar.io/app-id: "3500")'),
        (["a"], "statecar.io/app-id: is a list, but annotation values are strings"),
    ],
)
def test_an_annotation_value_that_is_no_string_is_refused(value: Any, fragment: str) -> None:
    pod = annotated_pod()
    pod["metadata"]["annotations"]["statecar.io/app-id"] = value
    with pytest.raises(InjectionError) as caught:
        plan_for(pod)
    assert fragment in str(caught.value)


def test_a_statecar_init_container_from_an_earlier_injection_is_ours() -> None:
    pod = annotated_pod(**{"statecar.io/app-id": "cart"})
    apply_injection(pod, plan_for(pod))
    again = plan_for(pod)  # re-invocation: no refusal
    assert again.app_id == "cart"
    del pod["metadata"]["annotations"]["statecar.io/status"]
    with pytest.raises(InjectionError, match=r"spec.initContainers\[0\]: the name 'statecar'"):
        plan_for(pod)


def test_host_network_is_allowed_with_an_api_token() -> None:
    pod = annotated_pod(**{"statecar.io/api-token-secret": "tok"})
    pod["spec"]["hostNetwork"] = True
    assert any("hostNetwork" in w for w in plan_for(pod).warnings)
    del pod["metadata"]["annotations"]["statecar.io/api-token-secret"]
    with pytest.raises(
        InjectionError, match=r"spec\.hostNetwork: .* set statecar\.io/api-token-secret"
    ):
        plan_for(pod)


def test_the_operators_default_ports_are_bounded_too() -> None:
    with pytest.raises(
        InjectionError, match=r"the operator's default for statecar\.io/metrics-port"
    ):
        plan_injection(
            annotated_pod(),
            namespace="shop",
            components_in_namespace=[parse_component(d) for d in DEFAULT_COMPONENTS],
            settings=InjectorSettings(metrics_port=80),
        )


def test_dapr_annotations_map_to_their_statecar_equivalents_and_nothing_else() -> None:
    translated, notes = from_dapr_annotations(
        {
            "dapr.io/enabled": "true",
            "dapr.io/app-id": "cart",
            "dapr.io/sidecar-memory-limit": "1Gi",
            "dapr.io/env": "GODEBUG=x,TZ=UTC,broken",
            "dapr.io/app-port": "8080",
            "statecar.io/app-id": "not-read-here",
            "example.com/other": "x",
        }
    )
    assert translated == {
        "statecar.io/enabled": "true",
        "statecar.io/app-id": "cart",
        "statecar.io/sidecar-memory-limit": "1Gi",
        "statecar.io/env": "TZ=UTC,broken",  # the malformed item stays, to be refused
    }
    assert any("dapr.io/app-port" in n for n in notes)
    assert any("GODEBUG" in n for n in notes)
    # Every key of the brief's list has an equivalent.
    for key in (
        "enabled",
        "app-id",
        "http-port",
        "grpc-port",
        "log-level",
        "sidecar-cpu-request",
        "sidecar-cpu-limit",
        "sidecar-memory-request",
        "sidecar-memory-limit",
        "env",
        "api-token-secret",
    ):
        assert f"dapr.io/{key}" in DAPR_EQUIVALENTS, key


def test_statecar_inject_offline_agrees_with_the_webhook_on_dapr_annotations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from statecar_cli.inject_cli import main

    case = load_case(GOLDEN / "dapr-annotations.yaml")
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(yaml.safe_dump(case["input"]))
    components = tmp_path / "components.yaml"
    components.write_text(yaml.safe_dump_all(DEFAULT_COMPONENTS))
    args = ["-f", str(manifest), "--component-file", str(components), "--image", SETTINGS.image]
    assert main([*args, "--dapr-annotations"]) == 0
    offline = yaml.safe_load(capsys.readouterr().out)
    webhook = run_case(case)["pod"]
    offline_status = json.loads(offline["metadata"]["annotations"].pop("statecar.io/status"))
    webhook_status = json.loads(webhook["metadata"]["annotations"].pop("statecar.io/status"))
    assert offline_status["appId"] == webhook_status["appId"] == "checkout"
    assert offline["spec"] == webhook["spec"]
    # Without the flag, offline as online: nothing asked for.
    assert main(args) == 0
    assert "initContainers" not in yaml.safe_load(capsys.readouterr().out)["spec"]
