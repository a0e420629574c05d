"""
Every setting of every backend means one thing to every program that reads it.

For each `Setting` of each settings class (`statecar_contract.settings.BACKENDS`), under each of
its spellings, three readers see the same component:

* the contract: `parse_component` (the validating webhook, the loader) then `resolve`;
* the sidecar: the store's `open()` through the registry, on a real SQLite file, a real
  `redis-server` (and Sentinel) and a real PostgreSQL;
* the operator: the reachability probe, `reachability.measure`.

A valid value is accepted by all three and means the same thing: the store and the probe reach
the same address, and either both reach it or neither does. An invalid value is refused by all
three naming the same `spec.metadata.<name>`. SQLite and in-memory live in the pod, so the
probe reads none of their settings (it answers PodLocal); for them two readers take part.
Every name a backend refuses (`REFUSED`, `COMMON_REFUSED`) is refused by `parse_component` and
by the store with the reason. The tables below must cover every setting: a new one fails
`test_the_tables_cover_every_setting` until it is walked here too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import pg_server
from tests.support.redis_server import RedisProcess, running_redis
from tests.support.tls_certs import Certs, make_certs, redis_tls_args

from statecar_contract.components import (
    ComponentError,
    ResolvedComponent,
    parse_component,
    resolve,
)
from statecar_contract.settings import BACKENDS, COMMON_REFUSED
from statecar_operator.reconciliation.conditions import Reachability
from statecar_operator.reconciliation.reachability import measure
from statecar_sidecar.runtime import _default_ttl
from statecar_sidecar.stores.base import StateStore
from statecar_sidecar.stores.errors import StoreError
from statecar_sidecar.stores.postgresql import PostgreSQLStore
from statecar_sidecar.stores.redis import RedisStore
from statecar_sidecar.stores.registry import open_store
from statecar_sidecar.stores.sqlite import SQLiteStore

PASSWORD = "pw-for-default"
ACL_USER, ACL_PASSWORD = "app", "pw-for-app"
SENTINEL_PASSWORD = "pw-for-sentinel"
MASTER = "mymaster"
POD_LOCAL = ("state.sqlite", "state.in-memory")


@dataclass(frozen=True)
class Case:
    """Metadata added to the backend's working base; `{...}` placeholders name the servers."""

    valid: Mapping[str, str]
    #: An invalid value of the setting (with any companions), or None when any text is valid.
    invalid: Mapping[str, str] | None


