"""
The Helm chart (charts/statecar): its CRD is the repository's, its values are documented and
validated, it configures the operator only through settings the operator has, its RBAC is the
operator's documented RBAC, and it renders webhooks that cannot block the operator's own
namespace or kube-system.

Tests that run `helm` use the binary scripts/k8s-tools.sh builds (~/.cache/statecar/bin/helm)
or one on PATH. Without it they are skipped, except under `make test` and in CI
(`STATECAR_REQUIRE_SERVERS` or `CI` set), where a missing helm is a failure: the bootstrap
builds it.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from tests.support.require import require

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "statecar"
SOURCE_CRDS = ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
HA_VALUES = CHART / "ci" / "ha-values.yaml"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "platform-statecar"  # not the default, to prove the release namespace is used
RELEASE = "sc"


def kubernetes_version() -> str:
    """The API server version the e2e tier runs (scripts/k8s-tools.sh), for --kube-version."""
    script = (ROOT / "scripts" / "k8s-tools.sh").read_text()
    match = re.search(r'K8S_VERSION="\$\{STATECAR_K8S_VERSION:-v([0-9.]+)\}"', script)
    assert match, "scripts/k8s-tools.sh names the Kubernetes version it builds"
    return match.group(1)


# --- the CRD --------------------------------------------------------------------------------


def test_the_charts_crds_are_byte_identical_copies_of_the_repositorys_crds() -> None:
    sources = sorted(p.name for p in SOURCE_CRDS.glob("*.yaml"))
    assert sources, "crds/ holds the StateStoreComponent CRD"
    assert sorted(p.name for p in CHART_CRDS.glob("*.yaml")) == sources, (
        "run scripts/sync-chart-crds.sh"
    )
    for name in sources:
        assert (CHART_CRDS / name).read_bytes() == (SOURCE_CRDS / name).read_bytes(), (
            f"charts/statecar/files/crds/{name} differs from crds/{name}: run scripts/sync-chart-crds.sh"
        )


def test_the_sync_script_reports_a_chart_in_sync() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "sync-chart-crds.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_chart_has_no_crds_folder_because_helm_never_upgrades_it() -> None:
    # Helm installs a chart's crds/ once and never upgrades it; and a CRD both there and in
    # templates/ makes `helm install` fail (Helm creates it from crds/, then refuses to adopt it).
    assert not (CHART / "crds").exists(), "the CRD is a template rendered from files/crds/"


# --- Chart.yaml and values.yaml ----------------------------------------------------------------


def test_the_chart_version_and_app_version_are_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "statecar"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == PROJECT["version"]


def value_keys(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, key, previous meaningful line) for every mapping key in values.yaml."""
    previous = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        match = re.match(r"^\s*([A-Za-z0-9_.-]+):", line)
        if match and not stripped.startswith("#"):
            yield number, match.group(1), previous
        previous = line


def walk_values(
    values: Mapping[str, Any], schema: Mapping[str, Any], path: str = ""
) -> Iterator[str]:
    """Yield the dotted path of every value the schema does not describe."""
    properties = schema.get("properties")
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if properties is not None and key in properties:
            child = properties[key]
        elif isinstance(schema.get("additionalProperties"), dict):
            child = schema["additionalProperties"]
        else:
            yield where
            continue
        if isinstance(value, Mapping) and (
            "properties" in child or "additionalProperties" in child
        ):
            yield from walk_values(value, child, where)


def test_the_schema_describes_every_key_of_values_yaml() -> None:
    assert list(walk_values(VALUES, SCHEMA)) == []


def validator() -> Any:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


def with_value(path: str, value: Any) -> dict[str, Any]:
    """A deep copy of the defaults with one dotted path set."""
    values: dict[str, Any] = json.loads(json.dumps(VALUES))
    node = values
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return values


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over the defaults (maps merge, everything else replaces)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def test_the_schema_is_draft_07_and_accepts_the_defaults_and_every_ci_values_file() -> None:
    check = validator()
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert list(check.iter_errors(VALUES)) == []
    for path in CI_VALUES:
        values = merged(VALUES, yaml.safe_load(path.read_text()))
        assert [e.message for e in check.iter_errors(values)] == [], path.name


@pytest.mark.parametrize("path", [CHART / "values.yaml", *CI_VALUES], ids=lambda p: p.name)
def test_every_key_in_a_values_file_is_documented_by_a_comment(path: Path) -> None:
    undocumented = [
        f"line {number}: {key}"
        for number, key, previous in value_keys(path.read_text())
        if not previous.strip().startswith("#")
    ]
    assert not undocumented, "keys without a comment on the line above: " + ", ".join(undocumented)


