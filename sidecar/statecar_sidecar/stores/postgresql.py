"""
`state.postgresql`: state in one PostgreSQL table, shared by every sidecar that names it.

This module owns the PostgreSQL layout, the SQL that makes the concurrency rule of `etags`
atomic in one round trip per request, the mapping of consistency onto `synchronous_commit`,
its connection pool, and how an unreachable server is reported. It reads daprd's component
metadata (components-contrib `state/postgresql`):

* `connectionString`: a libpq URL (`postgresql://user:pass@host:5432/db?sslmode=require`) or a
  key=value DSN (`host=db port=5432 user=app password='p w' dbname=app`). libpq/pgx client
  options daprd users put there (`connect_timeout`, `pool_max_conns`, `pool_min_conns`, ...)
  are honoured or dropped, never sent to the server as settings; `options=-c name=value`
  and unknown names become server settings, as libpq does.
* `tableName` (default `state`; `schema.table` allowed), `timeoutInSeconds` (or `timeout`, a
  Go duration; default 5 s: the bound on every operation, waiting for a connection included),
  `maxConns` (default 8), `connectionMaxIdleTime` (default 5 min), `cleanupInterval` /
  `cleanupIntervalInSeconds` (default 10 min, 0 disables).

Layout: `<table>(key text COLLATE "C" PRIMARY KEY, value bytea, etag bigint, expire_at
timestamptz, updated_at timestamptz)`, a sequence `<table>_etag_seq` and a function
`<table>_statecar_write_v1`, created when missing under an advisory lock, so sidecars starting
together do not race on the catalogs. The "C" collation orders keys by code point: a key prefix
is an index range, and the query engine's key tiebreak is the index order. daprd's own tables
(jsonb values, xid or UUID ETags) have another layout; `open` refuses them with a clear error.

The concurrency table as SQL: each row of contract.md's table is the WHERE clause of one
conditional statement, and the row lock that statement takes makes check-then-write atomic:

    save, ETag given        UPDATE ... WHERE key = $k AND etag = $given AND <live>
    save, no ETag           INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE NOT $first_write
                            OR <the existing row has expired>
    delete, ETag given      DELETE ... WHERE key = $k AND etag = $given AND <live>
    delete, first-write     succeeds iff no live row (nothing to write)
    delete, last-write      DELETE ... WHERE key = $k

A statement that touches no row is a refused check; `etags.check_write` / `check_delete` then
build the error from the key's live ETag, so messages match every other backend. A single save
or delete is ONE statement, so one round trip (a `SELECT ... FOR UPDATE` in a client-side
transaction would be four: BEGIN, SELECT, write, COMMIT). Several ops (a transaction, a
multi-item save) are ONE call of the plpgsql function, which runs the same statements in order;
in a transaction it raises at the first refused op, which rolls the whole call back.

ETags: `greatest(current + 1, nextval(<table>_etag_seq))`. The sequence starts at the server's
clock in microseconds when the table is created (so ETags look like every other backend's) and
only grows, so an ETag never repeats in the table: across delete and re-create, across sidecars
and across clock steps, which reading a clock on each write would not guarantee.

Consistency: connections run with `synchronous_commit = local` (eventual: acknowledged once
flushed on the primary; never weaker, whatever the server's default). A strong write sets
`remote_apply` for its own transaction, so its commit also waits until the synchronous standbys
named by `synchronous_standby_names`, if any, have applied it
(https://www.postgresql.org/docs/current/runtime-config-wal.html#GUC-SYNCHRONOUS-COMMIT);
a standby that does not confirm in time fails the request with ConsistencyError. Reads always
go to the server of the connection string, the primary.

Failures: a server that refuses connections, drops them or does not answer within the timeout
raises StoreUnavailableError naming host:port (never the password). Dead connections are
replaced on next use, so the store recovers by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Self, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import asyncpg

from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Feature, Operation, SetOp, StateStore, StoredItem
from statecar_sidecar.stores.errors import (
    ConsistencyError,
    ETagMismatchError,
    StoreError,
    StoreUnavailableError,
    TransactionError,
)
from statecar_sidecar.stores.metadata import duration
from statecar_sidecar.stores.query import (
    Query,
    QueryError,
    QueryPage,
    QueryResult,
    compile_postgres,
    run_query,
)

__all__ = ["PostgreSQLStore"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

_DEFAULT_TABLE: Final = "state"
_DEFAULT_TIMEOUT: Final = 5.0
_DEFAULT_MAX_CONNS: Final = 8
_DEFAULT_IDLE_LIFETIME: Final = 300.0
_DEFAULT_CLEANUP_INTERVAL: Final = 600.0
_CLEANUP_BATCH: Final = 1000
_ROLLBACK_RETRIES: Final = 3
# Unquoted identifiers, optionally schema-qualified, short enough that the derived names
# (`<table>_statecar_write_v1`) stay within PostgreSQL's 63-byte limit.
_TABLE_NAME: Final = re.compile(
    r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,40})"
)
_INT64_MAX: Final = 2**63 - 1
# Stands in for a given ETag too large for bigint: valid text that can only mismatch (every
# ETag issued here is positive).
_NO_ETAG: Final = -1
_CHECK_FAILED: Final = "SC409"  # the SQLSTATE the write function raises for a refused op
_WRITTEN: Final = "written"  # what it reports for a key an earlier op of the call wrote
_SYNC_EVENTUAL: Final = "local"
_SYNC_STRONG: Final = "remote_apply"
_EXPECTED_COLUMNS: Final = {
    "key": "text",
    "value": "bytea",
    "etag": "bigint",
    "expire_at": "timestamp with time zone",
}

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

# Errors that mean "the server cannot serve us now", not "this request is wrong".
_UNAVAILABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, crash, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,  # no such database
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby
)
# Server errors after which the session is gone (the others leave the connection usable).
_SESSION_LOST: Final[tuple[type[BaseException], ...]] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


# ---------------------------------------------------------------------------------------------
# Metadata.


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
class _ConnectTarget:
    """What to hand asyncpg, and how to name the server in messages (without the password)."""

    dsn: str
    server_settings: dict[str, str]
    label: str
    password: str | None
    connect_timeout: float | None
    max_size: int | None


def _parse_connection_string(text: str) -> _ConnectTarget:
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
    return _ConnectTarget(
        dsn=dsn,
        server_settings=server_settings,
        label=f"{host}:{port}" + (f"/{database}" if database else ""),
        password=password or None,
        connect_timeout=connect_timeout,
        max_size=max_size,
    )


@dataclass(frozen=True, slots=True)
class _Names:
    """Quoted SQL names derived from a validated `tableName`."""

    table: str
    sequence: str
    function: str
    index: str
    lock_key: str
    bare: str

    @classmethod
    def of(cls, table_name: str) -> _Names:
        match = _TABLE_NAME.fullmatch(table_name)
        if match is None:
            raise StoreError(
                f"invalid tableName {table_name!r}: use letters, digits and '_' (at most 41),"
                " optionally after 'schema.'"
            )
        schema, bare = match.group(1), match.group(2)

        def qualified(name: str) -> str:
            return f'"{schema}"."{name}"' if schema else f'"{name}"'

        return cls(
            table=qualified(bare),
            sequence=qualified(bare + "_etag_seq"),
            function=qualified(bare + "_statecar_write_v1"),
            index=f'"{bare}_expire_at_idx"',
            lock_key=f"statecar:{table_name}",
            bare=bare,
        )


# ---------------------------------------------------------------------------------------------
# SQL. `_render` pastes in only names derived from the validated tableName and fixed fragments;
# everything a request supplies is a bound parameter.

_LIVE: Final = "(expire_at IS NULL OR expire_at > now())"
# A key prefix: a range on the "C"-collated primary key (index-backed), then the exact test.
_PREFIX: Final = (
    '(key COLLATE "C" >= $1 AND ($2::text IS NULL OR key COLLATE "C" < $2)'
    " AND starts_with(key, $1))"
)
_EXPIRY: Final = "CASE WHEN {ttl} IS NULL THEN NULL ELSE now() + {ttl} * interval '1 second' END"
# Setting synchronous_commit for this statement's own transaction, as a FROM item so it is
# evaluated before any row is written (a write joins its one row).
_SYNC: Final = "(SELECT set_config('synchronous_commit', {mode}, true)) AS sync"

_STATEMENTS: Final = {
    "get": (
        "SELECT value, etag, extract(epoch FROM expire_at)::float8 FROM {t}"
        " WHERE key = $1 AND {live}"
    ),
    "bulk_get": (
        "SELECT key, value, etag, extract(epoch FROM expire_at)::float8 FROM {t}"
        " WHERE key = ANY($1::text[]) AND {live}"
    ),
    "observe": "SELECT etag FROM {t} WHERE key = $1 AND {live}",
    # $1 key, $2 value, $3 ttl seconds, $4 given ETag, $5 synchronous_commit
    "save_if": (
        "UPDATE {t} SET value = $2, etag = greatest(etag + 1, nextval('{seq}')),"
        " expire_at = {expiry_3}, updated_at = now()"
        " FROM {sync_5} WHERE key = $1 AND etag = $4 AND {live} RETURNING etag"
    ),
    # $1 key, $2 value, $3 ttl seconds, $4 first-write, $5 synchronous_commit
    "save": (
        "INSERT INTO {t} AS s (key, value, etag, expire_at, updated_at)"
        " SELECT $1, $2, nextval('{seq}'), {expiry_3}, now() FROM {sync_5}"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
        " etag = greatest(s.etag + 1, excluded.etag), expire_at = excluded.expire_at,"
        " updated_at = excluded.updated_at"
        " WHERE NOT $4::boolean OR (s.expire_at IS NOT NULL AND s.expire_at <= now())"
        " RETURNING s.etag"
    ),
    # $1 key, $2 given ETag, $3 synchronous_commit
    "delete_if": "DELETE FROM {t} USING {sync_3} WHERE key = $1 AND etag = $2 AND {live} RETURNING 0",
    # $1 key, $2 synchronous_commit
    "delete": "DELETE FROM {t} USING {sync_2} WHERE key = $1",
    "write_many": (
        "SELECT r_ok, r_etag FROM {fn}($1::boolean, $2::boolean, $3::boolean[], $4::text[],"
        " $5::bytea[], $6::bigint[], $7::boolean[], $8::integer[])"
    ),
    "rows": "SELECT key, value, etag FROM {t} WHERE {prefix} AND {live} ORDER BY key",
    # The query engine's WHERE and ORDER BY are appended (never formatted: they hold braces).
    # OFFSET 0 keeps the subquery from being flattened, so each value is parsed as JSON once,
    # and only for live rows under the prefix.
    "query": (
        "SELECT key, value, etag FROM (SELECT key, value, etag,"
        " convert_from(value, 'UTF8')::jsonb AS doc FROM {t} WHERE {prefix} AND {live}"
        " OFFSET 0) AS rows WHERE "
    ),
    # Batches that skip rows other transactions hold, so the sweep never waits on traffic;
    # the outer test re-checks a row rewritten since the inner SELECT.
    "sweep": (
        "DELETE FROM {t} WHERE key IN (SELECT key FROM {t} WHERE expire_at <= now()"
        " LIMIT {batch} FOR UPDATE SKIP LOCKED) AND expire_at <= now()"
    ),
    "columns": (
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = '{t}'::regclass AND attnum > 0 AND NOT attisdropped"
    ),
    "sequence_start": (
        # Start at the server clock in µs, and above any ETag already stored.
        "SELECT greatest((extract(epoch FROM clock_timestamp()) * 1e6)::bigint,"
        " (SELECT coalesce(max(etag), 0) + 1 FROM {t}))"
    ),
    "signature": (
        "{fn}(boolean, boolean, boolean[], text[], bytea[], bigint[], boolean[], integer[])"
    ),
}

_TABLE_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {t} ("
    ' key text COLLATE "C" NOT NULL PRIMARY KEY,'
    " value bytea NOT NULL,"
    " etag bigint NOT NULL,"
    " expire_at timestamptz,"
    " updated_at timestamptz NOT NULL DEFAULT now())",
    # Partial index: the sweep finds expired rows without reading keys that never expire.
    "CREATE INDEX IF NOT EXISTS {x} ON {t} (expire_at) WHERE expire_at IS NOT NULL",
)

# Several ops in one round trip: the statements above, in order, in the call's transaction.
# p_atomic: raise at the first refused op (everything rolls back); otherwise report each op's
# outcome and go on (a multi-item save). r_etag holds the new ETag of a successful save, or
# the live ETag (NULL: absent) the refused op was judged against.
_FUNCTION_DDL: Final = """
CREATE OR REPLACE FUNCTION {fn}(
    p_atomic boolean, p_strong boolean, p_delete boolean[], p_keys text[],
    p_values bytea[], p_etags bigint[], p_first boolean[], p_ttls integer[],
    OUT r_ok boolean[], OUT r_etag bigint[])
