"""
The conformance tier's world: real Redis (a primary with AOF and one replica), a real Redis
Cluster (3 primaries, 3 replicas), a real PostgreSQL, and ONE real `statecar sidecar` process
serving a store on each backend.

Every test takes the `store` fixture and runs once per backend: that is the suite's promise
that behaviour is the same everywhere (docs/state-api.md). `test_store_interface.py` runs the same
backends one layer down, on the `StateStore` interface; its own `store` fixture opens a store
through the registry on these servers.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.support import pg_server, redis_server
from tests.support import redis_cluster as redis_cluster_support
from tests.support.ports import free_port
from tests.support.sidecar import SidecarProcess

ALL_BACKENDS = (
    "memory",
    "sqlite",
    "redis",
    "redis-cluster",
    "postgres",
    # daprd's table layouts (a Dapr `Component`, as daprd would read it): the same promises,
    # except those docs/state-api.md names ("daprd's table layouts").
    "sqlite-dapr",
    "postgres-dapr-v1",
    "postgres-dapr-v2",
)
#: The backends that need the PostgreSQL server.
POSTGRES_BACKENDS = frozenset({"postgres", "postgres-dapr-v1", "postgres-dapr-v2"})
# A developer may narrow the run (STATECAR_TEST_BACKENDS=memory,redis); CI always runs them all.
BACKENDS = (
    tuple(
        b
        for b in os.environ.get("STATECAR_TEST_BACKENDS", ",".join(ALL_BACKENDS)).split(",")
        if b in ALL_BACKENDS
    )
    if not os.environ.get("CI")
    else ALL_BACKENDS
)
APP_ID = "conformance"


@pytest.fixture(scope="session")
def redis_primary() -> Iterator[redis_server.RedisProcess]:
    # In CI (and `make test`) a missing server is a failure, never a silent skip.
    with redis_server.running_redis(["--appendonly", "yes", "--appendfsync", "always"]) as server:
        yield server


@pytest.fixture(scope="session")
def redis_replica(redis_primary: redis_server.RedisProcess) -> Iterator[redis_server.RedisProcess]:
    with redis_server.running_redis(
        ["--replicaof", "127.0.0.1", str(redis_primary.port)]
    ) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[redis_cluster_support.RedisCluster]:
    with redis_cluster_support.running_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg_server.PgServer]:
    with pg_server.required_postgres() as server:
        yield server


def _component(name: str, type_: str, metadata: dict[str, str], **spec: str) -> str:
    document = {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": name},
        "spec": {
            "type": type_,
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
            **{k: (v == "true" if v in ("true", "false") else v) for k, v in spec.items()},
        },
    }
    return yaml.safe_dump(document) + "---\n"


def _dapr_component(name: str, type_: str, version: str, metadata: dict[str, str]) -> str:
    document = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": type_,
            "version": version,
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
        },
    }
    return yaml.safe_dump(document) + "---\n"


@pytest.fixture(scope="session")
def components_dir(
    tmp_path_factory: pytest.TempPathFactory,
    redis_primary: redis_server.RedisProcess,
    redis_replica: redis_server.RedisProcess,
    request: pytest.FixtureRequest,
) -> Path:
    postgres: pg_server.PgServer | None = (
        request.getfixturevalue("postgres") if POSTGRES_BACKENDS & set(BACKENDS) else None
    )
    cluster: redis_cluster_support.RedisCluster | None = (
        request.getfixturevalue("redis_cluster") if "redis-cluster" in BACKENDS else None
    )
    folder = tmp_path_factory.mktemp("components")
    sqlite_file = folder / "state.db"
    redis = {"redisHost": redis_primary.address}
    documents = [
        _component("memory", "state.in-memory", {}),
        _component("sqlite", "state.sqlite", {"connectionString": str(sqlite_file)}),
        _component("redis", "state.redis", redis),
        *(
            [_component("postgres", "state.postgresql", {"connectionString": postgres.dsn})]
            if postgres
            else []
        ),
        # A plain cluster (keys spread over every primary) and one with each app's keys on one
        # slot (keyPrefixHashTag). The seeds: one dead address first, then every node.
        *(
            [
                _component("redis-cluster", "state.redis", _cluster_metadata(cluster)),
                _component(
                    "redis-cluster-tagged",
                    "state.redis",
                    {**_cluster_metadata(cluster), "keyPrefixHashTag": "true"},
                ),
            ]
            if cluster
            else []
        ),
        # Component policy: defaults a request may override, and one that enforces.
        *(
            _component(f"{b}-fw", t, m, concurrency="first-write")
            for b, t, m in (("memory", "state.in-memory", {}), ("redis", "state.redis", redis))
        ),
        _component(
            "memory-enforced", "state.in-memory", {}, concurrency="first-write", enforce="true"
        ),
        _component("redis-strong", "state.redis", redis, consistency="strong"),
        # Key prefixes, on Redis where the stored keys can be read back raw.
        _component("prefix-name", "state.redis", redis, keyPrefix="name"),
        _component("prefix-none", "state.redis", redis, keyPrefix="none"),
        _component("prefix-custom", "state.redis", redis, keyPrefix="MyPrefix"),
        _component("prefix-namespace", "state.redis", redis, keyPrefix="namespace"),
    ]
    # daprd's layouts, chosen the way a Dapr user's components folder chooses them.
    documents.append(
        _dapr_component(
            "sqlite-dapr", "state.sqlite", "v1", {"connectionString": str(folder / "dapr.db")}
        )
    )
    if postgres:
        documents.append(
            _dapr_component(
                "postgres-dapr-v1",
                "state.postgresql",
                "v1",
                {
                    "connectionString": postgres.dsn,
                    "tableName": "conformance_dapr_v1",
                },
            )
        )
        documents.append(
            _dapr_component(
                "postgres-dapr-v2",
                "state.postgresql",
                "v2",
                {
                    "connectionString": postgres.dsn,
                    "tablePrefix": "conformance_",
                },
            )
        )
    (folder / "components.yaml").write_text("".join(documents))
    # A Dapr Component file works as it is.
    (folder / "dapr.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata:
              name: dapr-redis
            spec:
              type: state.redis
              version: v1
              metadata:
              - name: redisHost
                value: {redis_primary.address}
              - name: keyPrefix
                value: none
            """
        )
    )
    return folder


def _cluster_metadata(cluster: redis_cluster_support.RedisCluster) -> dict[str, str]:
    return {"redisHost": f"127.0.0.1:{free_port()},{cluster.seeds}", "redisType": "cluster"}


@pytest.fixture(scope="session")
def sidecar(components_dir: Path) -> Iterator[SidecarProcess]:
    process = SidecarProcess(
        app_id=APP_ID, components_path=components_dir, env={"STATECAR_NAMESPACE": "shop"}
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api(sidecar: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.url, timeout=10) as client:
        yield client


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)
