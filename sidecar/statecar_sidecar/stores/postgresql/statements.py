"""
The PostgreSQL layout and the SQL text that runs on it, plus the parameters that SQL binds.

Layout: `<table>(key text COLLATE "C" PRIMARY KEY, value bytea, etag bigint, expire_at
timestamptz, updated_at timestamptz)`, a sequence `<table>_etag_seq` and a function
`<table>_statecar_write_v2`, created when missing under an advisory lock, so sidecars starting
together do not race on the catalogs. The "C" collation orders keys by code point: a key prefix
is an index range, and the query engine's key tiebreak is the index order. daprd's own tables
(jsonb values, xid or UUID ETags) have another layout: this one refuses them with a clear error,
and `layout: dapr-v1`/`dapr-v2` serves them instead (`dapr_layout`, `dapr_store`).

The concurrency table as SQL: each row of docs/state-api.md's table is the WHERE clause of one
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

Lock order: before its first statement the function takes transaction-scoped advisory locks,
always in one order: first the table's "writers" lock, then one lock per key in ascending
`hashtext(key)` order (under a class derived from the table name). Row locks taken in request
order would deadlock two calls touching the same keys in opposite orders; a row lock cannot be
taken on a key that does not exist yet, while an advisory lock can, so inserts are covered too.
Each advisory lock is an entry in the server's shared lock table (max_locks_per_transaction per
connection), so a call of more than KEY_LOCKS keys does not lock keys one by one: it takes the
writers lock exclusively instead of shared, waiting for the other multi-key calls on the table
and running alone among them. A single statement holds one row at a time and waits for nothing
else, so it takes no advisory lock. `v2` in the function's name: a database holding v1 (which
locks in request order) gets v2 beside it, never a silent mix.

ETags: `greatest(current + 1, nextval(<table>_etag_seq))`. The sequence starts at the server's
clock in microseconds when the table is created (so ETags look like every other backend's) and
only grows, so an ETag never repeats in the table: across delete and re-create, across sidecars
and across clock steps, which reading a clock on each write would not guarantee.

This module is text and pure functions: it runs nothing. Besides the SQL, it holds the arguments
the SQL binds and how a refusal the SQL reports becomes the error every backend gives.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from statecar_sidecar.stores import etags
from statecar_sidecar.stores.base import DeleteOp, Operation, SetOp
from statecar_sidecar.stores.errors import ETagMismatchError

__all__ = [
    "CHECK_FAILED",
    "CLEANUP_BATCH",
    "EXPECTED_COLUMNS",
    "FUNCTION_DDL",
    "KEY_LOCKS",
    "STATEMENTS",
    "SYNC_EVENTUAL",
    "SYNC_STRONG",
    "TABLE_DDL",
    "WRITTEN",
    "Names",
    "Refused",
    "etag_number",
    "refused_error",
    "render",
    "ttl_of",
    "unstorable",
    "write_args",
]

CLEANUP_BATCH: Final = 1000  # rows one sweep statement deletes at most
# Keys a write call locks one by one at most (PostgreSQL's default max_locks_per_transaction).
KEY_LOCKS: Final = 64
_INT64_MAX: Final = 2**63 - 1
# Stands in for a given ETag too large for bigint: valid text that can only mismatch (every
# ETag issued here is positive).
_NO_ETAG: Final = -1
CHECK_FAILED: Final = "SC409"  # the SQLSTATE the write function raises for a refused op
WRITTEN: Final = "written"  # what it reports for a key an earlier op of the call wrote
SYNC_EVENTUAL: Final = "local"
SYNC_STRONG: Final = "remote_apply"
EXPECTED_COLUMNS: Final = {
    "key": "text",
    "value": "bytea",
    "etag": "bigint",
    "expire_at": "timestamp with time zone",
}


@dataclass(frozen=True, slots=True)
class Names:
    """Quoted SQL names derived from a `tableName` that `PostgreSQLSettings` validated.

    Unquoted identifiers, optionally schema-qualified, short enough that the derived names
    (`<table>_statecar_write_v2`) stay within PostgreSQL's 63-byte limit.
    """

    table: str
    sequence: str
    function: str
    index: str
    lock_key: str
    lock_class: int
    writers_lock: int
    bare: str

    @classmethod
    def of(cls, table_name: str) -> Names:
        schema, _, bare = table_name.rpartition(".")

        def qualified(name: str) -> str:
            return f'"{schema}"."{name}"' if schema else f'"{name}"'

        return cls(
            table=qualified(bare),
            sequence=qualified(bare + "_etag_seq"),
            function=qualified(bare + "_statecar_write_v2"),
            index=f'"{bare}_expire_at_idx"',
            lock_key=f"statecar:{table_name}",
            # The advisory lock class of this table's keys: the same in every sidecar.
            lock_class=int.from_bytes(
                zlib.crc32(f"statecar:{table_name}".encode()).to_bytes(4, "big"), signed=True
            ),
            writers_lock=int.from_bytes(
                hashlib.blake2b(f"statecar-writers:{table_name}".encode(), digest_size=8).digest(),
                "big",
                signed=True,
            ),
            bare=bare,
        )


# ---------------------------------------------------------------------------------------------
# SQL. `render` pastes in only names derived from the validated tableName and fixed fragments;
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

STATEMENTS: Final = {
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

TABLE_DDL: Final = (
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
FUNCTION_DDL: Final = """
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
    h integer;
