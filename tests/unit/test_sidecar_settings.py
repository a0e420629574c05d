"""
The sidecar's settings (statecar_sidecar.settings): read once from the environment into a frozen
object; statecar's own variables win over daprd's; a bad value names the variable.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from statecar_sidecar.settings import (
    DEFAULT_MAX_BODY_BYTES,
    SettingsError,
    SidecarSettings,
    from_environ,
)


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = from_environ({})
    assert settings == SidecarSettings(secrets={})
    assert (settings.http_port, settings.metrics_port) == (3500, 9090)
    assert settings.listen_address == "127.0.0.1"
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 4 * 1024 * 1024
    assert settings.api_token is None
    assert settings.components_path is settings.wiring_file is settings.secrets_file is None


def test_statecar_variables_win_over_daprd_ones() -> None:
    both = from_environ(
        {
            "STATECAR_HTTP_PORT": "4000",
            "DAPR_HTTP_PORT": "3600",
            "STATECAR_API_TOKEN": "ours",
            "DAPR_API_TOKEN": "theirs",
            "STATECAR_APP_ID": "orders",
            "APP_ID": "dapr-orders",
            "STATECAR_NAMESPACE": "shop",
            "NAMESPACE": "dapr-shop",
        }
    )
    assert (both.http_port, both.api_token, both.app_id, both.namespace) == (
        4000,
        "ours",
        "orders",
        "shop",
    )
    dapr_only = from_environ(
        {"DAPR_HTTP_PORT": "3600", "DAPR_API_TOKEN": "theirs", "APP_ID": "a", "NAMESPACE": "n"}
    )
    assert (dapr_only.http_port, dapr_only.api_token, dapr_only.app_id, dapr_only.namespace) == (
        3600,
        "theirs",
        "a",
        "n",
    )


def test_empty_variables_count_as_unset() -> None:
    settings = from_environ(
        {"STATECAR_HTTP_PORT": "", "DAPR_HTTP_PORT": "3600", "STATECAR_API_TOKEN": ""}
    )
    assert settings.http_port == 3600
    assert settings.api_token is None


def test_paths_lists_and_flags_are_parsed(tmp_path: Path) -> None:
    settings = from_environ(
        {
            "STATECAR_COMPONENTS_PATH": str(tmp_path / "components"),
            "STATECAR_WIRING_FILE": str(tmp_path / "components.json"),
            "STATECAR_SECRETS_FILE": str(tmp_path / "secrets.yaml"),
            "STATECAR_COMPONENTS": " orders, ,cache ",
            "STATECAR_LOG_LEVEL": "DEBUG",
            "STATECAR_LOG_JSON": "Yes",
            "STATECAR_MAX_BODY_BYTES": "1024",
        }
    )
    assert settings.components_path == tmp_path / "components"
    assert settings.wiring_file == tmp_path / "components.json"
    assert settings.secrets_file == tmp_path / "secrets.yaml"
    assert settings.components == ("orders", "cache")
    assert settings.log_level == "debug"
    assert settings.log_json is True
    assert settings.max_body_bytes == 1024
    assert from_environ({"STATECAR_LOG_JSON": "maybe"}).log_json is False


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("STATECAR_HTTP_PORT", "http", "STATECAR_HTTP_PORT must be an integer, got 'http'"),
        ("DAPR_HTTP_PORT", "-1", "DAPR_HTTP_PORT must not be negative, got -1"),
        ("STATECAR_METRICS_PORT", "9.5", "STATECAR_METRICS_PORT must be an integer"),
        ("STATECAR_MAX_BODY_BYTES", "4MiB", "STATECAR_MAX_BODY_BYTES must be an integer"),
    ],
)
def test_a_bad_number_names_the_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_environ({variable: value})


def test_tokens_are_not_among_the_local_secrets_and_not_in_the_repr() -> None:
    settings = from_environ(
        {"STATECAR_API_TOKEN": "t1", "DAPR_API_TOKEN": "t2", "REDIS_AUTH_PASSWORD": "pw"}
    )
    assert dict(settings.secrets) == {"REDIS_AUTH_PASSWORD": "pw"}
    assert "t1" not in repr(settings)
    assert "pw" not in repr(settings)


def test_settings_are_frozen_and_overrides_make_a_new_object() -> None:
    settings = from_environ({"STATECAR_HTTP_PORT": "4000", "STATECAR_APP_ID": "orders"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.http_port = 1  # type: ignore[misc]  # writing a frozen field is the point
    changed = settings.with_overrides(http_port=5000, app_id=None)
    assert (changed.http_port, changed.app_id) == (5000, "orders"), "None means not given"
    assert settings.http_port == 4000


def test_slow_client_bounds_and_the_metrics_address_come_from_the_environment() -> None:
    settings = from_environ(
        {
            "STATECAR_READ_HEADER_TIMEOUT": "2.5",
            "STATECAR_READ_BODY_TIMEOUT": "7",
            "STATECAR_MAX_CONNECTIONS": "100",
            "STATECAR_METRICS_MAX_CONNECTIONS": "8",
            "STATECAR_METRICS_ADDRESS": "::",
        }
    )
    assert (settings.read_header_timeout, settings.read_body_timeout) == (2.5, 7.0)
    assert (settings.max_connections, settings.metrics_max_connections) == (100, 8)
    assert settings.metrics_address == "::"
    defaults = from_environ({})
    assert (defaults.read_header_timeout, defaults.read_body_timeout) == (10.0, 30.0)
    assert (defaults.max_connections, defaults.metrics_max_connections) == (1024, 64)
    assert defaults.metrics_address == "0.0.0.0"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("STATECAR_READ_HEADER_TIMEOUT", "0"),
        ("STATECAR_READ_HEADER_TIMEOUT", "-1"),
        ("STATECAR_READ_BODY_TIMEOUT", "nan"),
        ("STATECAR_READ_BODY_TIMEOUT", "inf"),
        ("STATECAR_READ_BODY_TIMEOUT", "ten"),
        ("STATECAR_READ_HEADER_TIMEOUT", "٥"),
        ("STATECAR_MAX_CONNECTIONS", "0"),
        ("STATECAR_METRICS_MAX_CONNECTIONS", "many"),
    ],
)
def test_a_bad_slow_client_bound_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_environ({name: raw})


def test_record_error_codes_is_off_by_default_as_in_daprd() -> None:
    assert from_environ({}).record_error_codes is False
    assert from_environ({"STATECAR_RECORD_ERROR_CODES": "true"}).record_error_codes is True


def test_an_operators_malloc_threshold_is_not_overridden() -> None:
    from statecar_sidecar import memory

    assert memory.release_large_buffers({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False


@pytest.mark.parametrize(
    ("raw", "grace"), [(None, 5.0), ("", 5.0), ("12", 12.0), ("-1", 5.0), (" 0 ", math.inf)]
)
def test_the_graceful_shutdown_bound_is_daprds_default_unless_set(
    raw: str | None, grace: float
) -> None:
    environ = {} if raw is None else {"STATECAR_GRACEFUL_SHUTDOWN_SECONDS": raw}
    assert from_environ(environ).shutdown_grace == grace


def test_a_graceful_shutdown_bound_that_is_not_whole_seconds_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="STATECAR_GRACEFUL_SHUTDOWN_SECONDS must be a whole"):
        from_environ({"STATECAR_GRACEFUL_SHUTDOWN_SECONDS": "2.5s"})


def test_busy_polling_is_on_by_default_and_can_be_turned_off() -> None:
    assert from_environ({}).busy_poll_us == 200
    assert from_environ({"STATECAR_BUSY_POLL_US": "0"}).busy_poll_us == 0
    assert from_environ({"STATECAR_BUSY_POLL_US": "250"}).busy_poll_us == 250


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("10001", r"STATECAR_BUSY_POLL_US is in µs and at most 10000 .* or 0 to turn"),
        ("-5", "STATECAR_BUSY_POLL_US must not be negative"),
        ("100us", "STATECAR_BUSY_POLL_US must be an integer"),
    ],
)
def test_a_bad_busy_poll_window_names_the_variable_and_the_fix(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_environ({"STATECAR_BUSY_POLL_US": raw})