# What each setting's walk adds to a working component. Each valid case is tried under every
# spelling of its setting (Dapr's aliases included).
CASES: dict[str, dict[str, Case]] = {
    "state.in-memory": {},
    "state.sqlite": {
        "connectionString": Case(
            {"connectionString": "file:{dir}/uri.db?mode=rwc&_pragma=cache_size(-2000)"},
            {"connectionString": "file:{dir}/x.db?_pragma=journal_mode(WAL)"},
        ),
        "tableName": Case({"tableName": "everywhere_1"}, {"tableName": "bad name"}),
        "layout": Case({"layout": "dapr", "tableName": "everywhere_dapr"}, {"layout": "v2"}),
        "metadataTableName": Case(
            {"layout": "dapr", "tableName": "everywhere_d2", "metadataTableName": "every_md"},
            {"layout": "dapr", "metadataTableName": "bad name"},
        ),
        "timeout": Case({"timeout": "2s"}, {"timeout": "0.5s"}),
        "busyTimeout": Case({"busyTimeout": "100ms"}, {"busyTimeout": "soon"}),
        "disableWAL": Case({"disableWAL": "true"}, {"disableWAL": "maybe"}),
        "cleanupInterval": Case({"cleanupInterval": "0"}, {"cleanupInterval": "soon"}),
    },
    "state.redis": {
        "redisHost": Case({"redisHost": "{redis}"}, {"redisHost": "[::1"}),
        "redisPort": Case(
            {"redisHost": "127.0.0.1", "redisPort": "{redis_port}"},
            {"redisPort": "abc"},
        ),
        "redisUsername": Case({"redisUsername": ACL_USER, "redisPassword": ACL_PASSWORD}, None),
        "redisPassword": Case({"redisPassword": PASSWORD}, None),
        "redisDB": Case({"redisDB": "3"}, {"redisDB": "-1"}),
        # `cluster` is walked by tests/conformance/test_redis_cluster.py on a real cluster.
        "redisType": Case({"redisType": "node"}, {"redisType": "sentinel"}),
        "keyPrefixHashTag": Case({"keyPrefixHashTag": "true"}, {"keyPrefixHashTag": "maybe"}),
        # The TLS server demands a client certificate signed by the private CA, and its own
        # certificate is the CA's: the store and the operator's probe both need all three.
        "clientCert": Case(
            {
                "redisHost": "{redis_tls}",
                "enableTLS": "true",
                "caCert": "{ca}",
                "clientCert": "{client_cert}",
                "clientKey": "{client_key}",
            },
            {"enableTLS": "true", "clientCert": "/etc/tls/client.pem", "clientKey": "{client_key}"},
        ),
        "clientKey": Case(
            {
                "redisHost": "{redis_tls}",
                "enableTLS": "true",
                "caCert": "{ca}",
                "clientCert": "{client_cert}",
                "clientKey": "{client_key}",
            },
            {"enableTLS": "true", "clientCert": "{client_cert}"},  # half a pair
        ),
        "caCert": Case(
            {
                "redisHost": "{redis_tls}",
                "enableTLS": "true",
                "caCert": "{ca}",
                "clientCert": "{client_cert}",
                "clientKey": "{client_key}",
            },
            {"caCert": "{ca}"},  # without enableTLS
        ),
        "enableTLS": Case({"enableTLS": "false"}, {"enableTLS": "maybe"}),
        "insecureSkipTLSVerify": Case(
            {"insecureSkipTLSVerify": "false"}, {"insecureSkipTLSVerify": "maybe"}
        ),
        "failover": Case(
            {
                "redisHost": "{sentinel}",
                "failover": "true",
                "sentinelMasterName": MASTER,
                "sentinelPassword": SENTINEL_PASSWORD,
            },
            {"failover": "maybe"},
        ),
        "sentinelMasterName": Case(
            {
                "redisHost": "{sentinel}",
                "failover": "true",
                "sentinelMasterName": MASTER,
                "sentinelPassword": SENTINEL_PASSWORD,
            },
            {"sentinelMasterName": MASTER},  # without failover: only Sentinel uses it
        ),
        "sentinelUsername": Case(
            {
                "redisHost": "{sentinel}",
                "failover": "true",
                "sentinelMasterName": MASTER,
                "sentinelUsername": "default",
                "sentinelPassword": SENTINEL_PASSWORD,
            },
            {"sentinelUsername": "default"},
        ),
        "sentinelPassword": Case(
            {
                "redisHost": "{sentinel}",
                "failover": "true",
                "sentinelMasterName": MASTER,
                "sentinelPassword": SENTINEL_PASSWORD,
            },
            {"sentinelPassword": SENTINEL_PASSWORD},
        ),
        "dialTimeout": Case({"dialTimeout": "1500"}, {"dialTimeout": "soon"}),
        "readTimeout": Case({"readTimeout": "2s"}, {"readTimeout": "0"}),
        "ttlInSeconds": Case({"ttlInSeconds": "60"}, {"ttlInSeconds": "abc"}),
    },
    "state.postgresql": {
        "connectionString": Case(
            {"connectionString": "host=127.0.0.1 port={pg_port} user={pg_user} dbname=postgres"},
            {"connectionString": "host=127.0.0.1 port=notaport"},
        ),
        "tableName": Case({"tableName": "public.everywhere_1"}, {"tableName": "bad name"}),
        "layout": Case({"layout": "dapr-v1", "tableName": "everywhere_dapr"}, {"layout": "daprV3"}),
        "metadataTableName": Case(
            {"layout": "dapr-v1", "tableName": "everywhere_d2", "metadataTableName": "every_md"},
            {"layout": "dapr-v1", "metadataTableName": "bad name"},
        ),
        "tablePrefix": Case(
            {"layout": "dapr-v2", "tablePrefix": "everywhere_"},
            {"layout": "dapr-v2", "tablePrefix": "bad name"},
        ),
        "timeoutInSeconds": Case({"timeoutInSeconds": "5"}, {"timeoutInSeconds": "0"}),
        "maxConns": Case({"maxConns": "2"}, {"maxConns": "0"}),
        "connectionMaxIdleTime": Case(
            {"connectionMaxIdleTime": "1m"}, {"connectionMaxIdleTime": "-1s"}
        ),
        "cleanupInterval": Case({"cleanupInterval": "0"}, {"cleanupInterval": "soon"}),
    },
}


def _valid_cases() -> Iterator[Any]:
    for kind, cases in CASES.items():
        settings = {s.name: s for s in BACKENDS[kind].SETTINGS}
        for name, case in cases.items():
            for spelling in settings[name].names:
                yield pytest.param(kind, name, spelling, case, id=f"{kind}-{spelling}")


def _invalid_cases() -> Iterator[Any]:
    for kind, cases in CASES.items():
        for name, case in cases.items():
            if case.invalid is not None:
                yield pytest.param(kind, name, case.invalid, id=f"{kind}-{name}")


def test_the_tables_cover_every_setting() -> None:
    assert set(CASES) == set(BACKENDS)
    for kind, backend in BACKENDS.items():
        assert set(CASES[kind]) == {s.name for s in backend.SETTINGS}, kind


