"""
The typed backend settings (`statecar_contract.settings`): every setting of every backend reads
its value, its aliases and its default, and every malformed value is an error naming
`spec.metadata.<name>` and the fix; the shared parsers (durations, booleans, whole numbers,
host:port, libpq connection strings) parse one way; refused names say why; and the component
reference in docs/ is what the settings classes generate.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from statecar_contract.components import (
    BACKEND_METADATA,
    REQUIRED_METADATA,
    ComponentError,
    ResolvedComponent,
    SecretKeyRef,
    parse_component,
    resolve,
)
from statecar_contract.settings import (
    BACKENDS,
    HostPort,
    InMemorySettings,
    PostgresDSN,
    PostgreSQLSettings,
    RedisSettings,
    SettingValueError,
    SQLiteSettings,
    parse_duration,
    parse_flag,
    parse_host_list,
    parse_host_port,
    parse_integer,
    parse_libpq,
    read_settings,
)
from statecar_contract.settings.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "components.md"

REDIS = {"redisHost": "redis:6379"}
PG = {"connectionString": "host=db user=app dbname=app"}
SQLITE = {"connectionString": "/data/state.db"}


def refused(backend: Any, metadata: Mapping[str, str], name: str, fragment: str) -> None:
    with pytest.raises(ComponentError) as raised:
        backend.from_metadata(metadata, source="c.yaml")
    assert raised.value.field == f"spec.metadata.{name}"
    assert fragment in str(raised.value)
    assert str(raised.value).startswith("c.yaml: ")


# --- whole numbers, booleans, durations -----------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("5", 5), ("6379", 6379), ("-1", -1)])
def test_integers_are_ascii_digits(text: str, value: int) -> None:
    assert parse_integer(text) == value


@pytest.mark.parametrize("text", [" 5", "5 ", "+5", "٥", "1_0", "", "5.0", "0x10", "five"])
def test_integers_refuse_what_int_would_accept_or_guess(text: str) -> None:
    with pytest.raises(SettingValueError, match="whole number such as 5"):
        parse_integer(text)


def test_integer_bounds_are_in_the_message() -> None:
    with pytest.raises(SettingValueError, match="at least 0"):
        parse_integer("-1", minimum=0)
    with pytest.raises(SettingValueError, match="at most 9"):
        parse_integer("10", maximum=9)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        (" true ", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("off", False),
        ("", False),
    ],
)
def test_flags_accept_the_usual_spellings(text: str, value: bool) -> None:
    assert parse_flag(text) is value


@pytest.mark.parametrize("text", ["maybe", "t", "y", "2", "enabled"])
def test_a_flag_that_is_neither_is_an_error_not_false(text: str) -> None:
    with pytest.raises(SettingValueError, match="use true or false"):
        parse_flag(text)


@pytest.mark.parametrize(
    ("text", "unit", "seconds"),
    [
        ("5", 1.0, 5.0),
        ("500", 0.001, 0.5),
        ("-1", 1.0, -1.0),
        ("0", 0.001, 0.0),
        ("+0", 1.0, 0.0),
        ("500ms", 1.0, 0.5),
        ("2s", 0.001, 2.0),
        ("1m30s", 1.0, 90.0),
        ("1.5h", 1.0, 5400.0),
        (".5s", 1.0, 0.5),
        ("250µs", 1.0, 0.00025),
        ("250μs", 1.0, 0.00025),
        ("250us", 1.0, 0.00025),
        ("1000000ns", 1.0, 0.001),
        ("-2s", 1.0, -2.0),
        ("+2s", 1.0, 2.0),
        (" 2s ", 1.0, 2.0),
    ],
)
def test_durations_are_go_durations_or_bare_numbers_in_the_settings_unit(
    text: str, unit: float, seconds: float
) -> None:
    assert parse_duration(text, bare_unit=unit) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5x", "s", "1 s", "٥s", "1.5", "1_0s", "2S", "--2s", ""])
def test_a_malformed_duration_names_both_spellings(text: str) -> None:
    with pytest.raises(SettingValueError, match="duration such as 500ms") as raised:
        parse_duration(text, bare_unit=0.001)
    assert "whole number of milliseconds" in str(raised.value)


# --- host:port ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("redis", "redis", 6379),
        ("redis:6380", "redis", 6380),
        (" redis:6380 ", "redis", 6380),
        ("10.0.0.1:7000", "10.0.0.1", 7000),
        ("[::1]:7000", "::1", 7000),
        ("[::1]", "::1", 6379),
        ("[fe80::1%eth0]:1", "fe80::1%eth0", 1),
    ],
)
def test_one_host_port_splitter(text: str, host: str, port: int) -> None:
    assert parse_host_port(text, default_port=6379) == HostPort(host, port)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("redis:abc", "the port is not a number from 1 to 65535; use an integer port such as 6379"),
        ("redis:0", "the port is not a number"),
        ("redis:65536", "the port is not a number"),
        ("redis:+1", "the port is not a number"),
        ("redis:", "the port is empty"),
        ("[::1]:x", "the port is not a number"),
        ("[::1", "without a closing ']'"),
        ("[]:1", "without a closing ']'"),
        ("[::1]x", "text after ']'"),
        ("::1", "in brackets, such as [::1]:6379"),
        ("::1:6379", "in brackets"),
        (":6379", "has no host"),
        ("", "empty"),
    ],
)
def test_a_bad_address_is_an_error_saying_how_to_write_it(text: str, fragment: str) -> None:
    with pytest.raises(SettingValueError) as raised:
        parse_host_port(text, default_port=6379)
    assert fragment in str(raised.value)


def test_host_port_prints_as_the_user_writes_it() -> None:
    assert str(HostPort("::1", 7000)) == "[::1]:7000"
    assert HostPort("redis", 6379).address == "redis:6379"


def test_host_lists_skip_blank_entries_and_need_one() -> None:
    assert parse_host_list("a, b:2,", default_port=26379) == (
        HostPort("a", 26379),
        HostPort("b", 2),
    )
    with pytest.raises(SettingValueError, match="address 2 of 2: the port is not a number"):
        parse_host_list("a,b:x", default_port=1)
    with pytest.raises(SettingValueError, match="no address"):
        parse_host_list(" , ", default_port=1)


# --- libpq connection strings ----------------------------------------------------------------


def test_a_libpq_url_parses_to_typed_fields() -> None:
    dsn = parse_libpq(
        "postgresql://app:p%40ss@db.example:5433/orders?sslmode=require"
        "&application_name=shop&sslrootcert=/ca.pem&connect_timeout=7&pool_max_conns=4"
    )
    assert dsn == PostgresDSN(
        hosts=("db.example",),
        ports=(5433,),
        user="app",
        password="p@ss",
        dbname="orders",
        sslmode="require",
        connect_timeout=7.0,
        pool_max_conns=4,
        server_settings={"application_name": "shop"},
        params={"sslrootcert": "/ca.pem"},
    )
    assert dsn.label == "db.example:5433/orders"
    assert "p@ss" not in repr(dsn)


@pytest.mark.parametrize(
    ("text", "hosts", "ports"),
    [
        ("postgres://u@db/x", ("db",), ()),
        ("postgresql://", (), ()),
        ("postgresql://u:p@[::1]:5433/x", ("::1",), (5433,)),
        ("postgresql://u:p@[::1]/x", ("::1",), ()),
        ("postgresql://h1,h2:5433/x", ("h1", "h2"), (5432, 5433)),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql/x", ("/var/run/postgresql",), ()),
        ("postgresql:///x?host=/tmp&port=5433", ("/tmp",), (5433,)),
        ("postgresql://ignored/x?host=a,b&port=1,2", ("a", "b"), (1, 2)),
    ],
)
def test_url_hosts_and_ports(text: str, hosts: tuple[str, ...], ports: tuple[int, ...]) -> None:
    dsn = parse_libpq(text)
    assert (dsn.hosts, dsn.ports) == (hosts, ports)


def test_an_unescaped_at_sign_in_a_url_password_still_works() -> None:
    dsn = parse_libpq("postgresql://u:p@ss@db/x")
    assert (dsn.user, dsn.password, dsn.hosts) == ("u", "p@ss", ("db",))


def test_keyword_value_form_with_libpq_quoting() -> None:
    dsn = parse_libpq(
        "host=db port=5433 user=u password='a b\\'c' dbname=x sslmode=disable"
        " options='-c search_path=s --statement_timeout=5s' target_session_attrs=read-write"
        " search_path=t keepalives=1"
    )
    assert (dsn.hosts, dsn.ports, dsn.user, dsn.password, dsn.dbname, dsn.sslmode) == (
        ("db",),
        (5433,),
        "u",
        "a b'c",
        "x",
        "disable",
    )
    assert dsn.server_settings == {"search_path": "t", "statement_timeout": "5s"}
    assert dsn.params == {"target_session_attrs": "read-write"}


def test_hostaddr_stands_in_for_a_missing_host() -> None:
    assert parse_libpq("hostaddr=10.0.0.5").hosts == ("10.0.0.5",)
    assert parse_libpq("host=db hostaddr=10.0.0.5").hosts == ("db",)


def test_without_a_host_the_addresses_are_libpqs_default() -> None:
    dsn = parse_libpq("user=u port=6000")
    assert (dsn.hosts, dsn.addresses, dsn.label) == (
        (),
        (HostPort("localhost", 6000),),
        "localhost:6000",
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            "postgres://u:p@127.0.0.1:abc/db",
            "the port is not a number from 1 to 65535; use an integer port such as 5432",
        ),
        ("postgres://u:p@[::1/db", "without a closing ']'"),
        ("postgres://u:p@::1/db", "in brackets"),
        ("postgres://u:p@db:99999/db", "the port is not a number"),
        ("postgresql://db/x?port=abc", "the port is not a number"),
        ("port=abc", "the port is not a number"),
        ("host=a,b,c port=1,2", "2 ports for 3 hosts"),
        ("host=a,,b", "host in the host list is empty"),
        ("host=db sslmode=sometimes", "sslmode 'sometimes' is not one of disable, allow"),
        ("host=db connect_timeout=soon", "connect_timeout 'soon' is not a number of seconds"),
        ("host=db pool_max_conns=0", "pool_max_conns '0' must be at least 1"),
        ("host=db password='open", "unterminated quoted value for password"),
        ("just some words", "neither a postgresql:// URL nor key=value pairs"),
        ("   ", "is empty"),
    ],
)
def test_a_malformed_connection_string_says_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(SettingValueError) as raised:
        parse_libpq(text)
    assert fragment in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "postgres://u:s3cret@127.0.0.1:abc/db",
        "host=db port=abc password=s3cret",
        "password=s3cret sslmode=bogus",
    ],
)
def test_connection_string_errors_never_quote_the_password(text: str) -> None:
    with pytest.raises(ComponentError) as raised:
        PostgreSQLSettings.from_metadata({"connectionString": text})
    assert raised.value.field == "spec.metadata.connectionString"
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://u:p%40ss@[::1]:5433,h2/db?sslmode=disable&sslrootcert=/ca.pem",
        "host=db port=5433 user=u password='a b\\'c' dbname=x",
        "host=/var/run/postgresql user=u dbname=x",
        "postgresql://u@h1,h2:5433/db",
    ],
)
def test_to_url_is_read_back_the_same_by_asyncpg(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The URL the sidecar will hand asyncpg; asyncpg's own DSN parser is private API, so this
    # test goes wherever asyncpg is installed and is the early warning if that parser changes.
    connect_utils = pytest.importorskip("asyncpg.connect_utils")
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE"):
        monkeypatch.delenv(name, raising=False)
    dsn = parse_libpq(text)
    nothing: dict[str, Any] = dict.fromkeys(
        (
            "host",
            "port",
            "user",
            "password",
            "passfile",
            "database",
            "ssl",
            "service",
            "servicefile",
            "direct_tls",
            "server_settings",
            "target_session_attrs",
            "krbsrvname",
            "gsslib",
        )
    )
    addresses, params = connect_utils._parse_connect_dsn_and_args(dsn=dsn.to_url(), **nothing)
    expected = [a.host if a.host.startswith("/") else (a.host, a.port) for a in dsn.addresses]
    assert [a if isinstance(a, tuple) else a.rpartition("/")[0] for a in addresses] == expected
    assert (params.user, params.password, params.database) == (dsn.user, dsn.password, dsn.dbname)


# --- state.redis ------------------------------------------------------------------------------


def test_redis_defaults() -> None:
    settings = RedisSettings.from_metadata(REDIS)
    assert settings == RedisSettings(hosts=(HostPort("redis", 6379),))
    assert (settings.db, settings.dial_timeout, settings.read_timeout, settings.ttl_in_seconds) == (
        0,
        2.0,
        5.0,
        None,
    )
    assert (settings.enable_tls, settings.insecure_skip_tls_verify, settings.failover) == (
        False,
        False,
        False,
    )
    assert settings.address == HostPort("redis", 6379)


def test_redis_every_setting_is_read() -> None:
    settings = RedisSettings.from_metadata(
        {
            "redisHost": "[::1]",
            "redisPort": "7000",
            "redisUsername": "app",
            "redisPassword": " pw ",
            "redisDB": "3",
            "redisType": "node",
            "enableTLS": "true",
            "insecureSkipTLSVerify": "yes",
            "dialTimeout": "250",
            "readTimeout": "1m",
            "ttlInSeconds": "3600",
        }
    )
    assert settings.hosts == (HostPort("::1", 7000),)
    assert (settings.username, settings.password, settings.db) == ("app", " pw ", 3)
    assert (settings.enable_tls, settings.insecure_skip_tls_verify) == (True, True)
    assert (settings.dial_timeout, settings.read_timeout, settings.ttl_in_seconds) == (
        0.25,
        60.0,
        3600,
    )
    assert " pw " not in repr(settings)


def test_redis_sentinel_settings() -> None:
    settings = RedisSettings.from_metadata(
        {
            "redisHost": "s1, s2:5000",
            "failover": "true",
            "sentinelMasterName": "mymaster",
            "sentinelUsername": "watcher",
            "sentinelPassword": "spw",
        }
    )
    assert settings.hosts == (HostPort("s1", 26379), HostPort("s2", 5000))
    assert (settings.failover, settings.sentinel_master_name) == (True, "mymaster")
    assert (settings.sentinel_username, settings.sentinel_password) == ("watcher", "spw")
    assert "spw" not in repr(settings)
    with_port = RedisSettings.from_metadata(
        {"redisHost": "s1", "redisPort": "1", "failover": "1", "sentinelMasterName": "m"}
    )
    assert with_port.hosts == (HostPort("s1", 1),)


def test_redis_cluster_settings() -> None:
    settings = RedisSettings.from_metadata(
        {"redisHost": "n1:7000, n2:7001,n3", "redisType": "cluster", "keyPrefixHashTag": "true"}
    )
    assert settings.cluster
    assert settings.key_prefix_hash_tag
    assert settings.hosts == (HostPort("n1", 7000), HostPort("n2", 7001), HostPort("n3", 6379))
    assert not RedisSettings.from_metadata(REDIS).cluster


@pytest.mark.parametrize(
    ("extra", "name", "fragment"),
    [
        ({"failover": "true", "sentinelMasterName": "m"}, "failover", "exclude each other"),
        ({"redisDB": "2"}, "redisDB", "Redis Cluster has only database 0"),
    ],
)
def test_redis_cluster_refuses_what_a_cluster_cannot_do(
    extra: dict[str, str], name: str, fragment: str
) -> None:
    refused(RedisSettings, {**REDIS, "redisType": "cluster", **extra}, name, fragment)


def test_redis_client_certificate_and_ca_are_pem_text() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    key = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"
    settings = RedisSettings.from_metadata(
        {**REDIS, "enableTLS": "true", "clientCert": cert, "clientKey": key, "caCert": cert}
    )
    assert (settings.client_cert, settings.client_key, settings.ca_cert) == (cert, key, cert)
    assert "MHc" not in repr(settings)
    # The error names the missing half of the pair.
    refused(RedisSettings, {**REDIS, "clientKey": key}, "clientCert", "set clientCert too")


@pytest.mark.parametrize("ttl", ["0", "-1"])
def test_redis_ttl_zero_or_minus_one_means_no_default_ttl(ttl: str) -> None:
    assert RedisSettings.from_metadata({**REDIS, "ttlInSeconds": ttl}).ttl_in_seconds is None


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("redisHost", "redis:abc", "use an integer port such as 6379"),
        ("redisHost", "a:1,b:2", "only Sentinel (failover: true) and Redis Cluster"),
        ("redisHost", "::1", "in brackets"),
        ("redisPort", "abc", "use an integer port such as 6379"),
        ("redisPort", "70000", "use an integer port"),
        ("redisDB", "-1", "at least 0"),
        ("redisDB", "one", "whole number such as 0"),
        ("redisType", "sentinel", "use node (one server or Sentinel) or cluster"),
        ("clientCert", "/etc/tls/client.crt", "must be the PEM text itself"),
        ("caCert", "-----BEGIN CERTIFICATE-----", "only used with TLS: set enableTLS: true"),
        ("keyPrefixHashTag", "always", "use true or false"),
        ("enableTLS", "maybe", "use true or false (got 'maybe')"),
        ("insecureSkipTLSVerify", "sure", "use true or false"),
        ("failover", "perhaps", "use true or false"),
        ("dialTimeout", "soon", "whole number of milliseconds"),
        ("dialTimeout", "0", "must be positive"),
        ("readTimeout", "-5s", "must be positive"),
        ("ttlInSeconds", "1h", "whole number such as 3600"),
        ("ttlInSeconds", "-2", "at least -1"),
        ("ttlInSeconds", str(2**31), "at most 2147483647"),
        ("sentinelMasterName", "m", "only used with Sentinel: set failover: true"),
        ("sentinelUsername", "u", "only used with Sentinel"),
        ("sentinelPassword", "p", "only used with Sentinel"),
        ("poolSize", "10", "no pool to size"),
        ("maxRetries", "3", "does not retry Redis commands"),
        ("redisMaxRetries", "3", "does not retry Redis commands"),
        ("outboxPublishPubsub", "pubsub", "no transactional outbox"),
        ("queryIndexes", "[]", "is not a setting of state.redis (known: "),
    ],
)
def test_redis_errors_name_the_setting_and_the_fix(name: str, value: str, fragment: str) -> None:
    refused(RedisSettings, {**REDIS, name: value}, name, fragment)


def test_redis_failover_needs_a_master_name() -> None:
    refused(
        RedisSettings,
        {**REDIS, "failover": "true"},
        "sentinelMasterName",
        "failover is true: set sentinelMasterName",
    )


def test_redis_needs_a_host() -> None:
    refused(RedisSettings, {}, "redisHost", "state.redis needs it")
    refused(RedisSettings, {"redisHost": "  "}, "redisHost", "state.redis needs it")


def test_the_component_name_stands_in_for_a_missing_source() -> None:
    with pytest.raises(ComponentError, match=r"^component orders: spec.metadata.redisPort: "):
        RedisSettings.from_metadata({**REDIS, "redisPort": "x"}, component="orders")


# --- state.sqlite -----------------------------------------------------------------------------


def test_sqlite_defaults() -> None:
    settings = SQLiteSettings.from_metadata(SQLITE)
    assert (settings.target.database, settings.target.uri, settings.target.label) == (
        "/data/state.db",
        False,
        "/data/state.db",
    )
    assert (settings.table_name, settings.timeout, settings.busy_timeout) == ("state", 20.0, 2.0)
    assert (settings.disable_wal, settings.cleanup_interval) == (False, 600.0)


def test_sqlite_every_setting_and_alias_is_read() -> None:
    settings = SQLiteSettings.from_metadata(
        {
            "url": "data.db?mode=ro&_txlock=immediate&_pragma=cache_size(-2000)",
            "tableName": "orders_2",
            "timeoutInSeconds": "30",
            "busyTimeout": "500ms",
            "disableWAL": "true",
            "cleanupIntervalInSeconds": "60",
        }
    )
    target = settings.target
    assert (target.database, target.uri, target.read_only, target.pragmas) == (
        "file:data.db?mode=ro",
        True,
        True,
        (("cache_size", "-2000"),),
    )
    assert (settings.table_name, settings.timeout, settings.busy_timeout) == ("orders_2", 30.0, 0.5)
    assert (settings.disable_wal, settings.cleanup_interval) == (True, 60.0)
    again = SQLiteSettings.from_metadata({**SQLITE, "timeout": "1m", "cleanupInterval": "1h"})
    assert (again.timeout, again.cleanup_interval) == (60.0, 3600.0)


@pytest.mark.parametrize("text", [":memory:", "file::memory:?cache=shared", "file:x?mode=memory"])
def test_sqlite_in_memory_targets(text: str) -> None:
    assert SQLiteSettings.from_metadata({"connectionString": text}).target.in_memory


@pytest.mark.parametrize("interval", ["0", "-1", "-5m"])
def test_sqlite_cleanup_zero_or_negative_disables_the_sweep(interval: str) -> None:
    assert (
        SQLiteSettings.from_metadata({**SQLITE, "cleanupInterval": interval}).cleanup_interval
        == 0.0
    )


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        (
            "connectionString",
            "x.db?_pragma=journal_mode(DELETE)",
            "use the disableWAL setting instead",
        ),
        ("connectionString", "x.db?_pragma=busy_timeout(5)", "use the busyTimeout setting instead"),
        ("connectionString", "x.db?_pragma=foreign_keys(1)", "statecar manages it"),
        ("connectionString", "x.db?_pragma=nonsense", "write _pragma=name(value)"),
        ("tableName", "my-table", "letters, digits and '_' only"),
        ("tableName", "a;drop", "letters, digits and '_' only"),
        ("timeout", "500ms", "at least 1s"),
        ("timeout", "soon", "whole number of seconds"),
        ("timeoutInSeconds", "0", "at least 1s"),
        ("busyTimeout", "-1s", "must not be negative"),
        ("busyTimeout", "2 s", "duration such as 500ms"),
        ("disableWAL", "maybe", "use true or false"),
        ("cleanupInterval", "often", "whole number of seconds"),
        ("cleanupIntervalInSeconds", "1.5", "whole number of seconds"),
        ("redisHost", "x", "is not a setting of state.sqlite"),
        ("outboxPubsub", "p", "no transactional outbox"),
    ],
)
def test_sqlite_errors_name_the_setting_and_the_fix(name: str, value: str, fragment: str) -> None:
    refused(SQLiteSettings, {**SQLITE, name: value}, name, fragment)


def test_sqlite_needs_a_connection_string_and_one_spelling_of_each_setting() -> None:
    refused(SQLiteSettings, {}, "connectionString", "state.sqlite needs it")
    refused(
        SQLiteSettings,
        {**SQLITE, "url": "other.db"},
        "url",
        "connectionString and url are the same setting; keep one",
    )
    refused(
        SQLiteSettings,
        {**SQLITE, "timeout": "2s", "timeoutInSeconds": "3"},
        "timeoutInSeconds",
        "keep one",
    )


# --- state.postgresql -------------------------------------------------------------------------


def test_postgresql_defaults() -> None:
    settings = PostgreSQLSettings.from_metadata(PG)
    assert settings.connection == parse_libpq(PG["connectionString"])
    assert (settings.table_name, settings.table_schema, settings.table) == ("state", None, "state")
    assert (
        settings.timeout,
        settings.max_conns,
        settings.connection_max_idle_time,
        settings.cleanup_interval,
    ) == (5.0, 8, 300.0, 600.0)


def test_postgresql_every_setting_and_alias_is_read() -> None:
    settings = PostgreSQLSettings.from_metadata(
        {
            "connectionString": "postgresql://app:pw@db:5433/app?pool_max_conns=3",
            "tableName": "shop.orders",
            "timeout": "2500ms",
            "maxConns": "12",
            "connectionMaxIdleTime": "30",
            "cleanupIntervalInSeconds": "0",
        }
    )
    assert settings.connection.addresses == (HostPort("db", 5433),)
    assert (settings.table_name, settings.table_schema, settings.table) == (
        "shop.orders",
        "shop",
        "orders",
    )
    assert (
        settings.timeout,
        settings.max_conns,
        settings.connection_max_idle_time,
        settings.cleanup_interval,
    ) == (2.5, 12, 30.0, 0.0)
    again = PostgreSQLSettings.from_metadata(
        {**PG, "timeoutInSeconds": "7", "cleanupInterval": "1m"}
    )
    assert (again.timeout, again.cleanup_interval) == (7.0, 60.0)


def test_postgresql_max_conns_defaults_to_the_connection_strings_pool_size() -> None:
    settings = PostgreSQLSettings.from_metadata({"connectionString": "host=db pool_max_conns=3"})
    assert settings.max_conns == 3


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("connectionString", "postgres://u:p@127.0.0.1:abc/db", "use an integer port such as 5432"),
        ("connectionString", "port=abc", "use an integer port such as 5432"),
        ("connectionString", "postgres://u:p@[::1/db", "without a closing ']'"),
        ("tableName", "1state", "not starting with a digit"),
        ("tableName", "a.b.c", "optionally after 'schema.'"),
        ("tableName", "x" * 42, "at most 41"),
        ("timeoutInSeconds", "0", "must be positive"),
        ("timeout", "-1s", "must be positive"),
        ("timeoutInSeconds", "5 s", "whole number of seconds"),
        ("maxConns", "0", "at least 1"),
        ("maxConns", "eight", "whole number such as 8"),
        ("connectionMaxIdleTime", "-1", "must not be negative"),
        ("connectionMaxIdleTime", "idle", "duration such as"),
        ("cleanupInterval", "x", "duration such as"),
        ("useAzureAD", "true", "authenticates with the connection string's password only"),
        ("useAWSIAM", "false", "authenticates with the connection string's password only"),
        ("outboxPublishTopic", "t", "no transactional outbox"),
    ],
)
def test_postgresql_errors_name_the_setting_and_the_fix(
    name: str, value: str, fragment: str
) -> None:
    refused(PostgreSQLSettings, {**PG, name: value}, name, fragment)


def test_postgresql_needs_a_connection_string() -> None:
    refused(PostgreSQLSettings, {"tableName": "x"}, "connectionString", "state.postgresql needs it")


# --- state.in-memory and every backend ------------------------------------------------------


def test_in_memory_takes_no_settings_but_the_common_ones() -> None:
    assert (
        InMemorySettings.from_metadata({"keyPrefix": "name", "actorStateStore": "true"})
        == InMemorySettings()
    )
    refused(
        InMemorySettings,
        {"redisHost": "x"},
        "redisHost",
        "is not a setting of state.in-memory (known: none)",
    )


def test_the_allowed_and_required_tables_derive_from_the_settings_classes() -> None:
    assert set(BACKEND_METADATA) == set(BACKENDS)
    for kind, backend in BACKENDS.items():
        assert BACKEND_METADATA[kind] == {n for s in backend.SETTINGS for n in s.names}
        assert not BACKEND_METADATA[kind] & {r.name for r in backend.REFUSED}
        assert REQUIRED_METADATA.get(kind, frozenset()) == {
            s.name for s in backend.SETTINGS if s.required
        }
    assert {
        "state.redis": {"redisHost"},
        "state.postgresql": {"connectionString"},
        "state.sqlite": {"connectionString"},
    } == REQUIRED_METADATA


MINIMAL = {
    "state.in-memory": {},
    "state.sqlite": SQLITE,
    "state.redis": REDIS,
    "state.postgresql": PG,
}


#: Settings that accept any text (a name, a password, a file path): the tests above check them.
FREE_TEXT = frozenset(
    {
        ("state.redis", "redisUsername"),
        ("state.redis", "redisPassword"),
        ("state.redis", "sentinelMasterName"),
        ("state.redis", "sentinelUsername"),
        ("state.redis", "sentinelPassword"),
        ("state.sqlite", "connectionString"),
    }
)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (k, n)
        for k in sorted(BACKEND_METADATA)
        for n in sorted(BACKEND_METADATA[k])
        if (k, n) not in FREE_TEXT
    ],
)
def test_every_allowed_name_is_read_not_ignored(kind: str, name: str) -> None:
    # A value no setting accepts: every name in the table must reach a parser and be refused.
    metadata = {**MINIMAL[kind], name: "[bogus"}
    if name.startswith("sentinel"):
        metadata["failover"] = "true"
    with pytest.raises(ComponentError) as raised:
        read_settings(kind, metadata)
    assert raised.value.field == f"spec.metadata.{name}"


# --- through parse_component and resolve -----------------------------------------------------


def document(kind: str, *items: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "statecar.io/v1alpha1",
        "kind": "StateStoreComponent",
        "metadata": {"name": "orders"},
        "spec": {"type": kind, "metadata": list(items)},
    }


def test_parse_component_checks_every_value_given() -> None:
    with pytest.raises(ComponentError) as raised:
        parse_component(
            document(
                "state.redis",
                {"name": "redisHost", "value": "r"},
                {"name": "enableTLS", "value": "maybe"},
            ),
            source="o.yaml",
        )
    assert (raised.value.field, raised.value.source) == ("spec.metadata.enableTLS", "o.yaml")
    assert "use true or false" in str(raised.value)


def test_parse_component_accepts_what_the_stores_read() -> None:
    spec = parse_component(
        document(
            "state.sqlite",
            {"name": "url", "value": "x.db"},
            {"name": "disableWAL", "value": True},
            {"name": "timeout", "value": "30s"},
            {"name": "cleanupInterval", "value": 0},
        )
    )
    assert [m.name for m in spec.metadata] == ["url", "disableWAL", "timeout", "cleanupInterval"]


@pytest.mark.parametrize(
    ("kind", "name", "value", "fragment"),
    [
        ("state.redis", "redisType", "sentinel", "use node (one server or Sentinel) or cluster"),
        ("state.redis", "poolSize", "10", "no pool to size"),
        ("state.redis", "maxRetries", "3", "does not retry"),
        ("state.redis", "redisMaxRetries", "3", "does not retry"),
        ("state.redis", "outboxPublishPubsub", "p", "no transactional outbox"),
        ("state.postgresql", "useAzureAD", "true", "password only"),
    ],
)
def test_parse_component_refuses_with_the_reason(
    kind: str, name: str, value: str, fragment: str
) -> None:
    base = {"state.redis": REDIS, "state.postgresql": PG}[kind]
    items: list[dict[str, object]] = [
        {"name": k, "value": v} for k, v in {**base, name: value}.items()
    ]
    with pytest.raises(ComponentError) as raised:
        parse_component(document(kind, *items))
    assert fragment in str(raised.value)
    assert name in str(raised.value)


def test_sqlite_without_a_connection_string_is_refused_at_parse_time() -> None:
    with pytest.raises(ComponentError, match=r"state\.sqlite needs connectionString") as raised:
        parse_component(document("state.sqlite"))
    assert raised.value.field == "spec.metadata"


def test_secret_values_are_checked_when_resolved_and_never_quoted() -> None:
    spec = parse_component(
        document(
            "state.redis",
            {"name": "redisHost", "secretKeyRef": {"name": "redis", "key": "host"}},
            {"name": "failover", "secretKeyRef": {"name": "redis", "key": "failover"}},
            {"name": "redisPort", "secretKeyRef": {"name": "redis", "key": "port"}},
        )
    )
    host, failover, port = (SecretKeyRef("redis", k) for k in ("host", "failover", "port"))
    with pytest.raises(ComponentError, match="failover is true: set sentinelMasterName"):
        resolve(spec, {host: "a,b", failover: "true", port: "1"})
    with pytest.raises(ComponentError, match="only Sentinel"):
        resolve(spec, {host: "a,b", failover: "false", port: "1"})
    with pytest.raises(ComponentError) as raised:
        resolve(spec, {host: "r", failover: "false", port: "hunter2"})
    assert raised.value.field == "spec.metadata.redisPort"
    assert "hunter2" not in str(raised.value)
    assert str(raised.value).startswith("component orders: ")


def test_a_secret_connection_string_defers_the_required_check() -> None:
    spec = parse_component(
        document(
            "state.postgresql",
            {"name": "connectionString", "secretKeyRef": {"name": "pg", "key": "dsn"}},
        )
    )
    ref = SecretKeyRef("pg", "dsn")
    with pytest.raises(ComponentError, match=r"state\.postgresql needs it"):
        resolve(spec, {ref: ""})
    settings = resolve(spec, {ref: "host=db"}).settings()
    assert isinstance(settings, PostgreSQLSettings)
    assert settings.connection.hosts == ("db",)


def test_resolved_components_read_their_settings() -> None:
    component = ResolvedComponent(
        "c", "state.redis", metadata={"redisHost": "r:1", "ttlInSeconds": "60"}
    )
    settings = component.settings()
    assert isinstance(settings, RedisSettings)
    assert settings.ttl_in_seconds == 60


# --- the reference ----------------------------------------------------------------------------


def test_the_component_reference_is_generated_from_the_settings_classes() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/components.md is stale: run"
        " `python3 -m statecar_contract.settings.reference > docs/components.md`"
    )


def test_the_reference_documents_every_setting_and_refusal() -> None:
    text = render()
    for backend in BACKENDS.values():
        for setting in backend.SETTINGS:
            assert f"| `{setting.name}` |" in text
        for refusal in backend.REFUSED:
            assert f"| `{refusal.name}` | {refusal.reason} |" in text


def test_resolve_names_the_file_when_given() -> None:
    spec = parse_component(
        document(
            "state.redis",
            {"name": "redisHost", "value": "r"},
            {"name": "redisPort", "secretKeyRef": {"name": "redis", "key": "port"}},
        )
    )
    ref = SecretKeyRef("redis", "port")
    with pytest.raises(ComponentError, match=r"^orders\.yaml: spec\.metadata\.redisPort: "):
        resolve(spec, {ref: "x"}, source="orders.yaml")
    with pytest.raises(ComponentError, match=r"^orders\.yaml: spec\.metadata\[1\]\.secretKeyRef: "):
        resolve(spec, {}, source="orders.yaml")


def test_each_backends_settings_class_is_imported_with_its_first_component() -> None:
    """A sidecar reads only its own backends' classes (a cold start's cost: the contract's
    `settings.BACKENDS` and `components.BACKEND_METADATA` are built on first use)."""
    assert list(BACKENDS) == ["state.in-memory", "state.sqlite", "state.redis", "state.postgresql"]
    assert all(kind == backend.TYPE for kind, backend in BACKENDS.items())
    code = (
        "import sys\n"
        "from statecar_contract.components import parse_component\n"
        "parse_component({'apiVersion': 'dapr.io/v1alpha1', 'kind': 'Component',"
        " 'metadata': {'name': 's'}, 'spec': {'type': 'state.redis', 'version': 'v1',"
        " 'metadata': [{'name': 'redisHost', 'value': 'h:1'}]}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('statecar_contract.settings.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [
        "['statecar_contract.settings.redis',",
        "'statecar_contract.settings.schema',",
        "'statecar_contract.settings.values']",
    ]