LANGUAGE plpgsql AS $statecar$
DECLARE
    n integer := coalesce(cardinality(p_keys), 0);
    i integer;
    k text;
    given bigint;
    outcome bigint;
    written text[] := '{{}}';
BEGIN
    IF p_strong THEN
        PERFORM set_config('synchronous_commit', '{strong}', true);
    END IF;
    r_ok := array_fill(false, ARRAY[n]);
    r_etag := array_fill(NULL::bigint, ARRAY[n]);
    FOR i IN 1 .. n LOOP
        k := p_keys[i];
        given := p_etags[i];
        outcome := NULL;
        -- As the memory store's placeholder: a key written earlier in this transaction has
        -- an ETag the client cannot know, so no given ETag matches it.
        IF p_atomic AND given IS NOT NULL AND k = ANY (written) THEN
            RAISE EXCEPTION USING ERRCODE = '{check_failed}',
                MESSAGE = 'statecar: etag check failed', DETAIL = i::text || ' {written}';
        END IF;
        IF p_delete[i] THEN
            IF given IS NOT NULL THEN
                DELETE FROM {t} WHERE key = k AND etag = given AND {live} RETURNING 0 INTO outcome;
            ELSIF p_first[i] THEN
                PERFORM 1 FROM {t} WHERE key = k AND {live};
                IF NOT FOUND THEN
                    outcome := 0;
                END IF;
            ELSE
                DELETE FROM {t} WHERE key = k;
                outcome := 0;
            END IF;
            IF outcome IS NOT NULL THEN
                written := array_remove(written, k);
            END IF;
        ELSE
            IF given IS NOT NULL THEN
                UPDATE {t} SET value = p_values[i],
                       etag = greatest(etag + 1, nextval('{seq}')),
                       expire_at = {expiry_ttl}, updated_at = now()
                 WHERE key = k AND etag = given AND {live}
                RETURNING etag INTO outcome;
            ELSE
                INSERT INTO {t} AS s (key, value, etag, expire_at, updated_at)
                VALUES (k, p_values[i], nextval('{seq}'), {expiry_ttl}, now())
                ON CONFLICT (key) DO UPDATE
                   SET value = excluded.value, etag = greatest(s.etag + 1, excluded.etag),
                       expire_at = excluded.expire_at, updated_at = excluded.updated_at
                 WHERE NOT p_first[i] OR (s.expire_at IS NOT NULL AND s.expire_at <= now())
                RETURNING s.etag INTO outcome;
            END IF;
            IF outcome IS NOT NULL AND p_atomic THEN
                written := written || k;
            END IF;
        END IF;
        IF outcome IS NULL THEN
            SELECT etag INTO outcome FROM {t} WHERE key = k AND {live};
            IF p_atomic THEN
                RAISE EXCEPTION USING ERRCODE = '{check_failed}',
                    MESSAGE = 'statecar: etag check failed',
                    DETAIL = i::text || ' ' || coalesce(outcome::text, '');
            END IF;
        ELSE
            r_ok[i] := true;
        END IF;
        r_etag[i] := outcome;
    END LOOP;
