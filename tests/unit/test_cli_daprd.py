"""
`statecar daprd`'s command line read as daprd's Go `flag` package reads it, daprd's Configuration
files, and a resources folder read as daprd reads it (statecar_sidecar.loader): other component
types skipped, local secret stores, `spec.ignoreErrors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path

import pytest

from statecar_cli.daprd_cli import FlagError, Parsed, parse_flags, settings_from
from statecar_contract.components import ComponentError
from statecar_sidecar.loader import load_folders
from statecar_sidecar.runtime import ComponentRuntime, Reloader
from statecar_sidecar.settings import SidecarSettings


def settings(argv: list[str], environ: dict[str, str] | None = None) -> SidecarSettings:
    result, _notes = settings_from(parse_flags(argv), environ or {})
    assert isinstance(result, SidecarSettings)
    return result


def test_both_value_forms_and_both_dash_forms_are_read_as_go_reads_them() -> None:
    parsed = parse_flags(
        ["-app-id", "a", "--dapr-http-port=3600", "-dapr-grpc-port=50011", "--metrics-port", "9"]
    )
    assert parsed.values == {
        "app-id": "a",
        "dapr-http-port": "3600",
        "dapr-grpc-port": "50011",
        "metrics-port": "9",
    }


def test_a_boolean_takes_no_separate_value_and_the_first_non_flag_ends_the_flags() -> None:
    parsed = parse_flags(["--log-as-json", "false", "--app-id", "x"])
    assert parsed.values == {"log-as-json": True}
    assert parsed.rest == ["false", "--app-id", "x"]
    assert parse_flags(["--log-as-json=false"]).values == {"log-as-json": False}
    assert parse_flags(["--", "--app-id", "x"]).rest == ["--app-id", "x"]


def test_a_negative_number_is_a_value_not_a_flag() -> None:
    parsed = parse_flags(["--app-max-concurrency", "-1", "--profile-port", "-1"])
    assert parsed.values == {"app-max-concurrency": -1, "profile-port": "-1"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--no-such-flag"], "flag provided but not defined: -no-such-flag"),
        (["--app-id"], "flag needs an argument: -app-id"),
        (["---app-id", "x"], "bad flag syntax"),
        (["--log-as-json=maybe"], "invalid boolean value"),
        (["--app-max-concurrency", "many"], "invalid value"),
    ],
)
def test_a_command_line_daprd_refuses_is_refused(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message):
        parse_flags(argv)


def test_resources_paths_repeat_and_components_path_is_their_old_name(tmp_path: Path) -> None:
    many = settings(["--resources-path", "a", "--resources-path=b", "-resources-path", "c"])
    assert many.components_paths == (Path("a"), Path("b"), Path("c"))
    assert settings(["--components-path", "old"]).components_paths == (Path("old"),)


def test_the_served_flags_reach_the_settings() -> None:
    served = settings(
        [
            "--app-id=orders",
            "--dapr-http-port=3601",
            "--dapr-grpc-port=50002",
            "--metrics-port=9091",
            "--metrics-listen-address=127.0.0.1",
            "--dapr-listen-addresses=[::1]",
            "--log-level=warn",
            "--log-as-json",
            "--enable-api-logging",
            "--dapr-graceful-shutdown-seconds=9",
            "--max-body-size=16Mi",
            "--mode=standalone",
        ],
        {"DAPR_API_TOKEN": "t0k3n", "NAMESPACE": "shop", "DAPR_HOST_IP": "127.0.0.1"},
    )
    assert (served.app_id, served.http_port, served.grpc_port, served.metrics_port) == (
        "orders",
        3601,
        50002,
        9091,
    )
    assert (served.listen_address, served.metrics_address) == ("::1", "127.0.0.1")
    assert (served.log_level, served.log_json, served.api_logging) == ("warning", True, True)
    assert served.shutdown_grace == 9
    assert served.max_body_bytes == 16 * 1024 * 1024
    assert (served.api_token, served.namespace) == ("t0k3n", "shop")
    assert served.refuse_failed_components
    assert settings(["--dapr-http-max-request-size", "8"]).max_body_bytes == 8 * 1024 * 1024
    assert settings(["--enable-metrics=false", "--metrics-port", "9"]).metrics_port == 0
    both = settings(["--dapr-listen-addresses", "[::1],127.0.0.1,[::1]"])
    assert (both.listen_address, both.extra_listen_addresses) == ("::1", ("127.0.0.1",))


def test_flags_that_do_not_apply_are_accepted_and_named_in_a_note() -> None:
    _settings, notes = settings_from(
        parse_flags(["--app-port", "6000", "--placement-host-address", "h:1", "--enable-mtls"]),
        {},
    )
    assert any("--app-port" in n and "--enable-mtls" in n for n in notes)


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--mode", "kubernetes"], "runs standalone"),
        (["--unix-domain-socket", "/tmp/d"], "TCP only"),
        (["--max-body-size", "-1"], "always bounds request bodies"),
        (["--log-level", "loud"], "debug, info"),
    ],
)
def test_a_value_statecar_cannot_honour_is_refused_with_the_reason(
    argv: list[str], reason: str
) -> None:
    with pytest.raises(FlagError, match=reason):
        settings(argv)


def config(tmp_path: Path, name: str, spec: str) -> str:
    path = tmp_path / name
    path.write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\nspec:\n" + spec,
        encoding="utf-8",
    )
    return str(path)


def test_configs_apply_in_order_and_name_resolution_is_accepted(tmp_path: Path) -> None:
    on = config(tmp_path, "on.yaml", "  metrics: {recordErrorCodes: true}\n")
    off = config(
        tmp_path,
        "off.yaml",
        "  metrics: {recordErrorCodes: false}\n  nameResolution: {component: kubernetes}\n",
    )
    assert settings(["--config", off, "--config", on]).record_error_codes is True
    assert settings(["--config", on, "--config", off]).record_error_codes is False
    assert settings([]).record_error_codes is False


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("  api: {allowed: [{name: invoke, version: v1}]}\n", r"spec\.api"),
        ("  httpPipeline: {handlers: [{name: x, type: middleware.http.uppercase}]}\n", "Pipeline"),
        ("  components: {deny: [state.redis]}\n", r"components\.deny"),
        ("  secrets: {scopes: [{storeName: s, defaultAccess: deny}]}\n", r"secrets\.scopes"),
    ],
)
def test_a_config_section_that_would_change_what_is_served_is_refused(
    tmp_path: Path, spec: str, reason: str
) -> None:
    with pytest.raises(FlagError, match=reason):
        settings(["--config", config(tmp_path, "c.yaml", spec)])
    with pytest.raises(FlagError, match="cannot read"):
        settings(["--config", str(tmp_path / "missing.yaml")])


def test_help_and_version_do_not_serve() -> None:
    with pytest.raises(SystemExit):
        parse_flags(["-h"])
    assert parse_flags(["--version"]).values == {"version": True}
    assert isinstance(parse_flags([]), Parsed)


# --- the resources folder ---------------------------------------------------------------------


def dapr(name: str, type_: str, metadata: str = "", extra: str = "") -> str:
    items = f"  metadata:\n{metadata}\n" if metadata else "  metadata: []\n"
    return (
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\n"
        f"spec:\n  type: {type_}\n  version: v1\n{extra}{items}"
    )


def test_other_component_types_are_skipped_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "all.yaml").write_text(
        "\n---\n".join(
            [
                dapr("store", "state.in-memory", "  - {name: actorStateStore, value: 'true'}"),
                dapr("bus", "pubsub.redis", "  - {name: redisHost, value: x}"),
                dapr("cron", "bindings.cron", "  - {name: schedule, value: '@every 1s'}"),
                "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n",
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\n",
            ]
        ),
        encoding="utf-8",
    )
    loaded = load_folders([tmp_path])
    assert [c.name for c in loaded.components] == ["store"]
    assert loaded.failed == ()
    assert loaded.skipped == (("bus", "pubsub.redis"), ("cron", "bindings.cron"))

    async def reload_twice() -> None:
        runtime = ComponentRuntime(app_id="a", namespace=None)
        reloader = Reloader(runtime, lambda: load_folders([tmp_path]), 1.0)
        await reloader.load_initial()
        await reloader.load_initial()  # the same folder again: no new line
        await runtime.close()

    with caplog.at_level(logging.INFO, "statecar.runtime"):
        asyncio.run(reload_twice())
    lines = [r.getMessage() for r in caplog.records if "not state stores" in r.getMessage()]
    assert len(lines) == 1
    assert "bus (pubsub.redis)" in lines[0]
    assert "cron (bindings.cron)" in lines[0]


def test_components_come_from_every_folder_and_a_name_twice_across_folders_fails(
    tmp_path: Path,
) -> None:
    for folder, name in (("one", "a"), ("two", "b"), ("three", "a")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "c.yaml").write_text(dapr(name, "state.in-memory"), encoding="utf-8")
    loaded = load_folders([tmp_path / "one", tmp_path / "two", tmp_path / "three"])
    assert sorted(c.name for c in loaded.components) == ["a", "b"]
    assert "defined twice" in loaded.failed[0].reason


def test_ignore_errors_true_skips_a_component_statecar_cannot_serve_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "c.yaml").write_text(
        dapr("ok", "state.in-memory")
        + "---\n"
        + dapr("cass", "state.cassandra", "  - {name: hosts, value: h}", "  ignoreErrors: true\n")
        + "---\n"
        + dapr("strict", "state.cassandra", "  - {name: hosts, value: h}"),
        encoding="utf-8",
    )
    loaded = load_folders([tmp_path])
    assert [c.name for c in loaded.components] == ["ok"]
    assert [f.name for f in loaded.ignored] == ["cass"]
    assert [(f.name, f.fatal) for f in loaded.failed] == [("strict", True)]

    async def load() -> None:
        runtime = ComponentRuntime(app_id="a", namespace=None)
        await Reloader(runtime, lambda: loaded, 1.0).load_initial()
        assert set(runtime.stores) == {"ok"}
        await runtime.close()

    with caplog.at_level(logging.WARNING, "statecar.runtime"):
        asyncio.run(load())
    assert any("cass skipped (spec.ignoreErrors is true)" in r.getMessage() for r in caplog.records)


def test_without_ignore_errors_daprd_mode_refuses_to_start_and_sidecar_mode_serves_the_rest(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.yaml").write_text(
        dapr("ok", "state.in-memory") + "---\n" + dapr("bad", "state.cassandra"), encoding="utf-8"
    )

    async def start(refuse: bool) -> ComponentRuntime:
        runtime = ComponentRuntime(app_id="a", namespace=None)
        await Reloader(
            runtime, lambda: load_folders([tmp_path]), 1.0, refuse_failed=refuse
        ).load_initial()
        return runtime

    with pytest.raises(ComponentError, match=r"spec\.ignoreErrors is not true"):
        asyncio.run(start(True))
    runtime = asyncio.run(start(False))
    assert set(runtime.stores) == {"ok"}
    asyncio.run(runtime.close())


def sqlite_with_secret(folder: Path, ref: str, store: str = "local") -> None:
    (folder / "db.yaml").write_text(
        dapr(
            "db",
            "state.sqlite",
            f"  - name: connectionString\n    secretKeyRef: {ref}\n",
        )
        + f"auth:\n  secretStore: {store}\n",
        encoding="utf-8",
    )


def test_a_local_file_secret_store_resolves_nested_keys_with_its_separator(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db": {"path": str(tmp_path / "a.db")}}), encoding="utf-8")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "local.yaml").write_text(
        dapr(
            "local",
            "secretstores.local.file",
            f"  - {{name: secretsFile, value: '{secrets}'}}\n  - {{name: nestedSeparator, value: '.'}}",
        ),
        encoding="utf-8",
    )
    sqlite_with_secret(tmp_path / "res", "{name: db.path, key: db.path}")
    loaded = load_folders([tmp_path / "res"])
    assert loaded.failed == ()
    assert loaded.components[0].metadata["connectionString"] == str(tmp_path / "a.db")


def test_a_multi_valued_local_file_store_keeps_each_top_level_key_a_secret(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"db": {"path": str(tmp_path / "b.db")}}), encoding="utf-8")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "local.yaml").write_text(
        dapr(
            "local",
            "secretstores.local.file",
            f"  - {{name: secretsFile, value: '{secrets}'}}\n  - {{name: multiValued, value: 'true'}}",
        ),
        encoding="utf-8",
    )
    sqlite_with_secret(tmp_path / "res", "{name: db, key: path}")
    loaded = load_folders([tmp_path / "res"])
    assert loaded.failed == ()
    assert loaded.components[0].metadata["connectionString"] == str(tmp_path / "b.db")
    # Single-valued, the same file names the secret "db:path", not "db".
    (tmp_path / "res" / "local.yaml").write_text(
        dapr("local", "secretstores.local.file", f"  - {{name: secretsFile, value: '{secrets}'}}"),
        encoding="utf-8",
    )
    assert "has no secret 'db'" in load_folders([tmp_path / "res"]).failed[0].reason


def test_a_local_env_secret_store_reads_the_variable_named_by_the_secret(tmp_path: Path) -> None:
    (tmp_path / "env.yaml").write_text(dapr("envstore", "secretstores.local.env"), encoding="utf-8")
    sqlite_with_secret(tmp_path, "{name: DB_PATH, key: DB_PATH}", "envstore")
    loaded = load_folders([tmp_path], environ={"DB_PATH": str(tmp_path / "c.db")})
    assert loaded.components[0].metadata["connectionString"] == str(tmp_path / "c.db")
    # As daprd, a secretKeyRef without a key reads the key named like the secret.
    sqlite_with_secret(tmp_path, "{name: DB_PATH}", "envstore")
    loaded = load_folders([tmp_path], environ={"DB_PATH": str(tmp_path / "d.db")})
    assert loaded.components[0].metadata["connectionString"] == str(tmp_path / "d.db")
    sqlite_with_secret(tmp_path, "{name: DB_PATH, key: DB_PATH}", "envstore")
    missing = load_folders([tmp_path], environ={})
    assert (
        "secret store 'envstore' (secretstores.local.env) has no secret" in missing.failed[0].reason
    )
    sqlite_with_secret(tmp_path, "{name: DB_PATH, key: DB_PATH}", "nowhere")
    assert "no secret store named 'nowhere'" in load_folders([tmp_path]).failed[0].reason


def test_every_daprd_flag_is_in_the_documentation_table() -> None:
    from statecar_cli.daprd_cli import FLAGS

    doc = (Path(__file__).parents[2] / "docs" / "daprd.md").read_text(encoding="utf-8")
    rows = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `--")}
    assert rows == {f"--{name}" for name in FLAGS}


def test_statecar_daprd_is_a_subcommand_that_exits_2_on_a_bad_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from statecar_cli.main import main

    assert main(["daprd", "--version"]) == 0
    assert "statecar" in capsys.readouterr().out
    assert main(["daprd", "-help"]) == 0
    assert "-resources-path" in capsys.readouterr().err
    assert main(["daprd", "--no-such-flag"]) == 2
    assert "flag provided but not defined: -no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "grace"),
    [("9", 9.0), ("-1", 5.0), ("-30", 5.0), ("0", math.inf)],
)
def test_the_graceful_shutdown_bound_reads_as_daprd_reads_it(value: str, grace: float) -> None:
    """dapr pkg/runtime/config.go: negative is the default (5 s), 0 is no bound."""
    assert settings([f"--dapr-graceful-shutdown-seconds={value}"]).shutdown_grace == grace
    assert settings([]).shutdown_grace == 5.0


def test_statecar_sidecar_takes_the_same_bound_as_graceful_shutdown_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from statecar_cli import main

    monkeypatch.delenv("STATECAR_GRACEFUL_SHUTDOWN_SECONDS", raising=False)
    parser = main.build_parser()
    chosen = main._settings(parser.parse_args(["sidecar", "--graceful-shutdown-seconds", "2"]))
    assert isinstance(chosen, SidecarSettings)
    assert chosen.shutdown_grace == 2.0
    default = main._settings(parser.parse_args(["sidecar"]))
    assert isinstance(default, SidecarSettings)
    assert default.shutdown_grace == 5.0
