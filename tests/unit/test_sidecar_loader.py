"""
Where the sidecar's components come from (statecar_sidecar.loader): a folder of YAML files, with
local secrets from a secrets file or the environment, or the operator's wiring file. Every error
names the file and the field, and a component that fails is reported alone: the others load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from statecar_contract import wiring
from statecar_contract.components import ComponentError, ResolvedComponent, SecretKeyRef
from statecar_sidecar.loader import (
    FailedComponent,
    LoadedComponents,
    load_folder,
    load_wiring_file,
    secret_env_name,
    stat_fingerprint,
)


def component(name: str, type_: str = "state.in-memory", extra: str = "") -> str:
    return (
        "apiVersion: statecar.io/v1alpha1\nkind: StateStoreComponent\n"
        f"metadata: {{name: {name}}}\nspec:\n  type: {type_}\n{extra}"
    )


SQLITE_WITH_SECRET = component(
    "db",
    "state.sqlite",
    "  metadata:\n  - name: connectionString\n    secretKeyRef: {name: db-file, key: path}\n",
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "components"
    path.mkdir()
    return path


def test_every_state_component_of_every_yaml_file(folder: Path) -> None:
    (folder / "a.yaml").write_text(component("a") + "---\n" + component("b"))
    (folder / "c.yml").write_text(component("c"))
    (folder / "d.json").write_text(
        '{"apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": "d"},'
        ' "spec": {"type": "state.in-memory", "version": "v1", "metadata": []}}'
    )
    (folder / "notes.txt").write_text(component("ignored"))
    (folder / "other.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    loaded = load_folder(folder)
    assert [c.name for c in loaded.components] == ["a", "b", "c", "d"]


def test_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="components path: is not a folder"):
        load_folder(tmp_path / "nowhere")


def test_invalid_yaml_names_the_file_and_the_other_files_still_load(folder: Path) -> None:
    (folder / "broken.yaml").write_text("spec: [unclosed\n")
    (folder / "good.yaml").write_text(component("good"))
    loaded = load_folder(folder)
    assert [c.name for c in loaded.components] == ["good"]
    [failed] = loaded.failed
    assert failed.name is None  # no name could be read: the file stands for it
    assert failed.key == failed.source == str(folder / "broken.yaml")
    assert re.search(r"broken\.yaml: \(yaml\): is not valid YAML", failed.reason)


def test_a_bad_field_names_the_component_the_file_the_field_and_the_fix(folder: Path) -> None:
    (folder / "orders.yaml").write_text(component("orders", extra="  concurrency: first\n"))
    (folder / "other.yaml").write_text(component("other"))
    loaded = load_folder(folder)
    assert [c.name for c in loaded.components] == ["other"]
    [failed] = loaded.failed
    assert (failed.name, failed.type, failed.source) == (
        "orders",
        "state.in-memory",
        str(folder / "orders.yaml"),
    )
    assert failed.error.field == "spec.concurrency"
    assert "must be one of first-write, last-write, got 'first'" in failed.reason


@pytest.mark.parametrize(
    ("component_type", "metadata", "field"),
    [
        (
            "state.redis",
            "{name: redisHost, value: localhost}, {name: redisPort, value: abc}",
            "redisPort",
        ),
        ("state.redis", "{name: redisHost, value: '[::1'}", "redisHost"),
        (
            "state.postgresql",
            "{name: connectionString, value: 'postgres://u:p@127.0.0.1:abc/db'}",
            "connectionString",
        ),
        (
            "state.postgresql",
            "{name: connectionString, value: 'host=db port=abc user=u'}",
            "connectionString",
        ),
        (
            "state.postgresql",
            "{name: connectionString, value: 'postgres://u:p@[::1/db'}",
            "connectionString",
        ),
    ],
)
def test_a_bad_address_fails_its_component_alone(
    folder: Path, component_type: str, metadata: str, field: str
) -> None:
    """Issue 8 item 1: these took every store down with "invalid literal for int()"."""
    (folder / "bad.yaml").write_text(
        component("bad", component_type, f"  metadata: [{metadata}]\n")
    )
    (folder / "good.yaml").write_text(component("good"))
    loaded = load_folder(folder)
    assert [c.name for c in loaded.components] == ["good"]
    [failed] = loaded.failed
    assert failed.name == "bad"
    assert failed.reason.startswith(f"{folder / 'bad.yaml'}: spec.metadata.{field}: ")
    assert "invalid literal" not in failed.reason


def test_a_name_defined_twice_is_refused(folder: Path) -> None:
    (folder / "a.yaml").write_text(component("same"))
    (folder / "b.yaml").write_text(component("same"))
    loaded = load_folder(folder)
    assert [(c.name, loaded.sources[c.name]) for c in loaded.components] == [
        ("same", str(folder / "a.yaml"))
    ]
    [failed] = loaded.failed
    assert re.search(r"b\.yaml: metadata\.name: .*'same' is defined twice", failed.reason)


def test_secret_env_names_are_upper_case_with_underscores() -> None:
    assert secret_env_name(SecretKeyRef("redis-auth", "password")) == "REDIS_AUTH_PASSWORD"
    assert secret_env_name(SecretKeyRef("db.file", "the path")) == "DB_FILE_THE_PATH"


def test_a_secret_comes_from_the_secrets_file_before_the_environment(
    folder: Path, tmp_path: Path
) -> None:
    (folder / "db.yaml").write_text(SQLITE_WITH_SECRET)
    from_env = load_folder(folder, environ={"DB_FILE_PATH": "/env.db"})
    assert from_env.components[0].metadata["connectionString"] == "/env.db"
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("db-file: {path: /file.db}\n")
    from_file = load_folder(folder, secrets_file=secrets, environ={"DB_FILE_PATH": "/env.db"})
    assert from_file.components[0].metadata["connectionString"] == "/file.db"


def _only_failure(loaded: LoadedComponents) -> FailedComponent:
    [failed] = loaded.failed
    return failed


def test_a_missing_secret_says_where_it_was_looked_for(folder: Path, tmp_path: Path) -> None:
    (folder / "db.yaml").write_text(SQLITE_WITH_SECRET)
    assert "the environment variable DB_FILE_PATH" in _only_failure(load_folder(folder)).reason
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("{}\n")
    failed = _only_failure(load_folder(folder, secrets_file=secrets))
    assert failed.name == "db"
    assert f"the secrets file {secrets} or the environment" in failed.reason


def test_a_secrets_file_of_the_wrong_shape_fails_the_components_that_use_it(
    folder: Path, tmp_path: Path
) -> None:
    (folder / "db.yaml").write_text(SQLITE_WITH_SECRET)
    (folder / "plain.yaml").write_text(component("plain"))
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("db-file: /file.db\n")
    loaded = load_folder(folder, secrets_file=secrets)
    assert [c.name for c in loaded.components] == ["plain"]
    assert "secrets file: must map secret names to" in _only_failure(loaded).reason


def test_the_fingerprint_moves_with_the_files_and_the_secrets(folder: Path, tmp_path: Path) -> None:
    (folder / "a.yaml").write_text(component("a"))
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("x: {y: '1'}\n")
    first = load_folder(folder, secrets_file=secrets).fingerprint
    assert load_folder(folder, secrets_file=secrets).fingerprint == first
    secrets.write_text("x: {y: '2'}\n")
    second = load_folder(folder, secrets_file=secrets).fingerprint
    assert second != first
    (folder / "a.yaml").write_text(component("a", extra="  keyPrefix: none\n"))
    assert load_folder(folder, secrets_file=secrets).fingerprint not in (first, second)


def test_the_wiring_file_is_read_as_the_operator_wrote_it(tmp_path: Path) -> None:
    document = wiring.with_components(
        "shop", [ResolvedComponent("orders", "state.redis", metadata={"redisHost": "r:6379"})]
    )
    path = tmp_path / wiring.WIRING_FILE
    path.write_bytes(wiring.encode(document)[wiring.WIRING_FILE])
    loaded = load_wiring_file(path)
    assert loaded.components == document.components
    assert load_wiring_file(path).fingerprint == loaded.fingerprint
    with pytest.raises(ComponentError, match="wiring file: cannot be read"):
        load_wiring_file(tmp_path / "no-such-folder" / "missing.json")
    # The folder of an `optional` Secret volume whose Secret does not exist yet: no component.
    assert load_wiring_file(tmp_path / "missing.json").components == ()


def test_a_wiring_folder_merges_the_shared_file_and_the_apps_own(tmp_path: Path) -> None:
    """The injected sidecar mounts a folder: the namespace's unscoped components and its app's
    scoped ones; a component seen in both (a scope change in flight) is the scoped copy."""
    shared = wiring.with_components(
        "shop",
        [
            ResolvedComponent("sessions", "state.in-memory"),
            ResolvedComponent("orders", "state.in-memory"),
        ],
    )
    app = wiring.with_components(
        "shop", [ResolvedComponent("orders", "state.in-memory", scopes=("checkout",))]
    )
    folder = tmp_path / "wiring"
    folder.mkdir()
    # No file yet (both Secrets optional and absent): no component, no error.
    assert load_wiring_file(folder).components == ()
    (folder / wiring.SHARED_FILE).write_bytes(wiring.encode_bytes(shared))
    (folder / wiring.APP_FILE).write_bytes(wiring.encode_bytes(app))
    (folder / "..data").mkdir()  # the kubelet's bookkeeping is no wiring file
    loaded = load_wiring_file(folder)
    assert {c.name: c.scopes for c in loaded.components} == {
        "orders": ("checkout",),
        "sessions": (),
    }
    assert loaded.sources["orders"] == str(folder / wiring.APP_FILE)
    assert loaded.sources["sessions"] == str(folder / wiring.SHARED_FILE)
    (folder / wiring.APP_FILE).write_bytes(wiring.encode_bytes(wiring.with_components("other", [])))
    with pytest.raises(ComponentError, match="different namespaces"):
        load_wiring_file(folder)


def test_a_wiring_component_the_backend_refuses_fails_alone_without_quoting_values(
    tmp_path: Path,
) -> None:
    document = wiring.with_components(
        "shop",
        [
            ResolvedComponent(
                "cache", "state.redis", metadata={"redisHost": "r", "redisPort": "abc"}
            ),
            ResolvedComponent("memo", "state.in-memory"),
        ],
    )
    path = tmp_path / wiring.WIRING_FILE
    path.write_bytes(wiring.encode(document)[wiring.WIRING_FILE])
    loaded = load_wiring_file(path)
    assert [c.name for c in loaded.components] == ["memo"]
    failed = _only_failure(loaded)
    assert (failed.name, failed.source) == ("cache", str(path))
    assert failed.reason.startswith(f"{path} (component cache): spec.metadata.redisPort: ")
    assert "abc" not in failed.reason  # every wiring value came from a Secret


def test_the_stat_fingerprint_sees_a_replaced_file_without_reading_it(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "a.yaml").write_text("one")
    before = stat_fingerprint(folder, None)
    assert stat_fingerprint(folder, None) == before
    replacement = tmp_path / "a.yaml.new"
    replacement.write_text("two")
    os.replace(replacement, folder / "a.yaml")  # as an editor or the kubelet's swap does
    assert stat_fingerprint(folder, None) != before
    assert stat_fingerprint(tmp_path / "gone") != stat_fingerprint(folder)


REDIS_PORT_FROM_SECRET = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: cache}
spec:
  type: state.redis
  version: v1
  metadata:
  - {name: redisHost, value: "localhost"}
  - {name: redisPort, secretKeyRef: {name: redis, key: port}}
"""


def test_a_secret_value_resolves_into_the_component(tmp_path: Path) -> None:
    (tmp_path / "cache.yaml").write_text(REDIS_PORT_FROM_SECRET)
    loaded = load_folder(tmp_path, environ={"REDIS_PORT": "6380"})
    assert [c.metadata for c in loaded.components] == [
        {"redisHost": "localhost", "redisPort": "6380"}
    ]


def test_a_bad_secret_value_names_the_file_and_the_field_once(tmp_path: Path) -> None:
    path = tmp_path / "cache.yaml"
    path.write_text(REDIS_PORT_FROM_SECRET)
    failed = _only_failure(load_folder(tmp_path, environ={"REDIS_PORT": "abc"}))
    message = failed.reason
    assert failed.error.field == "spec.metadata.redisPort"
    assert message.startswith(f"{path}: spec.metadata.redisPort: the port is not a number")
    assert message.count("redisPort") == 1
    assert "abc" not in message  # a secret's value is never echoed
