"""
The hostile-input tier for the injector (issue 8, item 7): what it cannot make safe is refused,
by the webhook and by `statecar inject` alike, and no manifest makes `statecar inject` print a
traceback.

The same pods sent to the real API server are refused by the webhook over TLS in
tests/e2e/test_operator_e2e/test_6b_hostile_admission.py (it needs that package's operator).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.test_operator_handlers import memo, mutate  # noqa: F401  # `memo` is a fixture

from statecar_cli.inject_cli import main
from statecar_contract.components import parse_component
from statecar_operator.injection.offline import MAX_DEPTH, ManifestError, inject_documents
from statecar_operator.injection.plan import InjectionError, plan_injection
from statecar_operator.memo import Memo
from statecar_operator.settings import InjectorSettings

STATECAR = [sys.executable, "-m", "statecar_cli.main"]
SETTINGS = InjectorSettings(image="statecar:test", version="0.1.0")

COMPONENT: dict[str, Any] = {
    "apiVersion": "statecar.io/v1alpha1",
    "kind": "StateStoreComponent",
    "metadata": {"name": "orders", "namespace": "shop"},
    "spec": {"type": "state.in-memory"},
}


def pod(annotations: Any = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {"statecar.io/enabled": "true"} if annotations is None else annotations,
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}], **spec},
    }


def with_annotations(**extra: Any) -> dict[str, Any]:
    return pod({"statecar.io/enabled": "true", **extra})


def run_inject(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(COMPONENT) + "---\n" + text)
    code = main(["-f", str(manifest)])
    captured = capsys.readouterr()
    if code != 0:
        assert captured.out == "", "nothing is printed when a manifest is refused"
    return code, captured.err


def deep_block_yaml(depth: int) -> str:
    return "a:\n" + "".join("  " * i + "b:\n" for i in range(1, depth))


# --- statecar inject: a one-line error, never a traceback --------------------------------------

MALFORMED = {
    "annotations-list": (
        yaml.safe_dump(pod(["statecar.io/enabled", "true"])),
        "Pod/web: statecar cannot inject this pod: metadata.annotations: must be a map",
    ),
    "env-string": (
        yaml.safe_dump(pod(containers=[{"name": "app", "image": "x", "env": "x"}])),
        "spec.containers[0].env: must be a list of maps, not a string",
    ),
    "deep-block-10k": (deep_block_yaml(10_000), f"nests deeper than {MAX_DEPTH} levels"),
    "deep-flow-10k": ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", "nests deeper than"),
    "deep-150": (
        "a: " + "[" * 150 + "]" * 150 + "\n",
        f"document 2 nests deeper than {MAX_DEPTH} levels",
    ),
    "self-alias": ("a: &a [*a]\n", "contains itself"),
    "metadata-list": ("kind: Pod\nmetadata: [x]\n", "metadata: must be a map, not a list"),
    "spec-string": (
        "kind: Pod\nmetadata: {name: web, annotations: {statecar.io/enabled: 'true'}}\nspec: x\n",
        "spec: must be a map, not a string",
    ),
    "containers-map": (
        yaml.safe_dump(pod(containers={"name": "app"})),
        "spec.containers: must be a list, not a map",
    ),
    "container-name-number": (
        yaml.safe_dump(pod(containers=[{"name": 5, "image": "x"}])),
        "spec.containers[0].name: must be a string, not a number",
    ),
    "ports-entries-strings": (
        yaml.safe_dump(pod(containers=[{"name": "app", "image": "x", "ports": ["80"]}])),
        "spec.containers[0].ports: every entry must be a map",
    ),
    "labels-list": (
        "kind: Pod\nmetadata: {name: web, labels: [a], annotations: {statecar.io/enabled: 'true'}}\n",
        "metadata.labels: must be a map",
    ),
    "list-items-number": ("kind: List\nitems: 5\n", "List/?: items must be a list of objects"),
    "broken-yaml": (
        "kind: Pod\nmetadata: {name: a\n",
        "is not YAML: line 11, column 1: expected ',' or '}'",
    ),
    "null-app-id": (
        "kind: Pod\nmetadata: {name: web, annotations: {statecar.io/enabled: 'true', "
        "statecar.io/app-id: null}}\nspec: {containers: [{name: app, image: x}]}\n",
        "statecar.io/app-id: has no value (null); give it one, quoted, or remove it",
    ),
    "unquoted-bool": (
        "kind: Pod\nmetadata: {name: web, annotations: {statecar.io/enabled: true}}\n"
        "spec: {containers: [{name: app, image: x}]}\n",
        "statecar.io/enabled: true is a boolean, but annotation values are strings; quote it "
        '(statecar.io/enabled: "true")',
    ),
}


@pytest.mark.parametrize(("text", "fragment"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_manifest_is_one_line_of_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    code, err = run_inject(tmp_path, text, capsys)
    assert code == 1
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith("statecar inject: "), err
    assert fragment in err, err


def test_not_utf8_is_one_line_of_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "binary.yaml"
    manifest.write_bytes(b"\xff\xfe\x00kind: Pod\n")
    assert main(["-f", str(manifest)]) == 1
    assert capsys.readouterr().err == f"statecar inject: {manifest} is not UTF-8 text (byte 0)\n"


def test_the_command_itself_prints_one_line_for_10k_deep_yaml() -> None:
    """The console entry point, as a user runs it: exit 1 and one line, whatever the stack."""
    for text in (deep_block_yaml(10_000), yaml.safe_dump(pod(["statecar.io/enabled"]))):
        proc = subprocess.run(
            [*STATECAR, "inject", "-f", "-"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout == ""
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_billion_laughs_document_costs_its_size_not_its_expansion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 12):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    started = time.monotonic()
    code, err = run_inject(tmp_path, "\n".join(lines) + "\n", capsys)
    assert code == 0, err
    assert time.monotonic() - started < 10


def test_a_document_just_within_the_depth_bound_is_injected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nested: Any = "leaf"
    for _ in range(MAX_DEPTH - 8):
        nested = [nested]
    manifest = pod(containers=[{"name": "app", "image": "x", "args": nested}])
    code, err = run_inject(tmp_path, yaml.safe_dump(manifest), capsys)
    assert code == 0, err


# --- offline agrees with the webhook ------------------------------------------------------------

REFUSED = {
    "listen-address": with_annotations(**{"statecar.io/env": "STATECAR_LISTEN_ADDRESS=0.0.0.0"}),
    "dapr-app-id": with_annotations(**{"statecar.io/env": "DAPR_APP_ID=x"}),
    "secrets-file": with_annotations(**{"statecar.io/env": "STATECAR_SECRETS_FILE=/s"}),
    "components-path": with_annotations(**{"statecar.io/env": "STATECAR_COMPONENTS_PATH=/c"}),
    "ld-preload": with_annotations(**{"statecar.io/env": "LD_PRELOAD=/evil.so"}),
    "init-statecar": pod(
        initContainers=[{"name": "statecar", "image": "example/seed:1", "command": ["seed"]}]
    ),
    "cpu-400-nines": with_annotations(**{"statecar.io/sidecar-cpu-limit": "9" * 400}),
    "memory-1e400": with_annotations(**{"statecar.io/sidecar-memory-limit": "1e400"}),
    "arabic-indic-port": with_annotations(**{"statecar.io/http-port": "\u0663\u0665\u0660\u0660"}),
    "metrics-port-80": with_annotations(**{"statecar.io/metrics-port": "80"}),
    "empty-app-id": with_annotations(**{"statecar.io/app-id": ""}),
    "host-network": pod(hostNetwork=True),
}


@pytest.mark.parametrize("manifest", REFUSED.values(), ids=REFUSED.keys())
async def test_the_webhook_and_statecar_inject_refuse_with_the_same_reason(
    memo: Memo,  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    manifest: dict[str, Any],
) -> None:
    with pytest.raises(kopf.AdmissionError) as denied:
        await mutate(memo, copy.deepcopy(manifest))
    assert denied.value.code == 400
    reason = str(denied.value)
    assert reason.startswith("statecar cannot inject this pod: ")

    code, err = run_inject(tmp_path, yaml.safe_dump(manifest), capsys)
    assert code == 1
    assert err == f"statecar inject: Pod/web: {reason}\n"


# --- no manifest makes the injector fail but with ManifestError --------------------------------

HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["statecar", "\u0663", "1e400", "9" * 50, "-1", "0.0001", "64m"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

BASE = pod(
    {
        "statecar.io/enabled": "true",
        "statecar.io/app-id": "web",
        "statecar.io/http-port": "3600",
        "statecar.io/env": "TZ=UTC",
        "statecar.io/api-token-secret": "tok",
        "statecar.io/sidecar-cpu-limit": "1",
    },
    initContainers=[{"name": "setup", "image": "x", "env": [{"name": "A", "value": "1"}]}],
    volumes=[{"name": "data", "emptyDir": {}}],
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


PATHS = [p for p in _paths(BASE) if p] + [
    ("spec", "hostNetwork"),
    ("metadata", "labels"),
    ("spec", "containers", 0, "ports"),
    ("spec", "containers", 0, "env"),
    ("metadata", "annotations", "statecar.io/metrics-port"),
    ("metadata", "annotations", "statecar.io/http-max-request-size"),
    ("metadata", "annotations", "statecar.io/components"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), HOSTILE_VALUES), min_size=1, max_size=4))
def test_any_mangled_pod_is_injected_or_refused_with_a_manifest_error(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    document = copy.deepcopy(BASE)
    for path, value in changes:
        target: Any = document
        for key in path[:-1]:
            if (isinstance(target, dict) and key in target) or (
                isinstance(target, list) and isinstance(key, int) and key < len(target)
            ):
                target = target[key]
            else:
                break
        else:
            last = path[-1]
            if isinstance(target, dict) or (
                isinstance(target, list) and isinstance(last, int) and last < len(target)
            ):
                target[last] = value
    try:
        injected, _ = inject_documents(
            [document], components=[parse_component(COMPONENT)], settings=SETTINGS
        )
    except ManifestError:
        return
    yaml.safe_dump_all(injected)  # what the command prints


def test_a_pod_with_thousands_of_problems_is_refused_fast_with_a_bounded_message() -> None:
    """The annotations' 256 KiB of hostile items: linear time, the first 20 problems and a count
    (the message becomes an admission denial and an Event)."""
    annotations = {
        "statecar.io/enabled": "true",
        "statecar.io/env": ",".join(f"X{i}=1" for i in range(15_000)),
        "statecar.io/components": ",".join(f"c{i}" for i in range(15_000)),
        **{f"statecar.io/zz{i}": "1" for i in range(2_000)},
    }
    started = time.monotonic()
    with pytest.raises(InjectionError) as refused:
        plan_injection(
            pod(annotations),
            namespace="shop",
            components_in_namespace=[parse_component(COMPONENT)],
            settings=SETTINGS,
        )
    assert time.monotonic() - started < 2
    assert len(refused.value.problems) == 17_000
    message = str(refused.value)
    assert message.endswith("; and 16980 more problems")
    assert len(message) < 10_000
