"""Operator settings: read once from STATECAR_OPERATOR_* variables, with clear errors."""

from __future__ import annotations

import pytest

from statecar_operator.settings import (
    InjectorSettings,
    OperatorSettings,
    SettingsError,
    env_variables,
)


def test_defaults() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.webhook_port == 9443
    assert settings.leader_election is True
    assert settings.namespace  # from the ServiceAccount file, or "default"
    assert settings.identity  # hostname + random suffix
    assert settings.injector.http_port == 3500
    assert settings.injector.memory_limit == "256Mi"
    assert settings.injector.cpu_limit is None


def test_values_are_read_and_converted() -> None:
    settings = OperatorSettings.from_env(
        {
            "STATECAR_OPERATOR_NAMESPACE": "ops",
            "STATECAR_OPERATOR_POD_NAME": "op-0",
            "STATECAR_OPERATOR_LEADER_ELECTION": "false",
            "STATECAR_OPERATOR_RESYNC_SECONDS": "2.5",
            "STATECAR_OPERATOR_SIDECAR_IMAGE": "registry/statecar:1",
            "STATECAR_OPERATOR_SIDECAR_MEMORY_LIMIT": "",
            "STATECAR_OPERATOR_SIDECAR_HTTP_PORT": "3600",
        }
    )
    assert (settings.namespace, settings.identity) == ("ops", "op-0")
    assert settings.leader_election is False
    assert settings.resync_interval == 2.5
    assert settings.injector.image == "registry/statecar:1"
    assert settings.injector.memory_limit is None  # empty = no limit
    assert settings.injector.http_port == 3600


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("STATECAR_OPERATOR_WEBHOOK_PORT", "https", "expected an integer"),
        ("STATECAR_OPERATOR_WEBHOOK_PORT", "70000", "not a port"),
        ("STATECAR_OPERATOR_LEADER_ELECTION", "perhaps", "expected true or false"),
        ("STATECAR_OPERATOR_RENEW_DEADLINE_SECONDS", "20", "shorter than LEASE_DURATION"),
        ("STATECAR_OPERATOR_WEBHOOK_CERT", "/tls.crt", "set both WEBHOOK_CERT and WEBHOOK_KEY"),
        ("STATECAR_OPERATOR_RESYNC_SECONDS", "soon", "expected a number of seconds"),
        ("STATECAR_OPERATOR_NAMESPACES", "shop,Not_A_Namespace", "not a namespace name"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        OperatorSettings.from_env({variable: value})
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("STATECAR_OPERATOR_")


def test_injector_settings_alone() -> None:
    assert (
        InjectorSettings.from_env({"STATECAR_OPERATOR_SIDECAR_LOG_LEVEL": "debug"}).log_level
        == "debug"
    )


def test_every_setting_has_a_documented_variable() -> None:
    rows = env_variables()
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    assert "STATECAR_OPERATOR_WEBHOOK_CERT" in names
    assert "STATECAR_OPERATOR_SIDECAR_IMAGE" in names
    assert all(help_text for _, _, help_text in rows)


def test_namespaces_restrict_the_operator_and_default_to_the_whole_cluster() -> None:
    assert OperatorSettings.from_env({}).namespaces == ()
    restricted = OperatorSettings.from_env({"STATECAR_OPERATOR_NAMESPACES": " shop, cart ,shop,"})
    assert restricted.namespaces == ("cart", "shop")