BEGIN
    IF p_strong THEN
        PERFORM set_config('synchronous_commit', '{strong}', true);
    END IF;
    -- In one canonical order, before any row: see the module's "Lock order".
    IF n > {key_locks} THEN
        PERFORM pg_advisory_xact_lock({writers_lock}::bigint);
    ELSIF n > 1 THEN
        PERFORM pg_advisory_xact_lock_shared({writers_lock}::bigint);
        FOR h IN SELECT DISTINCT hashtext(x) FROM unnest(p_keys) AS x ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock({lock_class}, h);
        END LOOP;
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


def render(template: str, names: Names) -> str:
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
        batch=CLEANUP_BATCH,
        check_failed=CHECK_FAILED,
        written=WRITTEN,
        strong=SYNC_STRONG,
        lock_class=names.lock_class,
        writers_lock=names.writers_lock,
        key_locks=KEY_LOCKS,
    )


def etag_number(etag: str | None) -> int | None:
    if not etag:
        return None
    number = int(etag)  # validate_etag has passed
    return number if number <= _INT64_MAX else _NO_ETAG


def ttl_of(op: Operation) -> int | None:
    # 0, -1 (and any other non-positive value) mean "no expiry" and clear an existing one.
    return op.ttl if isinstance(op, SetOp) and op.ttl is not None and op.ttl > 0 else None


def write_args(ops: Sequence[Operation], *, atomic: bool, strong: bool) -> tuple[Any, ...]:
    """The write function's arguments: one array per column, in the order of `ops`."""
    return (
        atomic,
        strong,
        [isinstance(op, DeleteOp) for op in ops],
        [op.key for op in ops],
        [op.value if isinstance(op, SetOp) else None for op in ops],
        [etag_number(op.etag) for op in ops],
        [op.first_write for op in ops],
        [ttl_of(op) for op in ops],
    )


# ---------------------------------------------------------------------------------------------
# What the statements cannot take, and what a refusal of the write function means.


def unstorable(key: str) -> str | None:
    """Why PostgreSQL text cannot hold `key` (None: it can)."""
    if "\x00" in key:
        return "the character U+0000"
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            return "a lone surrogate"  # only reachable from Python callers, not from JSON
    return None


def refused_error(op: Operation, observed: str | None) -> ETagMismatchError:
    """The error `etags` gives for `op` judged against the key's live ETag `observed`."""
    if observed == WRITTEN:
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


class Refused(Exception):
    """The write function refused op `index` (0-based) of an atomic call."""

    def __init__(self, index: int, observed: str | None) -> None:
        super().__init__(index, observed)
        self.index = index
        self.observed = observed
