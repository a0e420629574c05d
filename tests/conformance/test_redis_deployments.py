"""
Redis deployments a component can point at, opened the way the sidecar opens them (the
registry, Dapr's metadata names): Sentinel failover discovery, ACL users, a selected DB, TLS with a client certificate and a
private CA (on one server and on a Redis Cluster).
"""

from __future__ import annotations

import uuid

import pytest
from tests.support.ports import free_port
from tests.support.redis_cluster import running_cluster
from tests.support.redis_server import RedisProcess, running_redis
from tests.support.tls_certs import Certs, make_certs, redis_tls_args

from statecar_sidecar.stores.base import SetOp
from statecar_sidecar.stores.errors import StoreError, StoreUnavailableError
from statecar_sidecar.stores.registry import open_store

pytestmark = pytest.mark.conformance


async def test_sentinel_component_finds_the_master(redis_primary: RedisProcess) -> None:
    config = (
        f"sentinel monitor mymaster 127.0.0.1 {redis_primary.port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    with running_redis(sentinel_config=config) as sentinel:
        store = await open_store(
            "state.redis",
            {
                "redisHost": f"127.0.0.1:{free_port()},127.0.0.1:{sentinel.port}",
                "failover": "true",
                "sentinelMasterName": "mymaster",
            },
        )
        try:
            await store.ping()
            key = f"sentinel||{uuid.uuid4().hex}"
            await store.set(SetOp(key, b'"via sentinel"'))
            item = await store.get(key)
            assert item is not None
            assert item.value == b'"via sentinel"'
        finally:
            await store.close()


async def test_sentinel_without_master_name_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="sentinelMasterName"):
        await open_store("state.redis", {"redisHost": "127.0.0.1:26379", "failover": "true"})


async def test_acl_user_password_and_db_are_used() -> None:
    with running_redis(
        ["--user", "app", "on", ">app-pw", "~*", "&*", "+@all", "--user", "default", "off"]
    ) as server:
        good = await open_store(
            "state.redis",
            {
                "redisHost": server.address,
                "redisUsername": "app",
                "redisPassword": "app-pw",
                "redisDB": "3",
            },
        )
        try:
            await good.ping()
            await good.set(SetOp("acl||k", b"1"))
        finally:
            await good.close()
        bad = await open_store(
            "state.redis",
            {"redisHost": server.address, "redisUsername": "app", "redisPassword": "wrong"},
        )
        with pytest.raises(StoreUnavailableError) as raised:
            await bad.ping()
        assert "wrong" not in str(raised.value)
        await bad.close()


async def test_a_boolean_setting_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(StoreError, match=r"enableTLS: use true or false \(got 'maybe'\)"):
        await open_store("state.redis", {"redisHost": "127.0.0.1:6379", "enableTLS": "maybe"})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


async def test_tls_client_certificate_and_private_ca(certs: Certs) -> None:
    """A server that demands a client certificate (`--tls-auth-clients yes`), signed by a
    private CA: the store connects with `clientCert`/`clientKey`, trusting `caCert`."""
    with running_redis(redis_tls_args(certs, "yes"), tls=True) as server:
        tls = {"redisHost": server.address, "enableTLS": "true", "caCert": certs.ca_pem}
        store = await open_store(
            "state.redis",
            {**tls, "clientCert": certs.client_pem, "clientKey": certs.client_key_pem},
        )
        try:
            await store.ping()
            await store.set(SetOp("mtls||k", b'"over mutual TLS"'))
            item = await store.get("mtls||k")
            assert item is not None
            assert item.value == b'"over mutual TLS"'
        finally:
            await store.close()
        # Without a client certificate the server refuses the handshake.
        anonymous = await open_store("state.redis", tls)
        with pytest.raises(StoreUnavailableError):
            await anonymous.ping()
        await anonymous.close()
        # Without caCert the server's certificate (private CA) is not trusted.
        untrusted = await open_store(
            "state.redis",
            {
                "redisHost": server.address,
                "enableTLS": "true",
                "clientCert": certs.client_pem,
                "clientKey": certs.client_key_pem,
            },
        )
        with pytest.raises(StoreUnavailableError, match="certificate verify failed"):
            await untrusted.ping()
        await untrusted.close()


async def test_a_client_key_that_does_not_match_is_a_clear_error(certs: Certs) -> None:
    with pytest.raises(StoreError, match="clientCert/clientKey"):
        await open_store(
            "state.redis",
            {
                "redisHost": "127.0.0.1:6379",
                "enableTLS": "true",
                "clientCert": certs.client_pem,
                "clientKey": certs.server_key_pem,
            },
        )


async def test_redis_cluster_over_mutual_tls(certs: Certs) -> None:
    """Routing, MOVED and the per-node connections all use the same TLS settings."""
    with running_cluster(primaries=3, replicas=0, certs=certs) as cluster:
        store = await open_store(
            "state.redis",
            {
                "redisHost": cluster.seeds,
                "redisType": "cluster",
                "enableTLS": "true",
                "caCert": certs.ca_pem,
                "clientCert": certs.client_pem,
                "clientKey": certs.client_key_pem,
            },
        )
        try:
            await store.ping()
            keys = [f"tls||k{i}" for i in range(30)]
            assert await store.set_many([SetOp(k, b"1") for k in keys]) == [None] * 30
            assert all(item is not None for item in await store.bulk_get(keys))
        finally:
            await store.close()
