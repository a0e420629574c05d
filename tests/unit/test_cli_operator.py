"""`statecar operator` subcommands that need no cluster: RBAC, webhook configurations, env help."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from statecar_cli.operator_cli import run


def test_rbac_prints_bindable_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["rbac", "--namespace", "ops", "--service-account", "op"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]


def test_webhook_config_prints_both_configurations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n...\n")
    assert (
        run(
            [
                "webhook-config",
                "--url",
                "https://127.0.0.1:9443",
                "--ca-file",
                str(ca),
                "--exclude-namespace",
                "ops",
            ]
        )
        == 0
    )
    mutating, validating = yaml.safe_load_all(capsys.readouterr().out)
    assert mutating["kind"] == "MutatingWebhookConfiguration"
    assert validating["kind"] == "ValidatingWebhookConfiguration"
    assert "ops" in mutating["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]


def test_help_env_lists_the_variables(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help-env"]) == 0
    assert "STATECAR_OPERATOR_WEBHOOK_PORT" in capsys.readouterr().out


def test_a_bad_setting_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATECAR_OPERATOR_WEBHOOK_PORT", "nope")
    assert run([]) == 2
    assert "STATECAR_OPERATOR_WEBHOOK_PORT: expected an integer" in capsys.readouterr().err
