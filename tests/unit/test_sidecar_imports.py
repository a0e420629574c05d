"""
What a started sidecar imports: a cold start (exec to the first 200) and the idle RSS pay for
every module, so the serving path leaves out what it does not use until it is used.

The sidecar runs with `PYTHONPROFILEIMPORTTIME=1` (`python -X importtime`): the interpreter
writes each module it imports to stderr, here the sidecar's log, whenever that happens.
prometheus_client is never imported (metrics.py writes the exposition); a backend's settings
class comes with its first component; the query engine, the encryption settings, wrapper and
AES library come with the first query or the first component that configures keys, and those
still work on a fresh sidecar.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
import redis
from tests.support.redis_server import running_redis
from tests.support.sidecar import SidecarProcess

from statecar_contract import wiring
from statecar_contract.components import ResolvedComponent
from statecar_sidecar import memory

#: AES-128 key in hex, as a local secret (loader.secret_env_name: `key-a`/`key-a`).
KEY_ENV = {"KEY_A_KEY_A": "00112233445566778899aabbccddeeff"}
_ENV = {"PYTHONPROFILEIMPORTTIME": "1", **KEY_ENV}


def _component(name: str, *metadata: Mapping[str, object]) -> str:
    return json.dumps(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "spec": {
                "type": "state.in-memory",
                "version": "v1",
                "metadata": [dict(m) for m in metadata],
            },
        }
    )


def _imported(log: str) -> set[str]:
    """The modules the process imported, from `-X importtime`'s `... | ... | name` lines."""
    return {
        line.rsplit("|", 1)[1].strip()
        for line in log.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def _started(tmp_path: Path, *components: tuple[str, str]) -> SidecarProcess:
    folder = tmp_path / "components"
    folder.mkdir()
    for name, text in components:
        (folder / f"{name}.yaml").write_text(text)
    return _start(SidecarProcess(app_id="imports", components_path=folder, env=_ENV))


def _start(sidecar: SidecarProcess) -> SidecarProcess:
    sidecar.start()
    return sidecar


@pytest.mark.parametrize("source", ["components folder", "wiring file"])
def test_a_serving_sidecar_imports_neither_prometheus_client_nor_what_it_has_not_used(
    tmp_path: Path, source: str
) -> None:
    if source == "wiring file":  # a pod's: the operator's JSON, no YAML parser needed
        wiring_file = tmp_path / "components.json"
        document = wiring.with_components(
            "shop", [ResolvedComponent("statestore", "state.in-memory")]
        )
        wiring_file.write_bytes(wiring.encode(document)[wiring.WIRING_FILE])
        sidecar = _start(SidecarProcess(app_id="imports", wiring_file=wiring_file, env=_ENV))
    else:
        sidecar = _started(tmp_path, ("statestore", _component("statestore")))
    try:
        saved = httpx.post(f"{sidecar.url}/v1.0/state/statestore", json=[{"key": "k", "value": 1}])
        assert saved.status_code == 204
        assert httpx.get(f"{sidecar.url}/v1.0/state/statestore/k").text == "1"
        scrape = httpx.get(f"{sidecar.ops_url}/metrics").text
        assert "\nprocess_resident_memory_bytes " in scrape
        assert 'statecar_component_up{app_id="imports",component="statestore"} 1.0' in scrape
    finally:
        assert sidecar.stop() == 0
    imported = _imported(sidecar.log)
    # The log does list the sidecar's imports, those made on first use too.
    assert {"statecar_sidecar.metrics", "statecar_contract.settings.memory"} <= imported
    unused = {
        "prometheus_client",
        # The settings of the backends no component uses (statecar_contract.settings.BACKENDS).
        "statecar_contract.settings.redis",
        "statecar_contract.settings.sqlite",
        "statecar_contract.settings.postgresql",
        "statecar_contract.settings.libpq",
        "statecar_sidecar.stores.query",
        "statecar_sidecar.stores.encryption",
        "statecar_contract.settings.encryption",
        "cryptography",
    }
    if source == "wiring file":
        unused.add("yaml")
    else:  # the wiring file's decoder comes with the first wiring file (loader)
        unused.add("statecar_contract.wiring")
    assert not imported & unused, sorted(imported & unused)


@pytest.fixture(scope="module")
def image_like_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter set up as the image's: a venv that reaches this checkout and the installed
    packages through one path-only `.pth`, so no `.pth` file of the host's site-packages runs
    code first (a sandbox's may import tempfile and shutil itself, hiding what the sidecar does).
    """
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = next((venv / "lib").glob("python3*/site-packages"))
    reach = [p for p in sys.path if p and Path(p).is_dir()]
    (site_packages / "checkout.pth").write_text("\n".join(reach) + "\n", encoding="utf-8")
    return str(venv / "bin" / "python")


@pytest.mark.parametrize("hash_tag", [False, True])
def test_a_sidecar_on_one_redis_server_loads_no_cluster_routing_and_no_ctypes_in_the_image(
    tmp_path: Path, hash_tag: bool, image_like_python: str
) -> None:
    """Redis Cluster's routing (`stores.redis.cluster`, `slots`) comes with a cluster or with
    `keyPrefixHashTag`; ctypes only when the environment has not fixed glibc's mmap threshold
    (the image does: Dockerfile, `memory`); tempfile only with a client certificate; shutil not
    at all (argparse's formatter would import it: statecar_cli.main); nor the IDNA codec."""
    wiring_file = tmp_path / "components.json"
    with running_redis() as server:
        metadata = {
            "redisHost": f"{server.host}:{server.port}",
            "keyPrefixHashTag": "true" if hash_tag else "false",
        }
        document = wiring.with_components(
            "shop", [ResolvedComponent("statestore", "state.redis", metadata=metadata)]
        )
        wiring_file.write_bytes(wiring.encode(document)[wiring.WIRING_FILE])
        # The image's value (Dockerfile; tests/unit/test_dockerfile.py holds the two equal).
        env = {**_ENV, "MALLOC_MMAP_THRESHOLD_": str(memory.MMAP_THRESHOLD_BYTES)}
        sidecar = _start(
            SidecarProcess(
                app_id="imports", wiring_file=wiring_file, env=env, python=image_like_python
            )
        )
        try:
            saved = httpx.post(
                f"{sidecar.url}/v1.0/state/statestore", json=[{"key": "k", "value": 1}]
            )
            assert saved.status_code == 204, saved.text
            assert httpx.get(f"{sidecar.url}/v1.0/state/statestore/k").text == "1"
            stored = redis.Redis(server.host, server.port).keys("*")
        finally:
            assert sidecar.stop() == 0
    assert stored == [b"{imports}||k" if hash_tag else b"imports||k"]
    imported = _imported(sidecar.log)
    assert "statecar_sidecar.stores.redis.router" in imported
    cluster = {"statecar_sidecar.stores.redis.cluster", "statecar_sidecar.stores.redis.slots"}
    if hash_tag:
        assert "statecar_sidecar.stores.redis.slots" in imported
    else:
        assert not imported & cluster, sorted(imported & cluster)
    # encodings.idna: the listeners bind their IP addresses themselves (http1.server.listen).
    never = {"ctypes", "tempfile", "shutil", "encodings.idna"}
    assert not imported & never, sorted(imported & never)


def test_the_first_query_and_an_encrypted_store_work_on_a_fresh_sidecar(tmp_path: Path) -> None:
    key = {"name": "primaryEncryptionKey", "secretKeyRef": {"name": "key-a", "key": "key-a"}}
    sidecar = _started(
        tmp_path,
        ("plain", _component("plain")),
        ("secret", _component("secret", key)),
    )
    try:
        for store in ("plain", "secret"):
            saved = httpx.post(
                f"{sidecar.url}/v1.0/state/{store}",
                json=[{"key": "order", "value": {"state": "paid"}}],
            )
            assert saved.status_code == 204, saved.text
            got = httpx.get(f"{sidecar.url}/v1.0/state/{store}/order")
            assert got.json() == {"state": "paid"}
        query = {"filter": {"EQ": {"state": "paid"}}}
        found = httpx.post(f"{sidecar.url}/v1.0-alpha1/state/plain/query", json=query)
        assert found.status_code == 200, found.text
        assert [r["key"] for r in found.json()["results"]] == ["order"]
        bad = httpx.post(f"{sidecar.url}/v1.0-alpha1/state/plain/query", json={"filter": 1})
        assert bad.status_code == 500
        assert bad.json()["errorCode"] == "ERR_STATE_QUERY"
        refused = httpx.post(f"{sidecar.url}/v1.0-alpha1/state/secret/query", json=query)
        assert refused.status_code == 400  # api/errors.query_encrypted
        assert "primaryEncryptionKey" in refused.json()["message"]
    finally:
        assert sidecar.stop() == 0
    imported = _imported(sidecar.log)
    assert {
        "statecar_sidecar.stores.query",
        "statecar_sidecar.stores.encryption",
        "statecar_contract.settings.encryption",
    } <= imported