# --- the servers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    directory: Path
    redis: RedisProcess
    sentinel: RedisProcess
    redis_tls: RedisProcess
    certs: Certs
    postgres: pg_server.PgServer

    def base(self, kind: str) -> dict[str, str]:
        return {
            "state.in-memory": {},
            "state.sqlite": {"connectionString": f"{self.directory}/base.db"},
            "state.redis": {"redisHost": self.redis.address, "redisPassword": PASSWORD},
            "state.postgresql": {"connectionString": self.postgres.dsn},
        }[kind]

    def fill(self, metadata: Mapping[str, str]) -> dict[str, str]:
        names = {
            "dir": str(self.directory),
            "redis": self.redis.address,
            "redis_port": str(self.redis.port),
            "sentinel": self.sentinel.address,
            "redis_tls": self.redis_tls.address,
            "ca": self.certs.ca_pem,
            "client_cert": self.certs.client_pem,
            "client_key": self.certs.client_key_pem,
            "pg_port": str(self.postgres.port),
            "pg_user": self.postgres.user,
        }
        return {k: v.format(**names) for k, v in metadata.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running_redis(
        [
            "--requirepass",
            PASSWORD,
            "--user",
            ACL_USER,
            "on",
            f">{ACL_PASSWORD}",
            "~*",
            "&*",
            "+@all",
        ]
    ) as redis:
        sentinel_config = (
            f"sentinel monitor {MASTER} 127.0.0.1 {redis.port} 1\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
        )
        certs = make_certs(tmp_path_factory.mktemp("tls"))
        tls_args = [*redis_tls_args(certs, "yes"), "--requirepass", PASSWORD]
        with (
            running_redis(sentinel_config=sentinel_config) as sentinel,
            running_redis(tls_args, tls=True) as redis_tls,
            pg_server.required_postgres() as postgres,
        ):
            yield World(
                tmp_path_factory.mktemp("everywhere"), redis, sentinel, redis_tls, certs, postgres
            )


def document(kind: str, metadata: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": "everywhere"},
        "spec": {
            "type": kind,
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
        },
    }


def _reached(outcome: Reachability) -> str:
    """The `host:port` a probe's message names (it starts with it)."""
    match = re.match(r"(\S+:\d+)", outcome.message)
    assert match is not None, outcome
    return match.group(1)


def _store_address(store: StateStore) -> str:
    """Where the store connects: Redis's description, PostgreSQL's first parsed address."""
    if isinstance(store, RedisStore):  # "redis at h:p" or "... via sentinel h:p,..."
        return store._description
    assert isinstance(store, PostgreSQLStore)
    return store._target.addresses[0].address


def _journal_mode(store: SQLiteStore) -> str:
    return str(store._connection().execute("PRAGMA journal_mode").fetchone()[0])


# --- valid values ------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "spelling", "case"), list(_valid_cases()))
async def test_a_valid_value_is_accepted_everywhere_and_means_the_same(
    world: World, kind: str, name: str, spelling: str, case: Case
) -> None:
    spellings = next(s.names for s in BACKENDS[kind].SETTINGS if s.name == name)
    metadata = {k: v for k, v in world.base(kind).items() if k not in spellings}
    for key, value in world.fill(case.valid).items():
        metadata[spelling if key == name else key] = value

    # The contract (webhook, loader) accepts it.
    component: ResolvedComponent = resolve(parse_component(document(kind, metadata)), {})
    assert component.metadata == metadata

    # The sidecar opens it; the operator probes it.
    store = await open_store(kind, component.metadata)
    try:
        outcome = await measure(component, timeout=5)
        if kind in POD_LOCAL:
            assert (outcome.status, outcome.reason) == ("True", "PodLocal")
            await store.ping()
            if name == "disableWAL":
                assert isinstance(store, SQLiteStore)
                assert await store._call(_journal_mode, store) == "delete"
            return
        # Both reach the backend, at the same address.
        await store.ping()
        assert (outcome.status, outcome.reason) == ("True", "Reachable"), outcome
        assert _reached(outcome) in _store_address(store)
        if name == "ttlInSeconds":
            assert _default_ttl(component) == 60  # the sidecar's default TTL
    finally:
        await store.close()


async def test_the_same_address_is_reached_however_the_port_is_given(world: World) -> None:
    # redisPort fills in a redisHost without a port, for the store and the probe alike.
    component = ResolvedComponent(
        name="x",
        type="state.redis",
        metadata={"redisHost": "127.0.0.1", "redisPort": "1", "redisPassword": PASSWORD},
    )
    store = await open_store("state.redis", component.metadata)
    try:
        outcome = await measure(component, timeout=5)
        assert outcome.status == "False"
        assert _reached(outcome) == "127.0.0.1:1"
        assert "redis at 127.0.0.1:1" in _store_address(store)
        with pytest.raises(StoreError, match=r"127\.0\.0\.1:1"):
            await store.ping()
    finally:
        await store.close()


async def test_tls_on_a_plain_server_fails_for_the_store_and_the_probe(world: World) -> None:
    metadata = {**world.base("state.redis"), "enableTLS": "true", "insecureSkipTLSVerify": "true"}
    component = resolve(parse_component(document("state.redis", metadata)), {})
    store = await open_store("state.redis", component.metadata)
    try:
        outcome = await measure(component, timeout=5)
        assert outcome.status == "False"
        with pytest.raises(StoreError):
            await store.ping()
    finally:
        await store.close()


# --- invalid values ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "invalid"), list(_invalid_cases()))
async def test_an_invalid_value_is_refused_everywhere_naming_the_field(
    world: World, kind: str, name: str, invalid: Mapping[str, str]
) -> None:
    metadata = {**world.base(kind), **world.fill(invalid)}
    field = f"spec.metadata.{name}"

    with pytest.raises(ComponentError) as parsed:
        parse_component(document(kind, metadata))
    assert parsed.value.field == field

    with pytest.raises(StoreError) as opened:
        await open_store(kind, metadata)
    assert field in str(opened.value)

    outcome = await measure(ResolvedComponent(name="x", type=kind, metadata=metadata), timeout=5)
    if kind in POD_LOCAL:
        assert outcome.reason == "PodLocal"  # nothing to reach: the probe reads no setting
        return
    assert (outcome.status, outcome.reason[:3]) == ("False", "Bad"), outcome
    assert field in outcome.message


async def test_a_secret_value_is_refused_by_resolve_the_store_and_the_probe_alike() -> None:
    # A value from a Secret is checked when resolved, and never echoed.
    spec = parse_component(
        {
            **document("state.redis", {"redisHost": "127.0.0.1"}),
            "spec": {
                "type": "state.redis",
                "metadata": [
                    {"name": "redisHost", "value": "127.0.0.1"},
                    {"name": "redisPort", "secretKeyRef": {"name": "r", "key": "port"}},
                ],
            },
        }
    )
    ref = spec.secret_refs[0]
    with pytest.raises(ComponentError) as resolved:
        resolve(spec, {ref: "6379x"})
    assert resolved.value.field == "spec.metadata.redisPort"
    assert "6379x" not in str(resolved.value)
    metadata = {"redisHost": "127.0.0.1", "redisPort": "6379x"}
    with pytest.raises(StoreError, match=r"spec\.metadata\.redisPort"):
        await open_store("state.redis", metadata)
    outcome = await measure(
        ResolvedComponent(name="x", type="state.redis", metadata=metadata), timeout=1
    )
    assert (outcome.reason, "spec.metadata.redisPort" in outcome.message) == ("BadAddress", True)


# --- refused names -----------------------------------------------------------------------------


def _refused_cases() -> Iterator[Any]:
    for kind, backend in BACKENDS.items():
        for refused in (*backend.REFUSED, *COMMON_REFUSED):
            yield pytest.param(kind, refused.name, refused.reason, id=f"{kind}-{refused.name}")


_SERVERLESS_BASE = {
    "state.in-memory": {},
    "state.sqlite": {"connectionString": ":memory:"},
    "state.redis": {"redisHost": "127.0.0.1:1"},
    "state.postgresql": {"connectionString": "host=127.0.0.1 port=1"},
}


@pytest.mark.parametrize(("kind", "name", "reason"), list(_refused_cases()))
async def test_every_refused_setting_is_refused_with_its_reason(
    kind: str, name: str, reason: str
) -> None:
    # Refused before anything connects, so no server is needed.
    metadata = {**_SERVERLESS_BASE[kind], name: "1"}
    with pytest.raises(ComponentError) as parsed:
        parse_component(document(kind, metadata))
    # The document's list entry is named (spec.metadata[i].name), with the name and the reason.
    assert re.fullmatch(r"spec\.metadata\[\d+\]\.name", parsed.value.field)
    assert f"'{name}': {reason}" in str(parsed.value)
    with pytest.raises(StoreError) as opened:
        await open_store(kind, metadata)
    assert f"spec.metadata.{name}" in str(opened.value)
    assert reason in str(opened.value)


async def test_in_memory_refuses_every_name_it_does_not_have() -> None:
    metadata = {"tableName": "x"}
    with pytest.raises(ComponentError) as parsed:
        parse_component(document("state.in-memory", metadata))
    assert parsed.value.field == "spec.metadata[0].name"
    assert "'tableName' is not a setting of state.in-memory" in str(parsed.value)
    with pytest.raises(StoreError, match=r"spec\.metadata\.tableName"):
        await open_store("state.in-memory", metadata)