BAD_VALUES = [
    ("replicaCount", 0, "replicaCount"),
    ("replicaCount", 1.5, "replicaCount"),
    ("replicaCount", "3", "replicaCount"),
    ("webhook.failurePolicy", "Maybe", "webhook.failurePolicy"),
    ("webhook.validation.failurePolicy", "fail", "webhook.validation.failurePolicy"),
    ("webhook.timeoutSeconds", 31, "webhook.timeoutSeconds"),
    ("webhook.certificates.mode", "vault", "webhook.certificates.mode"),
    ("webhook.excludeNamespaces", ["Not_A_Namespace"], "webhook.excludeNamespaces.0"),
    ("image.pullPolicy", "Sometimes", "image.pullPolicy"),
    ("image.digest", "latest", "image.digest"),
    ("sidecar.image.pullPolicy", "always", "sidecar.image.pullPolicy"),
    ("sidecar.logLevel", "verbose", "sidecar.logLevel"),
    ("sidecar.httpPort", 70000, "sidecar.httpPort"),
    ("sidecar.runAsUser", 0, "sidecar.runAsUser"),
    ("resources.requests.cpu", "lots", "resources.requests.cpu"),
    ("resources.cpu", "100m", "resources"),  # the shape is {requests: {...}, limits: {...}}
    ("sidecar.resources.limits", "256Mi", "sidecar.resources.limits"),
    ("podDisruptionBudget.maxUnavailable", 0, "podDisruptionBudget.maxUnavailable"),
    ("podAntiAffinity.type", "always", "podAntiAffinity.type"),
    ("operator.logLevel", "chatty", "operator.logLevel"),
    (
        "operator.leaderElection.leaseDurationSeconds",
        0,
        "operator.leaderElection.leaseDurationSeconds",
    ),
    ("crds.keep", "yes", "crds.keep"),
    ("webhook.certificates.syncSeconds", 0, "webhook.certificates.syncSeconds"),
    (
        "webhook.certificates.operator.caValiditySeconds",
        60,
        "webhook.certificates.operator.caValiditySeconds",
    ),
    (
        "webhook.certificates.operator.extraSANs",
        ["has space"],
        "webhook.certificates.operator.extraSANs.0",
    ),
    ("replicacount", 3, "replicacount"),  # a misspelt key is an error, not silently ignored
]


@pytest.mark.parametrize(("path", "value", "field"), BAD_VALUES)
def test_the_schema_rejects_a_bad_value_and_names_the_field(
    path: str, value: Any, field: str
) -> None:
    errors = list(validator().iter_errors(with_value(path, value)))
    assert errors, f"{path}={value!r} was accepted"
    named = {".".join(str(p) for p in e.absolute_path) for e in errors} | {
        m for e in errors for m in re.findall(r"'([A-Za-z]+)' was unexpected", e.message)
    }
    assert field in named, f"errors name {named}, not {field}"


# --- the operator's settings and RBAC --------------------------------------------------------


def operator_env_variables() -> set[str]:
    from statecar_operator.settings import env_variables

    return {name for name, _, _ in env_variables()}


def chart_env_names() -> set[str]:
    text = (CHART / "templates" / "deployment.yaml").read_text()
    return set(re.findall(r"name: (STATECAR_OPERATOR_[A-Z0-9_]+)", text))


def test_every_variable_the_chart_sets_is_a_setting_of_the_operator() -> None:
    unknown = sorted(chart_env_names() - operator_env_variables())
    assert not unknown, (
        f"the chart sets {unknown}, which operator/statecar_operator/settings.py does not define"
    )


def test_every_cluster_wide_sidecar_default_can_be_set_from_values() -> None:
    from statecar_operator.settings import SIDECAR_ENV_PREFIX

    sidecar_settings = {n for n in operator_env_variables() if n.startswith(SIDECAR_ENV_PREFIX)}
    # VERSION is the operator's own version, recorded on pods; not a user setting.
    missing = sorted(sidecar_settings - chart_env_names() - {SIDECAR_ENV_PREFIX + "VERSION"})
    assert not missing, f"sidecar defaults the chart cannot set: {missing}"