END
$statecar$
"""


def _render(template: str, names: _Names) -> str:
    return template.format(
        t=names.table,
        seq=names.sequence,
        fn=names.function,
        x=names.index,
        live=_LIVE,
        prefix=_PREFIX,
        expiry_3=_EXPIRY.format(ttl="$3::integer"),
        expiry_ttl=_EXPIRY.format(ttl="p_ttls[i]"),
        sync_2=_SYNC.format(mode="$2::text"),
        sync_3=_SYNC.format(mode="$3::text"),
        sync_5=_SYNC.format(mode="$5::text"),
        batch=_CLEANUP_BATCH,
        check_failed=_CHECK_FAILED,
        written=_WRITTEN,
        strong=_SYNC_STRONG,
    )


# ---------------------------------------------------------------------------------------------
# Small pieces.


def _unstorable(key: str) -> str | None:
    """Why PostgreSQL text cannot hold `key` (None: it can)."""
    if "\x00" in key:
        return "the character U+0000"
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            return "a lone surrogate"  # only reachable from Python callers, not from JSON
    return None


def _etag_number(etag: str | None) -> int | None:
    if not etag:
        return None
    number = int(etag)  # validate_etag has passed
    return number if number <= _INT64_MAX else _NO_ETAG


def _ttl(op: Operation) -> int | None:
    # 0, -1 (and any other non-positive value) mean "no expiry" and clear an existing one.
    return op.ttl if isinstance(op, SetOp) and op.ttl is not None and op.ttl > 0 else None


def _write_args(ops: Sequence[Operation], *, atomic: bool, strong: bool) -> tuple[Any, ...]:
    """The write function's arguments: one array per column, in the order of `ops`."""
    return (
        atomic,
        strong,
        [isinstance(op, DeleteOp) for op in ops],
        [op.key for op in ops],
        [op.value if isinstance(op, SetOp) else None for op in ops],
        [_etag_number(op.etag) for op in ops],
        [op.first_write for op in ops],
        [_ttl(op) for op in ops],
    )


