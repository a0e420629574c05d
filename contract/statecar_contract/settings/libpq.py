"""
PostgreSQL connection strings: the one libpq parser for the sidecar's store and the operator.

Both forms libpq accepts (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING):

* URL: `postgresql://user:pass@host:5432,other:5433/db?sslmode=require` (or `postgres://`);
  user, password, hosts and database are percent-decoded, IPv6 hosts are bracketed.
* keyword/value: `host=db port=5432 user=app password='p w' dbname=app`, with libpq's quoting
  (`'...'`, and `\\` escaping the next character).

The result, `PostgresDSN`, is typed: hosts and ports, user, password, database, sslmode, the
client options statecar interprets (`connect_timeout`, `pool_max_conns`), the server settings a
DSN passes (`options=-c name=value` and unknown keywords, as libpq does), and every other
connection keyword asyncpg reads (`sslrootcert`, `target_session_attrs`, ...). Driver-free:
`to_url` rebuilds a URL that asyncpg parses, so the sidecar and the probe connect the same way.
Errors never quote the password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlencode

from statecar_contract.settings.values import (
    HostPort,
    SettingValueError,
    parse_host_port,
    parse_integer,
    parse_port,
)

__all__ = ["DEFAULT_PORT", "PostgresDSN", "parse_libpq"]

DEFAULT_PORT: Final = 5432
_SSLMODES: Final = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq/pgx options that configure the client: never sent to the server as settings.
_CLIENT_ONLY: Final = frozenset(
    (  # noqa: SIM905 -- a word list reads better than two dozen one-word lines
        "connect_timeout pool_max_conns pool_min_conns pool_max_conn_lifetime"
        " pool_max_conn_lifetime_jitter pool_max_conn_idle_time pool_health_check_period"
        " statement_cache_capacity description_cache_capacity default_query_exec_mode"
        " prefer_simple_protocol client_encoding fallback_application_name keepalives"
        " keepalives_idle keepalives_interval keepalives_count tcp_user_timeout sslcompression"
        " requirepeer channel_binding gssencmode load_balance_hosts replication"
    ).split()
)
# Connection keywords asyncpg reads from a URL itself (asyncpg connect_utils.
# _parse_connect_dsn_and_args); any other query parameter it would send to the server as a
# setting. The ones with their own field are taken out first.
_CONNECTION: Final = frozenset(
    (  # noqa: SIM905 -- as above
        "passfile sslcert sslkey sslrootcert sslcrl sslpassword sslnegotiation"
        " ssl_min_protocol_version ssl_max_protocol_version target_session_attrs krbsrvname"
        " gsslib service"
    ).split()
)
_OWN_FIELDS: Final = frozenset(
    {"host", "hostaddr", "port", "user", "password", "dbname", "database", "sslmode", "options"}
)
_KEYWORD: Final = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*")
# libpq's `options=-c name=value --name=value`: how a DSN passes server settings.
_OPTIONS_SETTING: Final = re.compile(r"(?:-c\s*|--)([A-Za-z_][A-Za-z0-9_.]*)=(\S+)")
_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresDSN:
    """A parsed libpq connection string."""

    #: Hosts as given (a name, an IP address, or a Unix-socket directory starting with `/`);
    #: empty means libpq's default (PGHOST, then a local socket or localhost).
    hosts: tuple[str, ...] = ()
    #: Empty (5432 everywhere), one port for every host, or one per host.
    ports: tuple[int, ...] = ()
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    sslmode: str | None = None
    #: `connect_timeout` in seconds; None when absent or 0 (libpq: wait indefinitely).
    connect_timeout: float | None = None
    #: pgx's `pool_max_conns`, the default for `maxConns`.
    pool_max_conns: int | None = None
    #: Sent to the server as run-time settings (`options=-c name=value`, unknown keywords).
    server_settings: Mapping[str, str] = field(default_factory=dict)
    #: Other connection keywords asyncpg reads (`sslrootcert`, `target_session_attrs`, ...).
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def addresses(self) -> tuple[HostPort, ...]:
        """Every host with its port; `localhost:5432` when none is given (socket dirs kept)."""
        hosts = self.hosts or ("localhost",)
        ports = self.ports or (DEFAULT_PORT,)
        if len(ports) == 1:
            ports = ports * len(hosts)
        return tuple(HostPort(h, p) for h, p in zip(hosts, ports, strict=True))

    @property
    def label(self) -> str:
        """`host:port/db` of the first server, for messages (never the password)."""
        return self.addresses[0].address + (f"/{self.dbname}" if self.dbname else "")

    def to_url(self) -> str:
        """A `postgresql://` URL asyncpg parses to this connection (password included).

        Everything goes to the query string, hosts included, so Unix-socket directories and
        host lists need no netloc escaping; server settings are left out (pass them to
        asyncpg as `server_settings`) and so are the client options statecar reads itself.
        """
        query: dict[str, str] = {}
        if self.hosts:
            query["host"] = ",".join(
                f"[{h}]" if ":" in h and not h.startswith("/") else h for h in self.hosts
            )
        if self.ports:
            query["port"] = ",".join(str(p) for p in self.ports)
        for name, value in (
            ("user", self.user),
            ("password", self.password),
            ("dbname", self.dbname),
            ("sslmode", self.sslmode),
        ):
            if value:
                query[name] = value
        query.update(self.params)
        return "postgresql://" + ("?" + urlencode(query, quote_via=quote) if query else "")


def parse_libpq(text: str) -> PostgresDSN:
    """Either form of libpq connection string; a malformed one raises SettingValueError."""
    text = text.strip()
    if not text:
        raise SettingValueError(
            "is empty; use a postgresql:// URL or 'host=... user=... password=... dbname=...'"
        )
    if text.startswith(("postgres://", "postgresql://")):
        hosts, ports, params = _parse_url(text)
    else:
        params = _parse_keyword_value(text)
        if "hostaddr" in params:
            params.setdefault("host", params["hostaddr"])
            del params["hostaddr"]
        hosts, ports = (), ()
    if params.get("host", "").strip():
        hosts = tuple(h.strip() for h in params["host"].split(","))
        ports = ()
    if params.get("port", "").strip():
        ports = tuple(
            parse_port(p.strip(), example=DEFAULT_PORT) for p in params["port"].split(",")
        )
    if any(not h for h in hosts):
        raise SettingValueError("a host in the host list is empty")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise SettingValueError(
            f"gives {len(ports)} ports for {len(hosts)} hosts; give one port, or one per host"
        )
    sslmode = params.get("sslmode") or None
    if sslmode is not None and sslmode not in _SSLMODES:
        raise SettingValueError(f"sslmode {sslmode!r} is not one of {', '.join(_SSLMODES)}")
    server_settings = dict(_OPTIONS_SETTING.findall(params.get("options", "")))
    kept: dict[str, str] = {}
    for name, value in params.items():
        if name in _CONNECTION:
            kept[name] = value
        elif name not in _CLIENT_ONLY and name not in _OWN_FIELDS:
            server_settings[name] = value  # application_name, search_path, ...
    return PostgresDSN(
        hosts=hosts,
        ports=ports,
        user=params.get("user") or None,
        password=params.get("password") or None,
        dbname=params.get("dbname") or params.get("database") or None,
        sslmode=sslmode,
        connect_timeout=_connect_timeout(params.get("connect_timeout", "")),
        pool_max_conns=_pool_max_conns(params.get("pool_max_conns", "")),
        server_settings=server_settings,
        params=kept,
    )


def _connect_timeout(raw: str) -> float | None:
    if not raw.strip():
        return None
    if not _SECONDS.fullmatch(raw.strip()):
        raise SettingValueError(f"connect_timeout {raw!r} is not a number of seconds, such as 10")
    return float(raw) or None


def _pool_max_conns(raw: str) -> int | None:
    if not raw.strip():
        return None
    try:
        return parse_integer(raw.strip(), minimum=1, example="8")
    except SettingValueError as exc:
        raise SettingValueError(f"pool_max_conns {raw!r} {exc}") from None


def _parse_url(text: str) -> tuple[tuple[str, ...], tuple[int, ...], dict[str, str]]:
    """`postgresql://[user[:password]@][host[:port][,...]][/dbname][?name=value&...]`."""
    rest = text.partition("://")[2]
    rest, _, _fragment = rest.partition("#")  # libpq has no fragments; urlsplit drops them too
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    params = dict(parse_qsl(query, keep_blank_values=True))
    # The last '@' ends the user info, so an unescaped '@' in a password still works (urlsplit).
    userinfo, at, hostspec = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon and password:
            params["password"] = unquote(password)
    if slash and path:
        params.setdefault("dbname", unquote(path))
    hosts: list[str] = []
    ports: list[int | None] = []
    for part in hostspec.split(",") if hostspec else ():
        decoded = unquote(part)
        if decoded.startswith("/"):  # a Unix-socket directory, percent-encoded in a URL
            hosts.append(decoded)
            ports.append(None)
            continue
        # The host part holds no password (it follows the last '@'), so errors may quote it.
        address = parse_host_port(decoded, default_port=DEFAULT_PORT)
        hosts.append(address.host)
        ports.append(address.port if _has_port(decoded) else None)
    given = [p for p in ports if p is not None]
    resolved = tuple(p or DEFAULT_PORT for p in ports) if given else ()
    return tuple(hosts), resolved, params


def _has_port(part: str) -> bool:
    return part.rpartition("]")[2].count(":") == 1 if part.startswith("[") else ":" in part


def _parse_keyword_value(dsn: str) -> dict[str, str]:
    """libpq's `key=value key='quoted \\' value'` form.

    https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-KEYWORD-VALUE
    """
    params: dict[str, str] = {}
    position = 0
    while dsn[position:].strip():
        match = _KEYWORD.match(dsn, position)
        if match is None:
            raise SettingValueError(
                "is neither a postgresql:// URL nor key=value pairs"
                f" (unexpected text at character {position + 1})"
            )
        name, position = match.group(1), match.end()
        value: list[str] = []
        quoted = position < len(dsn) and dsn[position] == "'"
        position += quoted
        while position < len(dsn):
            char = dsn[position]
            if quoted and char == "'":
                position += 1
                break
            if not quoted and char.isspace():
                break
            if char == "\\" and position + 1 < len(dsn):
                position += 1
                char = dsn[position]
            value.append(char)
            position += 1
        else:
            if quoted:
                raise SettingValueError(f"has an unterminated quoted value for {name}")
        params[name] = "".join(value)
    return params