# --- helm -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache = Path(os.environ.get("STATECAR_CACHE", Path.home() / ".cache" / "statecar"))
    binary = require(
        "helm", also_in=[cache / "bin"], hint="scripts/k8s-tools.sh builds it (make bootstrap)"
    )
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    return run


def render(
    helm: Any,
    *values_files: Path,
    api_versions: Sequence[str] = (),
    **sets: Any,
) -> list[dict[str, Any]]:
    """`helm template` → parsed objects; raises with helm's stderr when it fails."""
    result = template(helm, *values_files, api_versions=api_versions, **sets)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def template(
    helm: Any,
    *values_files: Path,
    api_versions: Sequence[str] = (),
    chart: Path = CHART,
    extra: Sequence[str] = (),
    **sets: Any,
) -> subprocess.CompletedProcess[str]:
    """`helm template`; `sets` keys use `__` for dots (`webhook__failurePolicy`)."""
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, *extra]
    args += ["--kube-version", kubernetes_version()]
    for path in values_files:
        args += ["--values", str(path)]
    for api in api_versions:
        args += ["--api-versions", api]
    for key, value in sets.items():
        args += ["--set-json", f"{key.replace('__', '.')}={json.dumps(value)}"]
    result: subprocess.CompletedProcess[str] = helm(*args)
    return result


