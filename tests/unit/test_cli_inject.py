"""
`statecar inject`: the webhook's pure injection applied offline to workload manifests.

`golden/inject/workloads.yaml` -> `workloads.expected.yaml` (regenerate with
`STATECAR_UPDATE_GOLDEN=1`): Deployment, StatefulSet, Job and CronJob templates are injected with
the workload's name as app id; a DaemonSet without the annotation and a Service are untouched.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from statecar_cli.inject_cli import main

GOLDEN = Path(__file__).parent / "golden" / "inject"
UPDATE = os.environ.get("STATECAR_UPDATE_GOLDEN") == "1"
EXAMPLES = Path(__file__).parents[2] / "crds" / "examples"


@pytest.fixture(autouse=True)
def fixed_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATECAR_OPERATOR_SIDECAR_IMAGE", "ghcr.io/statecar/statecar:0.1.0")
    monkeypatch.setenv("STATECAR_OPERATOR_SIDECAR_VERSION", "0.1.0")


def test_workloads_golden(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-f", str(GOLDEN / "workloads.yaml")]) == 0
    out = capsys.readouterr().out
    expected = GOLDEN / "workloads.expected.yaml"
    if UPDATE:
        expected.write_text(out)
    assert out == expected.read_text()


def by_kind(text: str) -> dict[str, Any]:
    return {
        f"{d['kind']}/{d.get('metadata', {}).get('name', '')}": d for d in yaml.safe_load_all(text)
    }


def test_templates_get_the_workload_name_as_app_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-f", str(GOLDEN / "workloads.yaml")]) == 0
    docs = by_kind(capsys.readouterr().out)

    def app_id(template: dict[str, Any]) -> str:
        env = template["spec"]["initContainers"][0]["env"]
        return str(next(e["value"] for e in env if e["name"] == "STATECAR_APP_ID"))

    assert app_id(docs["Deployment/checkout"]["spec"]["template"]) == "checkout"
    assert app_id(docs["StatefulSet/cart"]["spec"]["template"]) == "cart"
    assert app_id(docs["Job/migrate"]["spec"]["template"]) == "migrate"
    assert app_id(docs["CronJob/nightly"]["spec"]["jobTemplate"]["spec"]["template"]) == "nightly"
    assert "initContainers" not in docs["DaemonSet/agent"]["spec"]["template"]["spec"]
    assert app_id(docs["List/"]["items"][0]) == "debugger"


def test_components_come_from_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "web", "annotations": {"statecar.io/enabled": "true"}},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            }
        )
    )
    assert main(["-f", str(manifest), "--components-dir", str(EXAMPLES), "-n", "shop"]) == 0
    pod = yaml.safe_load(capsys.readouterr().out)
    assert pod["spec"]["initContainers"][0]["name"] == "statecar"


def test_stdin_and_a_skip_explained_on_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"statecar.io/app-id": "web"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(pod)))
    assert main(["-f", "-"]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out) == pod
    assert "Pod/web: not injected (NotEnabled)" in captured.err


def test_without_components_an_opted_in_pod_is_injected_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As the webhook does: a pod may be applied before its components."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "annotations": {"statecar.io/enabled": "true"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]},
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(pod)))
    assert main(["-f", "-"]) == 0
    captured = capsys.readouterr()
    injected = yaml.safe_load(captured.out)
    assert injected["spec"]["initContainers"][0]["name"] == "statecar"
    assert (
        "Pod/web: warning: no valid StateStoreComponent in namespace 'default' yet" in captured.err
    )


def test_a_bad_annotation_fails_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": "web",
                    "annotations": {"statecar.io/enabled": "true", "statecar.io/http-port": "x"},
                },
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            }
        )
    )
    assert main(["-f", str(manifest), "--components-dir", str(EXAMPLES)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        "Pod/web: statecar cannot inject this pod: statecar.io/http-port: 'x' is not a port number"
        in captured.err
    )


def test_unreadable_input_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-f", "/nonexistent/file.yaml"]) == 1
    assert "cannot read /nonexistent/file.yaml" in capsys.readouterr().err


def test_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    assert main(["-f", str(GOLDEN / "workloads.yaml"), "-o", str(out)]) == 0
    assert "statecar.io/injected" in out.read_text()
