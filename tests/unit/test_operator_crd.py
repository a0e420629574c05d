"""
The StateStoreComponent CRD (`crds/`) and its examples: sanity without an API server.

The API server itself checks the schema in the e2e tier; here: it parses, it is structural
(every field typed), it has the CEL rules, defaults, enums and printer columns the design asks
for, it agrees with the shared contract, and every example is valid under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from statecar_contract import components as contract
from statecar_contract.components import parse_component

ROOT = Path(__file__).parents[2]
CRD_FILE = ROOT / "crds" / "statestorecomponents.statecar.io.yaml"
EXAMPLES = sorted((ROOT / "crds" / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return document


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    result: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return result


def test_names_match_the_contract(crd: dict[str, Any]) -> None:
    assert CRD_FILE.name == f"{crd['metadata']['name']}.yaml"
    assert crd["metadata"]["name"] == f"{contract.PLURAL}.{contract.API_GROUP}"
    assert crd["spec"]["group"] == contract.API_GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        contract.KIND,
        contract.PLURAL,
        ["ssc"],
    )
    (version,) = crd["spec"]["versions"]
    assert version["name"] == contract.API_VERSION
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = {c["name"]: c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Type", "Concurrency", "Consistency", "Ready", "Age"} <= set(columns)
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"]["type"] == "date"


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path or "(root)", node)]
    for name, child in (node.get("properties") or {}).items():
        found.extend(walk(child, f"{path}.{name}"))
    if "items" in node:
        found.extend(walk(node["items"], f"{path}[]"))
    return found


def test_the_schema_is_structural(schema: dict[str, Any]) -> None:
    # https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
    for path, node in walk(schema):
        untyped_ok = node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string"
        )
        assert "type" in node or untyped_ok, f"{path} has no type"


def test_enums_and_defaults_match_the_contract(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert set(spec["type"]["enum"]) == set(contract.BACKEND_METADATA)
    assert spec["concurrency"]["enum"] == list(contract.CONCURRENCY_VALUES)
    assert spec["consistency"]["enum"] == list(contract.CONSISTENCY_VALUES)
    assert spec["concurrency"]["default"] == "last-write"
    assert spec["consistency"]["default"] == "eventual"
    assert spec["keyPrefix"]["default"] == "appid"
    assert spec["version"]["default"] == "v1"
    assert spec["enforce"] == {**spec["enforce"], "type": "boolean", "default": False}
    assert schema["properties"]["spec"]["required"] == ["type"]


def test_value_xor_secret_key_ref_is_a_cel_rule_naming_the_field(schema: dict[str, Any]) -> None:
    item = schema["properties"]["spec"]["properties"]["metadata"]["items"]
    (rule,) = item["x-kubernetes-validations"]
    assert rule["rule"] == "has(self.value) != has(self.secretKeyRef)"
    assert "spec.metadata[name=" in rule["messageExpression"]
    assert "exactly one of value and secretKeyRef" in " ".join(rule["messageExpression"].split())
    assert item["properties"]["secretKeyRef"]["required"] == ["name", "key"]


def test_required_backend_settings_are_cel_rules(schema: dict[str, Any]) -> None:
    rules = schema["properties"]["spec"]["x-kubernetes-validations"]
    messages = " ".join(r["message"] for r in rules)
    for backend, names in contract.REQUIRED_METADATA.items():
        for name in names:
            assert backend in messages
            assert name in messages


def test_status_has_conditions_and_observed_generation(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert item["required"] == ["type", "status", "lastTransitionTime", "reason", "message"]
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_there_is_an_example_per_backend() -> None:
    types = set()
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == contract.KIND:
                types.add(document["spec"]["type"])
    assert types == set(contract.BACKEND_METADATA)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path, schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for document in yaml.safe_load_all(path.read_text()):
        if document["kind"] != contract.KIND:
            assert document["kind"] == "Secret"
            continue
        jsonschema.validate(document, schema)
        spec = parse_component(document, source=path.name)
        for item in document["spec"].get("metadata", []):
            assert ("value" in item) != ("secretKeyRef" in item)
        assert spec.name == document["metadata"]["name"]


def test_the_redis_example_reads_its_password_from_the_example_secret() -> None:
    component = yaml.safe_load((ROOT / "crds" / "examples" / "state-redis.yaml").read_text())
    secret = yaml.safe_load(
        (ROOT / "crds" / "examples" / "state-redis-auth-secret.yaml").read_text()
    )
    (ref,) = [m["secretKeyRef"] for m in component["spec"]["metadata"] if "secretKeyRef" in m]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
