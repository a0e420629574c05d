"""
Redis deployments a component can point at, opened the way the sidecar opens them (the
registry, Dapr's metadata names): Sentinel failover discovery, ACL users, a selected DB.
"""

from __future__ import annotations

import uuid

import pytest
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, running_redis

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
