"""
libpq connection strings, as daprd users write them in `connectionString`, turned into what
asyncpg takes.

Both forms are read: a libpq URL (`postgresql://user:pass@host:5432/db?sslmode=require`) or a
key=value DSN (`host=db port=5432 user=app password='p w' dbname=app`). libpq/pgx client
options daprd users put there (`connect_timeout`, `pool_max_conns`, `pool_min_conns`, ...)
are honoured or dropped, never sent to the server as settings; `options=-c name=value`
and unknown names become server settings, as libpq does. Messages name host:port, never the
password.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from statecar_sidecar.stores.errors import StoreError

__all__ = ["ConnectTarget", "parse_connection_string"]

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
# Options asyncpg reads from a URL itself (asyncpg connect_utils._parse_connect_dsn_and_args);
# any other query parameter it would send to the server as a setting.
_ASYNCPG_URL_OPTIONS: Final = frozenset(
    (  # noqa: SIM905 -- as above
        "host port user password passfile dbname database sslmode sslcert sslkey sslrootcert"
        " sslcrl sslpassword sslnegotiation ssl_min_protocol_version ssl_max_protocol_version"
        " target_session_attrs krbsrvname gsslib service"
    ).split()
)
_KEYWORD: Final = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*")
_OPTIONS_SETTING: Final = re.compile(r"(?:-c\s*|--)([A-Za-z_][A-Za-z0-9_.]*)=(\S+)")


def _parse_keyword_value(dsn: str) -> dict[str, str]:
    """libpq's `key=value key='quoted \\' value'` form.

    https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING-KEYWORD-VALUE
    """
    params: dict[str, str] = {}
    position = 0
    while dsn[position:].strip():
        match = _KEYWORD.match(dsn, position)
        if match is None:
            raise StoreError(
                "connectionString is neither a postgresql:// URL nor key=value pairs"
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
                raise StoreError(f"connectionString: unterminated quoted value for {name}")
        params[name] = "".join(value)
    return params


@dataclass(frozen=True, slots=True)
class ConnectTarget:
    """What to hand asyncpg, and how to name the server in messages (without the password)."""

    dsn: str
    server_settings: dict[str, str]
    label: str
    password: str | None
    connect_timeout: float | None
    max_size: int | None


def parse_connection_string(text: str) -> ConnectTarget:
    text = text.strip()
    if not text:
        raise StoreError(
            "state.postgresql needs connectionString: a postgresql:// URL or"
            " 'host=... user=... password=... dbname=...'"
        )
    is_url = text.startswith(("postgres://", "postgresql://"))
    if is_url:
        parts = urlsplit(text)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        netloc, path = parts.netloc, parts.path
        password = unquote(parts.password) if parts.password else params.get("password")
    else:
        params = _parse_keyword_value(text)
        if "hostaddr" in params:
            params.setdefault("host", params["hostaddr"])
            del params["hostaddr"]
        netloc, path = "", ""
        password = params.get("password")
    connect_timeout = None
    if params.get("connect_timeout", "").strip():
        try:
            connect_timeout = float(params["connect_timeout"])
        except ValueError:
            raise StoreError(
                f"connect_timeout must be a number of seconds, got {params['connect_timeout']!r}"
            ) from None
    max_size = None
    if params.get("pool_max_conns", "").strip():
        try:
            max_size = int(params["pool_max_conns"])
        except ValueError:
            raise StoreError(
                f"pool_max_conns must be a whole number, got {params['pool_max_conns']!r}"
            ) from None
    server_settings: dict[str, str] = {}
    # libpq's `options=-c name=value ...`: how a DSN passes server settings.
    for name, value in _OPTIONS_SETTING.findall(params.pop("options", "")):
        server_settings[name] = value
    kept: dict[str, str] = {}
    for name, value in params.items():
        if name in _ASYNCPG_URL_OPTIONS:
            kept[name] = value
        elif name not in _CLIENT_ONLY:
            server_settings[name] = value  # application_name, search_path, ...
    # Rebuilt as a URL asyncpg parses; key=value options all go to the query string (hosts
    # included, so unix-socket directories and host lists need no netloc escaping).
    dsn = f"postgresql://{netloc}{path}"
    if kept:
        dsn += "?" + urlencode(kept, quote_via=quote)
    hostport = netloc.rpartition("@")[2]
    host, port = hostport, ""
    if hostport.startswith("["):  # [IPv6]:port
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest.removeprefix(":")
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    host = kept.get("host") or host or os.environ.get("PGHOST") or "localhost"
    port = kept.get("port") or port or os.environ.get("PGPORT") or "5432"
    database = path.lstrip("/") or kept.get("dbname") or kept.get("database")
    return ConnectTarget(
        dsn=dsn,
        server_settings=server_settings,
        label=f"{host}:{port}" + (f"/{database}" if database else ""),
        password=password or None,
        connect_timeout=connect_timeout,
        max_size=max_size,
    )