def only(objects: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"{len(matches)} objects of kind {kind}"
    return dict(matches[0])


def container_env(deployment: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    "values_files", [(), *((p,) for p in CI_VALUES)], ids=["defaults", *(p.stem for p in CI_VALUES)]
)
def test_helm_lint_strict_passes(helm: Any, values_files: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", kubernetes_version()]
    for path in values_files:
        args += ["--values", str(path)]
    result = helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr


def is_hook(obj: Mapping[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def test_the_default_install_has_every_piece_and_no_disruption_budget(helm: Any) -> None:
    everything = render(helm)
    assert [o["kind"] for o in everything if is_hook(o)] == ["Pod"], "only the helm test Pod"
    objects = [o for o in everything if not is_hook(o)]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "MutatingWebhookConfiguration",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        ]
    ), "one replica gets no PodDisruptionBudget; the helm test Pod is a hook"
    assert only(objects, "Deployment")["spec"]["replicas"] == 1


def test_the_ha_values_give_three_spread_replicas_and_a_disruption_budget(helm: Any) -> None:
    objects = render(helm, HA_VALUES)
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = only(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    # Upgrades never drop below the wanted number of webhook servers.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("values_file", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_object_carries_the_standard_labels(helm: Any, values_file: Path) -> None:
    for obj in render(helm, values_file):
        labels = obj["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{obj['kind']} {obj['metadata']['name']} has no {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == PROJECT["version"]


def webhook(objects: Sequence[Mapping[str, Any]], kind: str) -> dict[str, Any]:
    (hook,) = only(objects, kind)["webhooks"]
    return dict(hook)


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
def test_the_pod_webhook_has_the_documented_settings(helm: Any, policy: str) -> None:
    objects = render(helm, webhook__failurePolicy=policy, webhook__timeoutSeconds=7)
    hook = webhook(objects, "MutatingWebhookConfiguration")
    assert hook["failurePolicy"] == policy
    assert hook["reinvocationPolicy"] == "IfNeeded"
    # The injector posts Events for skipped pods, never for dry runs.
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] == 7
    assert hook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    validating = webhook(objects, "ValidatingWebhookConfiguration")
    assert validating["sideEffects"] == "None"
    assert validating["failurePolicy"] == "Ignore"
    assert validating["admissionReviewVersions"] == ["v1"]


def test_the_webhook_never_sees_kube_system_or_the_operators_own_namespace(helm: Any) -> None:
    objects = render(helm, webhook__excludeNamespaces=["legacy"])
    selector = webhook(objects, "MutatingWebhookConfiguration")["namespaceSelector"]
    (expression,) = selector["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    assert {"kube-system", NAMESPACE, "legacy"} <= set(expression["values"])
    # Even a user's emptied list keeps the two that protect the cluster and the operator.
    objects = render(helm, webhook__excludeNamespaces=[])
    (expression,) = webhook(objects, "MutatingWebhookConfiguration")["namespaceSelector"][
        "matchExpressions"
    ]
    assert set(expression["values"]) == {"kube-system", NAMESPACE}


def test_the_user_selectors_are_added_to_the_exclusions_not_replacing_them(helm: Any) -> None:
    objects = render(
        helm,
        webhook__namespaceSelector={"matchLabels": {"statecar.io/inject": "enabled"}},
        webhook__objectSelector={"matchLabels": {"statecar.io/enabled": "true"}},
    )
    hook = webhook(objects, "MutatingWebhookConfiguration")
    assert hook["namespaceSelector"]["matchLabels"] == {"statecar.io/inject": "enabled"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["operator"] == "NotIn"
    assert hook["objectSelector"] == {"matchLabels": {"statecar.io/enabled": "true"}}


def test_only_pods_that_mention_statecar_reach_the_injector(helm: Any) -> None:
    hook = webhook(render(helm), "MutatingWebhookConfiguration")
    (condition,) = hook["matchConditions"]
    assert "startsWith('statecar.io/')" in condition["expression"]


def operator_webhooks(service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    from statecar_operator.manifests import webhooks

    mutating, validating = webhooks.build_webhook_configurations(
        ca_bundle=b"-", service_name=service, service_namespace=NAMESPACE
    )
    return mutating, validating


def test_the_webhooks_match_the_operators_own_rendering(helm: Any) -> None:
    objects = render(helm)
    service = only(objects, "Service")["metadata"]["name"]
    for expected in operator_webhooks(service):
        actual = only(objects, expected["kind"])
        assert actual["metadata"]["name"] == expected["metadata"]["name"], (
            "the operator finds its webhook configurations by these names"
        )
        (want,) = expected["webhooks"]
        (got,) = actual["webhooks"]
        for key in (
            "name",
            "rules",
            "matchConditions",
            "sideEffects",
            "reinvocationPolicy",
            "matchPolicy",
            "admissionReviewVersions",
        ):
            assert got.get(key) == want.get(key), f"{expected['kind']}.{key}"
        want_service = {k: v for k, v in want["clientConfig"]["service"].items()}
        assert got["clientConfig"]["service"] == want_service


def test_the_webhook_service_reaches_the_operators_ports(helm: Any) -> None:
    from statecar_operator.settings import OperatorSettings

    objects = render(helm)
    deployment = only(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    defaults = OperatorSettings()
    assert ports == {"webhook": defaults.webhook_port, "health": defaults.health_port}
    service = only(objects, "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"webhook", "health"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert container_env(deployment)["STATECAR_OPERATOR_WEBHOOK_HOST"] == (
        f"{service['metadata']['name']}.{NAMESPACE}.svc"
    )


def test_the_operator_accepts_the_environment_the_chart_gives_it(helm: Any) -> None:
    from statecar_operator.settings import OperatorSettings

    for values in ((), (HA_VALUES,)):
        env = container_env(only(render(helm, *values), "Deployment"))
        plain = {k: v if isinstance(v, str) else "from-the-downward-api" for k, v in env.items()}
        settings = OperatorSettings.from_env(plain)
        assert settings.injector.image == f"{VALUES['image']['repository']}:{PROJECT['version']}"
        assert settings.injector.cpu_limit is None, "no CPU limit on sidecars by default"
        assert settings.injector.memory_limit == VALUES["sidecar"]["resources"]["limits"]["memory"]
        assert settings.leader_election is True


def test_sidecar_defaults_from_values_reach_the_injector(helm: Any) -> None:
    from statecar_operator.settings import OperatorSettings

    env = container_env(
        only(
            render(
                helm,
                sidecar__image__tag="9.9.9",
                sidecar__logLevel="debug",
                sidecar__resources__requests__cpu="25m",
                sidecar__resources__requests__memory=None,  # null removes a default
                sidecar__resources__limits__cpu="1",
            ),
            "Deployment",
        )
    )
    injector = OperatorSettings.from_env(
        {k: v for k, v in env.items() if isinstance(v, str)}
    ).injector
    assert injector.image == f"{VALUES['image']['repository']}:9.9.9"
    assert (injector.log_level, injector.cpu_request, injector.cpu_limit) == ("debug", "25m", "1")
    assert injector.memory_request is None
    assert injector.memory_limit == VALUES["sidecar"]["resources"]["limits"]["memory"]


def test_an_image_digest_wins_over_the_tag(helm: Any) -> None:
    digest = "sha256:" + "ab" * 32
    env = container_env(only(render(helm, image__digest=digest), "Deployment"))
    assert env["STATECAR_OPERATOR_SIDECAR_IMAGE"] == f"{VALUES['image']['repository']}@{digest}"


def test_the_operator_pod_is_locked_down(helm: Any) -> None:
    spec = only(render(helm), "Deployment")["spec"]["template"]["spec"]
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert isinstance(pod["runAsUser"], int)
    assert pod["runAsUser"] > 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["args"] == ["operator"], "the image's ENTRYPOINT is the statecar script"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert spec["enableServiceLinks"] is False


SECRET_MODE = {
    "webhook__certificates__mode": "secret",
    "webhook__certificates__secret": {"name": "my-tls", "caBundle": "QQ=="},
}


@pytest.mark.parametrize("mode", ["operator", "secret"])
def test_the_rbac_is_exactly_the_operators_documented_rbac(helm: Any, mode: str) -> None:
    from statecar_operator.manifests import rbac

    sets: dict[str, Any] = SECRET_MODE if mode == "secret" else {}
    objects = render(helm, operator__leaderElection__leaseName="my-lease", **sets)
    service_account = only(objects, "ServiceAccount")["metadata"]["name"]
    options: dict[str, Any] = {
        "namespace": NAMESPACE,
        "service_account": service_account,
        "lease_name": "my-lease",
        # Only the operator-managed mode needs the certificate Secret and caBundle rules.
        "webhook_secret": container_env(only(objects, "Deployment")).get(
            "STATECAR_OPERATOR_WEBHOOK_SECRET"
        ),
    }
    accepted = inspect.signature(rbac.manifests).parameters
    documented = {
        m["kind"]: m for m in rbac.manifests(**{k: v for k, v in options.items() if k in accepted})
    }
    for kind in ("ClusterRole", "Role"):
        assert only(objects, kind)["rules"] == documented[kind]["rules"], kind
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = only(objects, kind)
        assert binding["roleRef"]["name"] == only(objects, role_kind)["metadata"]["name"]
        assert binding["subjects"] == documented[kind]["subjects"]
    assert only(objects, "Role")["metadata"]["namespace"] == NAMESPACE
    env = container_env(only(objects, "Deployment"))
    assert env["STATECAR_OPERATOR_LEASE_NAME"] == "my-lease"
    # The admission policy narrowing the operator's Secret writes to its wiring Secrets.
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        rendered = only(objects, kind)
        spec = dict(documented[kind]["spec"])
        if "policyName" in spec:
            spec["policyName"] = only(objects, "ValidatingAdmissionPolicy")["metadata"]["name"]
        assert rendered["spec"] == spec, kind


@pytest.mark.parametrize("mode", ["operator", "secret"])
def test_restricted_to_namespaces_the_rbac_and_webhooks_are_the_operators(
    helm: Any, mode: str
) -> None:
    """operator.namespaces: a Role per namespace (exactly `statecar operator rbac --namespaces`),
    the operator told the same namespaces, and both webhooks sent only those namespaces."""
    from statecar_operator.manifests import rbac, webhooks

    sets: dict[str, Any] = SECRET_MODE if mode == "secret" else {}
    objects = render(helm, operator__namespaces=["shop", "cart"], **sets)
    env = container_env(only(objects, "Deployment"))
    assert env["STATECAR_OPERATOR_NAMESPACES"] == "shop,cart"
    service_account = only(objects, "ServiceAccount")["metadata"]["name"]
    documented = rbac.manifests(
        namespace=NAMESPACE,
        service_account=service_account,
        webhook_secret=env.get("STATECAR_OPERATOR_WEBHOOK_SECRET"),
        namespaces=["shop", "cart"],
    )

    def cluster_roles(documents: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [d["rules"] for d in documents if d["kind"] == "ClusterRole"]

    assert cluster_roles(objects) == cluster_roles(documented)
    assert len(cluster_roles(objects)) == (1 if mode == "operator" else 0)
    assert len([d for d in objects if d["kind"] == "ClusterRoleBinding"]) == len(
        cluster_roles(objects)
    )

    def roles(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {d["metadata"]["namespace"]: d["rules"] for d in documents if d["kind"] == "Role"}

    assert roles(objects) == roles(documented)
    bindings = {
        d["metadata"]["namespace"]: d["subjects"] for d in objects if d["kind"] == "RoleBinding"
    }
    assert set(bindings) == {NAMESPACE, "cart", "shop"}
    subjects = [{"kind": "ServiceAccount", "name": service_account, "namespace": NAMESPACE}]
    assert all(s == subjects for s in bindings.values())
    service = only(objects, "Service")["metadata"]["name"]
    want = webhooks.build_webhook_configurations(
        ca_bundle=b"-",
        service_name=service,
        service_namespace=NAMESPACE,
        namespaces=["shop", "cart"],
    )
    selector = {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["cart", "shop"]}
    for expected in want:
        got = only(objects, expected["kind"])["webhooks"][0]["namespaceSelector"]
        assert selector in got["matchExpressions"]
        assert selector in expected["webhooks"][0]["namespaceSelector"]["matchExpressions"]


def test_the_rendered_crd_is_the_repositorys_and_survives_uninstall(helm: Any) -> None:
    source = yaml.safe_load((SOURCE_CRDS / "statestorecomponents.statecar.io.yaml").read_text())
    crd = only(render(helm), "CustomResourceDefinition")
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for key, value in source["metadata"].get("labels", {}).items():
        assert crd["metadata"]["labels"][key] == value
    crd = only(render(helm, crds__keep=False), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})
    kinds = {o["kind"] for o in render(helm, crds__install=False)}
    assert "CustomResourceDefinition" not in kinds


def test_operator_mode_leaves_ca_bundle_to_the_operator(helm: Any) -> None:
    objects = render(helm)
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert "caBundle" not in webhook(objects, kind)["clientConfig"], (
            "a caBundle in the manifest would be reset by every helm upgrade"
        )
    env = container_env(only(objects, "Deployment"))
    assert env["STATECAR_OPERATOR_WEBHOOK_SECRET"] == f"{RELEASE}-statecar-webhook-tls"
    assert "STATECAR_OPERATOR_WEBHOOK_CERT" not in env


def test_cert_manager_mode_issues_the_certificate_the_operator_mounts(helm: Any) -> None:
    objects = render(
        helm, api_versions=["cert-manager.io/v1"], webhook__certificates__mode="cert-manager"
    )
    certificates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}
    serving = certificates[f"{RELEASE}-statecar-webhook"]
    service = only(objects, "Service")["metadata"]["name"]
    assert f"{service}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    ca = certificates[f"{RELEASE}-statecar-webhook-ca"]
    assert ca["spec"]["isCA"] is True
    assert ca["spec"]["privateKey"]["rotationPolicy"] == "Never"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = only(objects, kind)["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == (
            f"{NAMESPACE}/{serving['metadata']['name']}"
        )
    spec = only(objects, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    env = container_env(only(objects, "Deployment"))
    assert env["STATECAR_OPERATOR_WEBHOOK_CERT"] == "/etc/statecar/webhook-tls/tls.crt"
    assert env["STATECAR_OPERATOR_WEBHOOK_KEY"] == "/etc/statecar/webhook-tls/tls.key"


def test_cert_manager_mode_with_an_existing_issuer_makes_no_ca(helm: Any) -> None:
    objects = render(
        helm,
        api_versions=["cert-manager.io/v1"],
        webhook__certificates__mode="cert-manager",
        webhook__certificates__certManager__issuerRef={"kind": "ClusterIssuer", "name": "corp"},
    )
    (certificate,) = [o for o in objects if o["kind"] == "Certificate"]
    assert certificate["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp"}
    assert not [o for o in objects if o["kind"] == "Issuer"]


def test_cert_manager_mode_without_cert_manager_fails_with_a_clear_message(helm: Any) -> None:
    result = template(helm, webhook__certificates__mode="cert-manager")
    assert result.returncode != 0
    assert "install cert-manager first" in result.stderr


def test_secret_mode_and_an_outside_url_serve_an_operator_outside_the_cluster(helm: Any) -> None:
    bundle = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    objects = render(
        helm,
        webhook__certificates__mode="secret",
        webhook__certificates__secret={"name": "my-tls", "caBundle": bundle},
        webhook__url="https://127.0.0.1:9443/",
    )
    hook = webhook(objects, "MutatingWebhookConfiguration")
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/inject-pods", "caBundle": bundle}
    validating = webhook(objects, "ValidatingWebhookConfiguration")
    assert (
        validating["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-statestorecomponents"
    )


def test_operator_mode_passes_the_certificate_settings_and_the_urls_host(helm: Any) -> None:
    from statecar_operator.settings import OperatorSettings

    objects = render(
        helm,
        webhook__url="https://127.0.0.1:9443/",
        webhook__certificates__operator__extraSANs=["hook.example"],
        webhook__certificates__operator__rotationOverlapSeconds=2.5,
    )
    env = container_env(only(objects, "Deployment"))
    # An operator reached by URL must present a certificate for the URL's host.
    assert env["STATECAR_OPERATOR_WEBHOOK_EXTRA_SANS"] == "hook.example,127.0.0.1"
    settings = OperatorSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.extra_sans == ("hook.example", "127.0.0.1")
    assert (
        settings.webhook_ca_validity
        == VALUES["webhook"]["certificates"]["operator"]["caValiditySeconds"]
    )
    assert settings.webhook_ca_overlap == 2.5
    assert settings.webhook_cert_sync == VALUES["webhook"]["certificates"]["syncSeconds"]


def test_ports_set_with_set_render(helm: Any) -> None:
    # --set gives integers where values.yaml gives floats; comparisons must not trip on that.
    result = template(helm, extra=["--set", "operator.webhookPort=9000"])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"webhook__failurePolicy": "Maybe"}, "/webhook/failurePolicy"),
        ({"image__pullPolicy": "Sometimes"}, "/image/pullPolicy"),
        ({"resources__requests__cpu": "lots"}, "/resources/requests/cpu"),
        ({"webhook__certificates__mode": "vault"}, "/webhook/certificates/mode"),
        (
            {"operator__leaderElection__renewDeadlineSeconds": 20},
            "operator.leaderElection.renewDeadlineSeconds",
        ),
        (
            {"operator__leaderElection__enabled": False, "replicaCount": 2},
            "operator.leaderElection.enabled",
        ),
        (
            {
                "webhook__certificates__mode": "secret",
                "webhook__certificates__secret__caBundle": "QQ==",
            },
            "webhook.certificates.secret.name",
        ),
        ({"webhook__certificates__mode": "secret"}, "webhook.certificates.secret."),
        (
            {"webhook__certificates__operator__rotationOverlapSeconds": 6000000},
            "webhook.certificates.operator.caValiditySeconds",
        ),
        (
            {"webhook__certificates__operator__caRenewBeforeSeconds": 1000},
            "webhook.certificates.operator.caRenewBeforeSeconds",
        ),
    ],
)
def test_helm_refuses_bad_values_naming_the_field(
    helm: Any, sets: dict[str, Any], field: str
) -> None:
    result = template(helm, **sets)
    assert result.returncode != 0, "helm accepted bad values"
    assert field in result.stderr, result.stderr


def test_helm_test_asks_the_operators_readiness_through_the_service(helm: Any) -> None:
    shown = template(helm, extra=["--show-only", "templates/tests/readiness.yaml"])
    assert shown.returncode == 0, shown.stderr
    pod = yaml.safe_load(shown.stdout)
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["metadata"]["namespace"] == NAMESPACE, "the injector never touches this namespace"
    (container,) = pod["spec"]["containers"]
    script = container["command"][-1]
    assert f"{RELEASE}-statecar-webhook.{NAMESPACE}.svc:8080/readyz" in script
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def rendered_notes(helm: Any, tmp_path: Path, **sets: Any) -> str:
    """NOTES.txt as `helm install` prints it (rendered inside a ConfigMap of a chart copy:
    `helm template` does not print notes, and `helm install --dry-run` needs a cluster)."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    body = "".join("    " + line if line.strip() else "\n" for line in notes.splitlines(True))
    (copy / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n" + body
    )
    shown = template(
        helm, chart=copy, extra=["--show-only", "templates/notes-under-test.yaml"], **sets
    )
    assert shown.returncode == 0, shown.stderr
    return str(yaml.safe_load(shown.stdout)["data"]["notes"])


def test_the_notes_tell_how_to_annotate_a_pod_and_check_it_worked(
    helm: Any, tmp_path: Path
) -> None:
    notes = rendered_notes(helm, tmp_path)
    assert 'statecar.io/enabled: "true"' in notes
    assert "statecar.io/app-id" in notes
    assert "initContainers" in notes
    assert "kubectl get ssc" in notes
    assert "kube-system" in notes
    assert NAMESPACE in notes, "the notes say which namespaces are never injected"


@pytest.mark.parametrize("restricted", [False, True])
def test_dapr_annotations_turn_on_the_operator_webhook_and_rbac_together(
    helm: Any, restricted: bool
) -> None:
    """dapr.annotations: the operator's setting, the webhook's matchCondition and the RBAC rule
    to see Dapr's injector, each exactly the operator's own rendering of that option."""
    from statecar_operator.manifests import rbac, webhooks

    namespaces = ["shop"] if restricted else []
    sets: dict[str, Any] = {"dapr__annotations": True, **SECRET_MODE}
    if restricted:
        sets["operator__namespaces"] = namespaces
    objects = render(helm, **sets)
    assert (
        container_env(only(objects, "Deployment"))["STATECAR_OPERATOR_SIDECAR_DAPR_ANNOTATIONS"]
        == "true"
    )
    service = only(objects, "Service")["metadata"]["name"]
    mutating, _ = webhooks.build_webhook_configurations(
        ca_bundle=b"-", service_name=service, service_namespace=NAMESPACE, dapr_annotations=True
    )
    got = only(objects, "MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"]
    assert got == mutating["webhooks"][0]["matchConditions"]
    assert "dapr.io/enabled" in got[0]["expression"]
    documented = rbac.manifests(
        namespace=NAMESPACE,
        service_account=only(objects, "ServiceAccount")["metadata"]["name"],
        namespaces=namespaces,
        dapr_annotations=True,
    )
    cluster = [d["rules"] for d in documented if d["kind"] == "ClusterRole"]
    assert [only(objects, "ClusterRole")["rules"]] == cluster
    (rule,) = rbac.dapr_injector_rules()
    assert rule in cluster[0]
    # Off (the default): neither the rule nor the condition.
    plain = render(helm, **dict[str, Any](SECRET_MODE))
    assert "dapr" not in str(only(plain, "ClusterRole")["rules"])
    condition = only(plain, "MutatingWebhookConfiguration")["webhooks"][0]["matchConditions"]
    assert "dapr.io" not in condition[0]["expression"]


@pytest.mark.parametrize("restricted", [False, True])
def test_dapr_components_turn_on_the_operator_and_its_read_rule_together(
    helm: Any, restricted: bool
) -> None:
    from statecar_operator.manifests import rbac

    namespaces = ["shop", "cart"] if restricted else []
    sets: dict[str, Any] = {"dapr__components": True}
    if restricted:
        sets["operator__namespaces"] = namespaces
    objects = render(helm, **sets)
    env = container_env(only(objects, "Deployment"))
    assert env["STATECAR_OPERATOR_DAPR_COMPONENTS"] == "true"
    documented = rbac.manifests(
        namespace=NAMESPACE,
        service_account=only(objects, "ServiceAccount")["metadata"]["name"],
        webhook_secret=env.get("STATECAR_OPERATOR_WEBHOOK_SECRET"),
        namespaces=namespaces,
        dapr_components=True,
    )

    def rules(documents: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [
            (d["kind"], d["metadata"].get("namespace"), d["rules"])
            for d in documents
            if d["kind"] in ("ClusterRole", "Role")
        ]

    assert sorted(map(str, rules(objects))) == sorted(map(str, rules(documented)))
    (rule,) = rbac.DAPR_COMPONENT_RULES
    assert any(rule in r for _, _, r in rules(objects))
    plain = render(helm)
    assert container_env(only(plain, "Deployment"))["STATECAR_OPERATOR_DAPR_COMPONENTS"] == "false"
    assert not any(rule in r for _, _, r in rules(plain))


@pytest.mark.parametrize(
    ("report", "rollout"), [(True, "off"), (False, "annotated"), (True, "all")]
)
def test_stale_sidecar_values_turn_on_the_operator_and_its_rules_together(
    helm: Any, report: bool, rollout: str
) -> None:
    from statecar_operator.manifests import rbac

    objects = render(helm, staleSidecars__report=report, staleSidecars__autoRollout=rollout)
    env = container_env(only(objects, "Deployment"))
    assert env["STATECAR_OPERATOR_STALE_SIDECARS"] == str(report).lower()
    assert env["STATECAR_OPERATOR_AUTO_ROLLOUT"] == rollout
    documented = rbac.manifests(
        namespace=NAMESPACE,
        service_account=only(objects, "ServiceAccount")["metadata"]["name"],
        webhook_secret=env.get("STATECAR_OPERATOR_WEBHOOK_SECRET"),
        stale_sidecars=report,
        auto_rollout=rollout != "off",
    )
    (cluster_role,) = [d for d in documented if d["kind"] == "ClusterRole"]
    assert only(objects, "ClusterRole")["rules"] == cluster_role["rules"]
    (pods,) = rbac.POD_RULES
    assert pods in cluster_role["rules"]
    assert all((r in cluster_role["rules"]) == (rollout != "off") for r in rbac.ROLLOUT_RULES)
    plain = only(render(helm), "ClusterRole")["rules"]
    assert pods not in plain