def _prefix_successor(prefix: str) -> str | None:
    """The smallest string above every string starting with `prefix` (None: unbounded)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            successor = last + 1
            if 0xD800 <= successor <= 0xDFFF:
                successor = 0xE000  # surrogates have no UTF-8 form
            return "".join(chars) + chr(successor)
    return None


def _refused(op: Operation, observed: str | None) -> ETagMismatchError:
    """The error `etags` gives for `op` judged against the key's live ETag `observed`."""
    if observed == _WRITTEN:
        return ETagMismatchError(
            op.key,
            f"key {op.key!r} was written by an earlier operation of this transaction,"
            f" so etag {op.etag} cannot match",
        )
    try:
        if isinstance(op, SetOp):
            etags.check_write(op.key, observed, op.etag, first_write=op.first_write)
        else:
            etags.check_delete(op.key, observed, op.etag, first_write=op.first_write)
    except ETagMismatchError as exc:
        return exc
    # The key changed between the refused statement and the read of its ETag.
    return ETagMismatchError(op.key, f"key {op.key!r} was changed concurrently")


class _Refused(Exception):
    """The write function refused op `index` (0-based) of an atomic call."""

    def __init__(self, index: int, observed: str | None) -> None:
        super().__init__(index, observed)
        self.index = index
        self.observed = observed


