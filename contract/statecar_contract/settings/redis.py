"""
`state.redis` settings: which server, Sentinel or Redis Cluster to reach, how, and the default TTL.

Names, aliases and defaults are daprd's (components-contrib `common/component/redis/settings.go`,
`state/redis/metadata.yaml`). Bare numbers in `dialTimeout`/`readTimeout` are milliseconds, as
there. Settings daprd has that statecar does not implement are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Final, Self

from statecar_contract.settings.schema import MetadataReader, Refused, Setting
from statecar_contract.settings.values import (
    HostPort,
    SettingValueError,
    parse_duration,
    parse_flag,
    parse_host_list,
    parse_integer,
    parse_port,
)

__all__ = ["RedisSettings"]

DEFAULT_PORT: Final = 6379
SENTINEL_PORT: Final = 26379
#: The largest TTL Dapr accepts (components-contrib state/utils/ttl.go: MaxInt32).
MAX_TTL: Final = 2**31 - 1

_NO_RETRIES: Final = (
    "statecar does not retry Redis commands: a command that fails fails the request, and the"
    " client reconnects on its own with a short backoff; remove it"
)


def _positive_ms(text: str) -> float:
    seconds = parse_duration(text, bare_unit=0.001)
    if seconds <= 0:
        raise SettingValueError("must be positive")
    return seconds


def _redis_type(text: str) -> str:
    value = text.strip().lower()
    if value not in ("node", "cluster"):
        raise SettingValueError("use node (one server or Sentinel) or cluster (Redis Cluster)")
    return value


def _pem(kind: str) -> Callable[[str], str]:
    # daprd takes the PEM text itself (components-contrib common/component/redis/settings.go,
    # SetCertificate: tls.X509KeyPair of the two strings), not a file path.
    marker = "PRIVATE KEY-----" if kind == "PRIVATE KEY" else f"-----BEGIN {kind}-----"

    def parse(text: str) -> str:
        if marker not in text:
            raise SettingValueError(
                f"must be the PEM text itself (-----BEGIN {kind}-----...), not a file path;"
                " put the file's content in a secret and use a secretKeyRef"
            )
        return text

    return parse


def _ttl(text: str) -> int | None:
    seconds = parse_integer(text, minimum=-1, maximum=MAX_TTL, example="3600")
    return seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisSettings:
    """Everything `state.redis` (and the operator's reachability probe) reads from metadata."""

    TYPE: ClassVar[str] = "state.redis"
    SUMMARY: ClassVar[str] = (
        "State in Redis with daprd's layout (one hash per key), on one server, behind Sentinel,"
        " or on a Redis Cluster."
    )
    REDIS_HOST: ClassVar[Setting] = Setting(
        "redisHost",
        "host:port list",
        "The server as `host:port` (`[v6]:port` for IPv6). With `failover: true`, a"
        " comma-separated list of Sentinels; with `redisType: cluster`, a comma-separated list"
        " of seed nodes (any one that answers gives the whole topology); otherwise exactly one"
        " address.",
        required=True,
    )
    REDIS_PORT: ClassVar[Setting] = Setting(
        "redisPort",
        "port",
        "The port of every `redisHost` entry that names none.",
        default="6379 (26379 with failover)",
    )
    REDIS_USERNAME: ClassVar[Setting] = Setting(
        "redisUsername", "string", "ACL user name for `AUTH` (Redis 6 and later)."
    )
    REDIS_PASSWORD: ClassVar[Setting] = Setting(
        "redisPassword", "string", "Password for `AUTH`.", secret=True
    )
    REDIS_DB: ClassVar[Setting] = Setting(
        "redisDB",
        "whole number",
        "The database number `SELECT`ed on every connection.",
        default="0",
    )
    REDIS_TYPE: ClassVar[Setting] = Setting(
        "redisType",
        "`node` or `cluster`",
        "`cluster`: Redis Cluster. Each key goes to the primary owning its slot (`MOVED`/`ASK`"
        " followed, topology re-read on failover); reads and writes go to primaries only. A"
        " transaction must keep its keys in one slot (see `keyPrefixHashTag`), else it is"
        " refused. Not with `failover` or a `redisDB` other than 0.",
        default="node",
    )
    ENABLE_TLS: ClassVar[Setting] = Setting(
        "enableTLS",
        "boolean",
        "Connect with TLS, verifying the server's certificate.",
        default="false",
    )
    INSECURE_SKIP_TLS_VERIFY: ClassVar[Setting] = Setting(
        "insecureSkipTLSVerify",
        "boolean",
        "With TLS, do not verify the server's certificate or name.",
        default="false",
    )
    CLIENT_CERT: ClassVar[Setting] = Setting(
        "clientCert",
        "PEM text",
        "With TLS, the client certificate (chain) presented to Redis (`tls-auth-clients yes`);"
        " needs `clientKey`.",
    )
    CLIENT_KEY: ClassVar[Setting] = Setting(
        "clientKey",
        "PEM text",
        "The private key of `clientCert` (unencrypted PEM).",
        secret=True,
    )
    CA_CERT: ClassVar[Setting] = Setting(
        "caCert",
        "PEM text",
        "statecar extension: with TLS, trust these CA certificates instead of the system's"
        " (a private CA). daprd has no such setting: it trusts the system's CAs only.",
    )
    KEY_PREFIX_HASH_TAG: ClassVar[Setting] = Setting(
        "keyPrefixHashTag",
        "boolean",
        "statecar extension: store `prefix||key` as `{prefix}||key`, a Redis Cluster hash tag,"
        " so every key of the prefix (the app, with `keyPrefix: appid`) hashes to one slot and"
        " multi-key transactions are atomic on a cluster. Costs: all of that prefix's keys live"
        " on one primary. daprd reads these keys with `keyPrefix` set to `{prefix}`.",
        default="false",
    )
    FAILOVER: ClassVar[Setting] = Setting(
        "failover",
        "boolean",
        "`redisHost` lists Redis Sentinels; the master is looked up by `sentinelMasterName`.",
        default="false",
    )
    SENTINEL_MASTER_NAME: ClassVar[Setting] = Setting(
        "sentinelMasterName", "string", "The Sentinel master's name; needed with `failover: true`."
    )
    SENTINEL_USERNAME: ClassVar[Setting] = Setting(
        "sentinelUsername", "string", "User name for `AUTH` on the Sentinels (with failover)."
    )
    SENTINEL_PASSWORD: ClassVar[Setting] = Setting(
        "sentinelPassword",
        "string",
        "Password for `AUTH` on the Sentinels (with failover).",
        secret=True,
    )
    DIAL_TIMEOUT: ClassVar[Setting] = Setting(
        "dialTimeout",
        "duration (bare number: milliseconds)",
        "How long connecting (TLS and `AUTH` included) may take.",
        default="2s",
    )
    READ_TIMEOUT: ClassVar[Setting] = Setting(
        "readTimeout",
        "duration (bare number: milliseconds)",
        "How long a command's reply may take.",
        default="5s",
    )
    TTL_IN_SECONDS: ClassVar[Setting] = Setting(
        "ttlInSeconds",
        "whole number",
        "Default TTL of a saved key when the request gives none; `0` or `-1`: none.",
    )
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        REDIS_HOST,
        REDIS_PORT,
        REDIS_USERNAME,
        REDIS_PASSWORD,
        REDIS_DB,
        REDIS_TYPE,
        ENABLE_TLS,
        INSECURE_SKIP_TLS_VERIFY,
        CLIENT_CERT,
        CLIENT_KEY,
        CA_CERT,
        KEY_PREFIX_HASH_TAG,
        FAILOVER,
        SENTINEL_MASTER_NAME,
        SENTINEL_USERNAME,
        SENTINEL_PASSWORD,
        DIAL_TIMEOUT,
        READ_TIMEOUT,
        TTL_IN_SECONDS,
    )
    REFUSED: ClassVar[tuple[Refused, ...]] = (
        Refused(
            "poolSize",
            "statecar's Redis client multiplexes every request over one pipelined connection;"
            " there is no pool to size; remove it",
        ),
        Refused("maxRetries", _NO_RETRIES),
        Refused("redisMaxRetries", _NO_RETRIES),
    )

    #: One server, the Sentinels with `failover`, or the seed nodes of a cluster.
    hosts: tuple[HostPort, ...]
    #: `redisType: cluster`.
    cluster: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    enable_tls: bool = False
    insecure_skip_tls_verify: bool = False
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    ca_cert: str | None = None
    key_prefix_hash_tag: bool = False
    failover: bool = False
    sentinel_master_name: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    #: Seconds.
    dial_timeout: float = 2.0
    read_timeout: float = 5.0
    #: The default TTL in seconds, None for none.
    ttl_in_seconds: int | None = None

    @property
    def address(self) -> HostPort:
        """The server (without failover), the first Sentinel or the first cluster seed."""
        return self.hosts[0]

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, str],
        *,
        component: str | None = None,
        source: str | None = None,
        deferred: Collection[str] = (),
        redacted: Collection[str] = (),
    ) -> Self:
        read = MetadataReader(
            cls, metadata, component=component, source=source, deferred=deferred, redacted=redacted
        )
        cluster = read.read(cls.REDIS_TYPE, _redis_type, "node") == "cluster"
        failover = read.read(cls.FAILOVER, parse_flag, False)
        port = read.read(
            cls.REDIS_PORT,
            partial(parse_port, example=DEFAULT_PORT),
            SENTINEL_PORT if failover else DEFAULT_PORT,
        )
        hosts: tuple[HostPort, ...] = read.read(
            cls.REDIS_HOST,
            partial(parse_host_list, default_port=port),
            (HostPort("localhost", port),),  # stands in for a value from a secret
        )
        if len(hosts) > 1 and not failover and not cluster and not read.is_deferred(cls.FAILOVER):
            raise read.error(
                cls.REDIS_HOST.name,
                f"lists {len(hosts)} addresses, but only Sentinel (failover: true) and Redis"
                " Cluster (redisType: cluster) take a list: give one host:port or set one of them",
            )
        master = read.text(cls.SENTINEL_MASTER_NAME)
        settings = cls(
            hosts=hosts,
            cluster=cluster,
            username=read.text(cls.REDIS_USERNAME) or None,
            password=read.text(cls.REDIS_PASSWORD) or None,
            db=read.read(cls.REDIS_DB, partial(parse_integer, minimum=0, example="0"), 0),
            enable_tls=read.read(cls.ENABLE_TLS, parse_flag, False),
            insecure_skip_tls_verify=read.read(cls.INSECURE_SKIP_TLS_VERIFY, parse_flag, False),
            client_cert=read.read(cls.CLIENT_CERT, _pem("CERTIFICATE"), None),
            client_key=read.read(cls.CLIENT_KEY, _pem("PRIVATE KEY"), None),
            ca_cert=read.read(cls.CA_CERT, _pem("CERTIFICATE"), None),
            key_prefix_hash_tag=read.read(cls.KEY_PREFIX_HASH_TAG, parse_flag, False),
            failover=failover,
            sentinel_master_name=master,
            sentinel_username=read.text(cls.SENTINEL_USERNAME) or None,
            sentinel_password=read.text(cls.SENTINEL_PASSWORD) or None,
            dial_timeout=read.read(cls.DIAL_TIMEOUT, _positive_ms, 2.0),
            read_timeout=read.read(cls.READ_TIMEOUT, _positive_ms, 5.0),
            ttl_in_seconds=read.read(cls.TTL_IN_SECONDS, _ttl, None),
        )
        _check_tls(read, cls, settings)
        if cluster:
            if failover:
                raise read.error(
                    cls.FAILOVER.name,
                    "Sentinel and Redis Cluster exclude each other (a cluster fails over on its"
                    " own): remove failover, or set redisType: node",
                )
            if settings.db:
                raise read.error(
                    cls.REDIS_DB.name,
                    "Redis Cluster has only database 0: remove redisDB (or set it to 0)",
                )
        if read.is_deferred(cls.FAILOVER):
            return settings
        if failover and not read.present(cls.SENTINEL_MASTER_NAME):
            raise read.error(
                cls.SENTINEL_MASTER_NAME.name,
                "failover is true: set sentinelMasterName to the Sentinel master's name",
            )
        if not failover:
            for setting in (cls.SENTINEL_MASTER_NAME, cls.SENTINEL_USERNAME, cls.SENTINEL_PASSWORD):
                if read.present(setting):
                    raise read.error(
                        setting.name,
                        "is only used with Sentinel: set failover: true, or remove it",
                    )
        return settings


def _check_tls(read: MetadataReader, cls: type[RedisSettings], settings: RedisSettings) -> None:
    """Client certificates go in pairs and, like a CA, only mean something with TLS."""
    cert, key = read.present(cls.CLIENT_CERT), read.present(cls.CLIENT_KEY)
    if cert != key:
        given, missing = (
            (cls.CLIENT_CERT, cls.CLIENT_KEY) if cert else (cls.CLIENT_KEY, cls.CLIENT_CERT)
        )
        raise read.error(
            missing.name, f"{given.name} is set: set {missing.name} too (they are a pair)"
        )
    if read.is_deferred(cls.ENABLE_TLS) or settings.enable_tls:
        return
    for setting in (cls.CLIENT_CERT, cls.CA_CERT):
        if read.present(setting):
            raise read.error(
                setting.name, "is only used with TLS: set enableTLS: true, or remove it"
            )
