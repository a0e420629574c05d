"""
The sidecar's component loader: a folder of YAML files, secrets resolved locally.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from statecar_contract.components import ComponentError
from statecar_sidecar.loader import load_folder

COMPONENT = """\
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
    (tmp_path / "cache.yaml").write_text(COMPONENT)
    loaded = load_folder(tmp_path, environ={"REDIS_PORT": "6380"})
    assert [c.metadata for c in loaded.components] == [
        {"redisHost": "localhost", "redisPort": "6380"}
    ]


def test_a_bad_secret_value_names_the_file_and_the_field_once(tmp_path: Path) -> None:
    path = tmp_path / "cache.yaml"
    path.write_text(COMPONENT)
    with pytest.raises(ComponentError) as raised:
        load_folder(tmp_path, environ={"REDIS_PORT": "abc"})
    message = str(raised.value)
    assert raised.value.field == "spec.metadata.redisPort"
    assert message.startswith(f"{path}: spec.metadata.redisPort: the port is not a number")
    assert message.count("redisPort") == 1
    assert "abc" not in message  # a secret's value is never echoed