class _Pool:
    """At most `max_size` connections, reused newest first; idle ones retire after a while.

    Smaller than asyncpg's Pool, which by default costs a second round trip per operation
    (RESET ALL on release) and tens of µs of bookkeeping; measured here, this pool adds about
    5 µs to a query on a bare connection. A connection that only got an SQL error back is in
    sync and is reused; one whose state is unknown after an error (socket gone, operation
    cancelled by the timeout) never is.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        max_size: int,
        idle_lifetime: float,
        grace: float,
    ) -> None:
        self._connect = connect
        self._slots = asyncio.Semaphore(max_size)
        self._idle: collections.deque[tuple[Any, float]] = collections.deque()
        self._idle_lifetime = idle_lifetime
        self._grace = grace
        self._retiring: dict[Any, asyncio.TimerHandle] = {}
        self._reaper: asyncio.TimerHandle | None = None
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        async with self._slots:
            if self._closed:
                raise asyncpg.exceptions.InterfaceError("the store is closed")
            conn = self._take_idle()
            if conn is None:
                conn = await self._connect()
            try:
                yield conn
            except asyncpg.PostgresError as exc:
                if isinstance(exc, _SESSION_LOST):
                    conn.terminate()
                else:
                    self._give_back(conn)
                raise
            except asyncio.CancelledError:
                self._retire(conn)
                raise
            except BaseException:
                conn.terminate()
                raise
            self._give_back(conn)

    def _take_idle(self) -> Any:
        while self._idle:
            conn, _ = self._idle.pop()
            # A server that shut down told its idle sessions so; asyncpg then marks them closed.
            if not conn.is_closed():
                return conn
        return None

    def _give_back(self, conn: Any) -> None:
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            return
        self._idle.append((conn, time.monotonic()))
        if self._reaper is None and len(self._idle) > 1:
            self._reaper = asyncio.get_running_loop().call_later(self._idle_lifetime, self._reap)

    def _reap(self) -> None:
        """Close connections idle for longer than the lifetime, keeping one for the next request."""
        self._reaper = None
        cutoff = time.monotonic() - self._idle_lifetime
        while len(self._idle) > 1 and self._idle[0][1] <= cutoff:
            conn, _ = self._idle.popleft()  # the longest idle: reuse takes the newest
            conn.terminate()
        if len(self._idle) > 1:
            wait = self._idle[0][1] - cutoff
            self._reaper = asyncio.get_running_loop().call_later(wait, self._reap)

    def _retire(self, conn: Any) -> None:
        """Close a connection whose operation was cancelled, after a grace period.

        asyncpg answers the cancellation by sending the server a cancel request on a separate
        socket; closing the connection at once would abort that request. A commit waiting for
        synchronous standbys (a strong write) only stops waiting, and releases its row locks,
        when cancelled: a closed socket alone leaves it waiting, blocking later writes of the
        same keys (https://www.postgresql.org/docs/current/warm-standby.html#SYNCHRONOUS-REPLICATION).
        """
        handle = asyncio.get_running_loop().call_later(self._grace, self._terminate, conn)
        self._retiring[conn] = handle

    def _terminate(self, conn: Any) -> None:
        self._retiring.pop(conn, None)
        conn.terminate()

    def expire(self) -> None:
        """Drop every idle connection (after one turned out dead: the others likely are too)."""
        while self._idle:
            conn, _ = self._idle.pop()
            conn.terminate()

    async def close(self, grace: float) -> None:
        """Close idle connections (each given `grace` seconds); busy ones close on release."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn, handle in list(self._retiring.items()):
            handle.cancel()
            self._terminate(conn)
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        for conn in idle:
            try:
                await conn.close(timeout=grace)
            except (*_UNAVAILABLE, asyncpg.PostgresError):
                conn.terminate()


class PostgreSQLStore(StateStore):
    """One table on one PostgreSQL server."""

    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})

    def __init__(
        self,
        target: _ConnectTarget,
        names: _Names,
        *,
        timeout: float,
        max_size: int,
        idle_lifetime: float,
        cleanup_interval: float,
    ) -> None:
        self._target = target
        self._names = names
        self._timeout = timeout
        self._cleanup_interval = cleanup_interval
        self._pool = _Pool(
            self._connect, max_size=max_size, idle_lifetime=idle_lifetime, grace=timeout
        )
        self._closed = False
        self._cleanup_task: asyncio.Task[None] | None = None
        self._sql_in_postgres = True  # False when the database is not UTF8: queries run here
        self._sql = {name: _render(template, names) for name, template in _STATEMENTS.items()}

    @classmethod
    async def open(cls, metadata: Mapping[str, str]) -> Self:
        """Connect, create the table, sequence and function if missing, check the layout."""
        target = _parse_connection_string(metadata.get("connectionString") or "")
        for unsupported in ("useAzureAD", "useAWSIAM"):
            if metadata.get(unsupported, "").strip().lower() == "true":
                raise StoreError(f"{unsupported} is not supported by statecar's state.postgresql")
        names = _Names.of(metadata.get("tableName") or _DEFAULT_TABLE)
        timeout = duration(metadata, ("timeoutInSeconds", "timeout"), _DEFAULT_TIMEOUT)
        if timeout <= 0:
            raise StoreError("timeoutInSeconds must be positive")
        max_conns = metadata.get("maxConns", "").strip()
        try:
            max_size = int(max_conns) if max_conns else (target.max_size or _DEFAULT_MAX_CONNS)
        except ValueError:
            raise StoreError(f"maxConns must be a whole number, got {max_conns!r}") from None
        if max_size < 1:
            raise StoreError("maxConns must be at least 1")
        store = cls(
            target,
            names,
            timeout=timeout,
            max_size=max_size,
            idle_lifetime=duration(metadata, ("connectionMaxIdleTime",), _DEFAULT_IDLE_LIFETIME),
            cleanup_interval=duration(
                metadata, ("cleanupInterval", "cleanupIntervalInSeconds"), _DEFAULT_CLEANUP_INTERVAL
            ),
        )
        try:
            # Connecting, then a few DDL round trips (which may wait for another sidecar's).
            async with asyncio.timeout(timeout * 3), store._pool.connection() as conn:
                await store._prepare_schema(conn)
        except _UNAVAILABLE as exc:
            await store.close()
            raise store._unavailable(exc) from exc
        except asyncpg.PostgresError as exc:
            await store.close()
            raise store._failed(exc) from exc
        except BaseException:
            await store.close()
            raise
        if store._cleanup_interval > 0:
            store._cleanup_task = asyncio.create_task(
                store._cleanup_loop(), name=f"statecar-postgresql-cleanup-{names.bare}"
            )
        return store

    async def _connect(self) -> Any:
        settings = dict(self._target.server_settings)
        settings.setdefault("application_name", "statecar")
        # Eventual means "flushed on the primary": never weaker, even on a server running with
        # synchronous_commit=off; strong raises it per transaction.
        settings["synchronous_commit"] = _SYNC_EVENTUAL
        return await asyncpg.connect(
            self._target.dsn,
            timeout=self._target.connect_timeout or self._timeout,
            command_timeout=self._timeout,
            server_settings=settings,
        )

    async def _prepare_schema(self, conn: Any) -> None:
        names = self._names
        async with conn.transaction():
            # Sidecars starting together would otherwise race on the catalogs (CREATE ... IF
            # NOT EXISTS is not safe against a concurrent CREATE of the same name).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", names.lock_key)
            encoding = str(await conn.fetchval("SHOW server_encoding")).upper()
            # compile_postgres needs UTF8 (its "C" collation then orders by code point).
            self._sql_in_postgres = encoding in ("UTF8", "UTF-8")
            # Create only what is missing: a role without CREATE can use tables made for it.
            if await conn.fetchval("SELECT to_regclass($1)", names.table) is None:
                for statement in _TABLE_DDL:
                    await conn.execute(_render(statement, names))
            await self._check_layout(conn)
            if await conn.fetchval("SELECT to_regclass($1)", names.sequence) is None:
                start = int(await conn.fetchval(self._sql["sequence_start"]))
                await conn.execute(
                    f"CREATE SEQUENCE IF NOT EXISTS {names.sequence} AS bigint"
                    f" START WITH {start} MINVALUE 1"
                )
            if await conn.fetchval("SELECT to_regprocedure($1)", self._sql["signature"]) is None:
                await conn.execute(_render(_FUNCTION_DDL, names))

    async def _check_layout(self, conn: Any) -> None:
        columns = {str(name): str(kind) for name, kind in await conn.fetch(self._sql["columns"])}
        if any(columns.get(name) != kind for name, kind in _EXPECTED_COLUMNS.items()):
            found = ", ".join(f"{name} {kind}" for name, kind in columns.items())
            raise StoreError(
                f"table {self._names.table} at {self._target.label} was not created by statecar"
                f" (it has {found}); daprd's PostgreSQL tables have another layout, so point"
                " tableName at a new table"
            )

    # -----------------------------------------------------------------------------------------
    # Running statements.

    def _scrub(self, text: str) -> str:
        password = self._target.password
        return text.replace(password, "***") if password else text

    def _unavailable(self, exc: BaseException, *, strong_write: bool = False) -> StoreError:
        where = f"PostgreSQL at {self._target.label}"
        if isinstance(exc, TimeoutError):
            if strong_write:
                # remote_apply waits for the synchronous standbys; one that is down or lagging
                # looks exactly like this.
                return ConsistencyError(
                    f"{where} did not confirm the strong write within {self._timeout:g}s: the"
                    " synchronous standbys did not apply it in time (or the server is not"
                    " answering); it may be committed on the primary only"
                )
            return StoreUnavailableError(f"{where} did not answer within {self._timeout:g}s")
        if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
            return StoreUnavailableError(f"{where} is read-only (a standby?): {exc}")
        reason = self._scrub(str(exc)) or type(exc).__name__
        return StoreUnavailableError(f"{where} is unavailable: {reason}")

    def _failed(self, exc: BaseException) -> StoreError:
        return StoreError(f"PostgreSQL at {self._target.label}: {self._scrub(str(exc))}")

    async def _run(
        self,
        work: Callable[[Any], Awaitable[_T]],
        *,
        idempotent: bool = False,
        strong_write: bool = False,
    ) -> _T:
        """`work(connection)` within the timeout; errors become StoreErrors.

        A read (`idempotent`) is retried once on a new connection when the pooled one turns
        out dead (after a server restart). A write is not: it may have been applied before
        the connection died, and running it again would be judged against its own result.
        A deadlock or serialization failure rolled everything back, so it is retried.
        """
        if self._closed:
            raise StoreUnavailableError(f"PostgreSQL store {self._target.label} is closed")
        deadline = asyncio.get_running_loop().time() + self._timeout  # for all attempts
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout_at(deadline), self._pool.connection() as conn:
                    return await work(conn)
            except _Refused:
                raise
            except asyncpg.exceptions.TransactionRollbackError as exc:
                if attempt >= _ROLLBACK_RETRIES:
                    raise self._failed(exc) from exc
            except _UNAVAILABLE as exc:
                self._pool.expire()
                if not idempotent or attempt > 1 or isinstance(exc, TimeoutError):
                    raise self._unavailable(exc, strong_write=strong_write) from exc
            except asyncpg.PostgresError as exc:
                if getattr(exc, "sqlstate", None) == _CHECK_FAILED:
                    index, _, observed = str(getattr(exc, "detail", "") or "").partition(" ")
                    raise _Refused(int(index) - 1, observed or None) from exc
                raise self._failed(exc) from exc

    async def _fetch(self, sql: str, *args: object) -> list[Any]:
        async def work(conn: Any) -> list[Any]:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

        return await self._run(work, idempotent=True)

    # -----------------------------------------------------------------------------------------
    # Reads.

    async def get(self, key: str, *, strong: bool = False) -> StoredItem | None:
        # Both modes read the server of the connection string, the primary.
        if _unstorable(key):
            return None  # no such key can be stored
        rows = await self._fetch(self._sql["get"], key)
        if not rows:
            return None
        value, etag, expire_at = rows[0]
        return StoredItem(value=bytes(value), etag=str(etag), expire_at=expire_at)

    async def bulk_get(self, keys: Sequence[str]) -> list[StoredItem | None]:
        wanted = list(dict.fromkeys(key for key in keys if not _unstorable(key)))
        if not wanted:
            return [None] * len(keys)
        rows = await self._fetch(self._sql["bulk_get"], wanted)
        found = {
            key: StoredItem(value=bytes(value), etag=str(etag), expire_at=expire_at)
            for key, value, etag, expire_at in rows
        }
        return [found.get(key) for key in keys]

    # -----------------------------------------------------------------------------------------
    # Writes.

    @staticmethod
    def _validate(op: Operation) -> None:
        """What is refused before touching the database."""
        if op.etag:
            etags.validate_etag(op.key, op.etag)
        reason = _unstorable(op.key)
        if reason:
            raise StoreError(f"PostgreSQL cannot store a key containing {reason}: {op.key!r}")

    async def _write_one(self, op: Operation) -> None:
        """One op, one statement: the ETag rule is its WHERE clause."""
        self._validate(op)
        mode = _SYNC_STRONG if op.strong else _SYNC_EVENTUAL
        given = _etag_number(op.etag)
        args: tuple[object, ...]
        if isinstance(op, SetOp):
            if given is not None:
                kind, args = "save_if", (op.key, op.value, _ttl(op), given, mode)
            else:
                kind, args = "save", (op.key, op.value, _ttl(op), op.first_write, mode)
        elif given is not None:
            kind, args = "delete_if", (op.key, given, mode)
        elif op.first_write:
            kind, args = "observe", (op.key,)  # allowed only while the key is absent
        else:
            kind, args = "delete", (op.key, mode)
        sql = self._sql[kind]

        async def work(conn: Any) -> str | None:
            """None when done; else the live ETag ('' for absent) the op was refused against."""
            if kind == "delete":
                await conn.execute(sql, *args)
                return None
            row = await conn.fetchrow(sql, *args)
            if kind == "observe":
                return None if row is None else str(row[0])
            if row is not None:
                return None
            observed = await conn.fetchval(self._sql["observe"], op.key)
            return "" if observed is None else str(observed)

        outcome = await self._run(work, strong_write=op.strong)
        if outcome is not None:
            raise _refused(op, outcome or None)

    async def _write_many(self, ops: Sequence[Operation], *, atomic: bool) -> Any:
        """One call of the write function; returns its (r_ok, r_etag) row."""
        args = _write_args(ops, atomic=atomic, strong=any(op.strong for op in ops))

        async def work(conn: Any) -> Any:
            return await conn.fetchrow(self._sql["write_many"], *args)

        return await self._run(work, strong_write=any(op.strong for op in ops))

    async def set(self, op: SetOp) -> None:
        await self._write_one(op)

    async def delete(self, op: DeleteOp) -> None:
        await self._write_one(op)

    async def set_many(self, ops: Sequence[SetOp]) -> list[Exception | None]:
        """Each item checked and written on its own, in order, all in one round trip."""
        if len(ops) <= 1:
            return await super().set_many(ops)
        results: list[Exception | None] = [None] * len(ops)
        sendable: list[int] = []
        for index, op in enumerate(ops):
            try:
                self._validate(op)
            except StoreError as exc:
                # Refused before the database; it writes nothing, so leaving it out does not
                # change what the items after it are judged against.
                results[index] = exc
            else:
                sendable.append(index)
        if sendable:
            row = await self._write_many([ops[i] for i in sendable], atomic=False)
            for index, ok, etag in zip(sendable, row[0], row[1], strict=True):
                if not ok:
                    results[index] = _refused(ops[index], None if etag is None else str(etag))
        return results

    async def transact(self, ops: Sequence[Operation]) -> None:
        if not ops:
            return
        # Ops are judged in order: an op refused before the database (an invalid ETag) fails
        # the transaction only if every op before it passes.
        invalid: tuple[int, StoreError] | None = None
        for index, op in enumerate(ops):
            try:
                self._validate(op)
            except StoreError as exc:
                invalid = (index, exc)
                break
        try:
            if invalid is not None:
                if invalid[0] > 0:
                    await self._dry_run(ops[: invalid[0]])
            elif len(ops) == 1:
                await self._write_one(ops[0])
            else:
                await self._write_many(ops, atomic=True)
        except ETagMismatchError as exc:  # from the one-op path
            raise TransactionError(0, ops[0].key, exc) from exc
        except _Refused as refused:
            op = ops[refused.index]
            mismatch = _refused(op, refused.observed)
            raise TransactionError(refused.index, op.key, mismatch) from mismatch
        if invalid is not None:
            index, cause = invalid
            raise TransactionError(index, ops[index].key, cause) from cause

    async def _dry_run(self, ops: Sequence[Operation]) -> None:
        """Judge `ops` as a transaction and roll it back: raises _Refused, or returns."""
        args = _write_args(ops, atomic=True, strong=False)

        async def work(conn: Any) -> None:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.fetchrow(self._sql["write_many"], *args)
            finally:
                await transaction.rollback()

        await self._run(work)

    # -----------------------------------------------------------------------------------------
    # Query.

    async def query(self, query: Query, *, key_prefix: str) -> QueryPage:
        upper = _prefix_successor(key_prefix)
        cut = len(key_prefix)
        if self._sql_in_postgres:
            try:
                compiled = compile_postgres(
                    query, value_column="doc", key_column="key", first_param=3
                )
            except QueryError:
                compiled = None  # e.g. U+0000 in a filter string: evaluate it here instead
            if compiled is not None:
                limit, offset = compiled.next_param, compiled.next_param + 1
                sql = "".join(
                    (
                        self._sql["query"],
                        compiled.where,
                        " ORDER BY ",
                        compiled.order_by,
                        f" LIMIT ${limit}::bigint OFFSET ${offset}::bigint",
                    )
                )
                try:
                    rows = await self._fetch(
                        sql, key_prefix, upper, *compiled.params, compiled.limit, compiled.offset
                    )
                except StoreError as exc:
                    # A stored value PostgreSQL cannot read as jsonb (not JSON, not UTF-8, a
                    # \u0000 escape) fails the whole statement, where run_query skips it.
                    if not isinstance(exc.__cause__, asyncpg.exceptions.DataError):
                        raise
                else:
                    results = [
                        QueryResult(key=key[cut:], data=bytes(value), etag=str(etag))
                        for key, value, etag in rows
                    ]
                    return QueryPage(results=results, token=compiled.next_token(len(results)))
        rows = await self._fetch(self._sql["rows"], key_prefix, upper)
        plain = [(key[cut:], bytes(value), str(etag)) for key, value, etag in rows]
        # run_query is CPU-bound: keep the event loop free for other requests meanwhile.
        return await asyncio.to_thread(run_query, query, plain)

    # -----------------------------------------------------------------------------------------
    # TTL sweep, health, shutdown.

    async def _sweep(self) -> int:
        async def work(conn: Any) -> int:
            status = await conn.execute(self._sql["sweep"])
            return int(str(status).rpartition(" ")[2] or 0)

        removed = 0
        while True:
            count = await self._run(work)
            removed += count
            if count < _CLEANUP_BATCH:
                return removed

    async def _cleanup_loop(self) -> None:
        # Expired rows are already invisible; this only gives their space back.
        while True:
            await asyncio.sleep(self._cleanup_interval)
            try:
                removed = await self._sweep()
            except StoreError as exc:
                _log.warning("PostgreSQL %s: TTL cleanup failed: %s", self._target.label, exc)
            else:
                if removed:
                    _log.debug(
                        "PostgreSQL %s: removed %d expired keys", self._target.label, removed
                    )

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pool.close(self._timeout)
