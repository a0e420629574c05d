"""
Is a component's backend reachable from the operator? Measured, never assumed.

Redis: TCP (or TLS) connect, `AUTH` when a password is set, `PING`, spoken in RESP by hand so the
operator needs no Redis client. PostgreSQL: connect with asyncpg and `SELECT 1` (a plain TCP
connect when asyncpg is not installed, said so in the message). SQLite and in-memory stores live
inside each pod, so there is nothing to reach from here. Every check is bounded by `timeout`.
Messages name the address but never a measurement, so an unchanged backend yields an unchanged
condition (see `conditions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from statecar_contract.components import ResolvedComponent
from statecar_operator.reconciliation.conditions import Reachability

_POD_LOCAL: Final = frozenset({"state.sqlite", "state.in-memory"})
_REDIS_DEFAULT_PORT: Final = 6379
_POSTGRES_DEFAULT_PORT: Final = 5432
_MAX_LINE: Final = 64 * 1024
_LIBPQ_PAIR: Final = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")


async def measure(component: ResolvedComponent, *, timeout: float) -> Reachability:  # noqa: ASYNC109  # the bound is applied inside, per check, with asyncio.timeout
    """One bounded check of `component`'s backend."""
    if component.type in _POD_LOCAL:
        return Reachability(
            "True",
            "PodLocal",
            f"{component.type} lives inside each pod's sidecar; nothing to reach from the operator",
        )
    try:
        async with asyncio.timeout(timeout):
            if component.type == "state.redis":
                return await _redis(component.metadata)
            if component.type == "state.postgresql":
                return await _postgresql(component.metadata)
    except TimeoutError:
        return Reachability("False", "Timeout", f"no answer within {timeout:g}s")
    except ValueError as exc:  # a malformed port or setting: the sidecar could not connect either
        return Reachability("False", "BadSettings", str(exc))
    return Reachability("Unknown", "UnsupportedType", f"cannot measure {component.type}")


# --- Redis -----------------------------------------------------------------------------------


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, or a bare host."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, int(port) if port else default_port
    return address, default_port


async def _redis(metadata: Mapping[str, str]) -> Reachability:
    sentinel = _truthy(metadata.get("failover"))
    if sentinel:
        # With failover, redisHost lists sentinels (Dapr's state.redis), which answer PING too.
        username, password = metadata.get("sentinelUsername"), metadata.get("sentinelPassword")
    else:
        username, password = metadata.get("redisUsername"), metadata.get("redisPassword")
    default_port = int(metadata.get("redisPort") or _REDIS_DEFAULT_PORT)
    tls = _tls_context(metadata) if _truthy(metadata.get("enableTLS")) else None
    hosts = [h for h in (metadata.get("redisHost") or "").split(",") if h.strip()]
    if not hosts:
        return Reachability("False", "NoAddress", "redisHost is empty")
    first_failure: Reachability | None = None
    for raw in hosts:
        try:
            host, port = split_host_port(raw, default_port)
        except ValueError:
            return Reachability(
                "False", "BadAddress", f"redisHost {raw.strip()!r} is not host:port"
            )
        outcome = await _redis_one(host, port, tls, username or None, password or None)
        if outcome.status == "True":
            return outcome
        first_failure = first_failure or outcome
    return first_failure or Reachability("False", "NoAddress", "redisHost is empty")


async def _redis_one(
    host: str, port: int, tls: ssl.SSLContext | None, username: str | None, password: str | None
) -> Reachability:
    where = f"{host}:{port}"
    failure = await _open(host, port, tls)
    if isinstance(failure, Reachability):
        return failure
    reader, writer = failure
    try:
        if password:
            args = ["AUTH", username, password] if username else ["AUTH", password]
            reply = await _command(reader, writer, args)
            if not reply.startswith("+"):
                return Reachability(
                    "False", "AuthenticationFailed", f"{where} refused AUTH: {_error_text(reply)}"
                )
        reply = await _command(reader, writer, ["PING"])
        if reply.startswith("+PONG"):
            return Reachability("True", "Reachable", f"{where} answers PING")
        if reply.startswith("-NOAUTH"):
            return Reachability(
                "False", "AuthenticationRequired", f"{where} needs a password (set redisPassword)"
            )
        return Reachability(
            "False", "UnexpectedReply", f"{where} answered PING with {_error_text(reply)}"
        )
    except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
        return Reachability(
            "False", "ProtocolError", f"{where} closed or garbled the connection: {exc}"
        )
    finally:
        writer.close()
        with contextlib.suppress(Exception):  # the peer may have gone already; nothing to report
            await writer.wait_closed()


def _encode_command(args: list[str]) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: list[str]
) -> str:
    writer.write(_encode_command(args))
    await writer.drain()
    line = await reader.readuntil(b"\r\n")
    if len(line) > _MAX_LINE:
        raise ValueError("reply line too long")
    return line[:-2].decode("utf-8", "replace")


def _error_text(reply: str) -> str:
    return reply[1:] if reply[:1] in {"-", "+"} else repr(reply[:200])


def _tls_context(metadata: Mapping[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if _truthy(metadata.get("insecureSkipTLSVerify")):
        # The component asks for it explicitly (Dapr's insecureSkipTLSVerify), as the sidecar will.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- PostgreSQL ------------------------------------------------------------------------------


def parse_libpq(connection_string: str) -> dict[str, str]:
    """`host=db port=5432 user=u password='a b'` (libpq keyword/value form) as a dict."""
    pairs: dict[str, str] = {}
    for match in _LIBPQ_PAIR.finditer(connection_string):
        key, value = match[1], match[2]
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        pairs[key] = value
    return pairs


def postgres_target(connection_string: str) -> tuple[str | None, dict[str, Any]]:
    """(dsn, kwargs) for asyncpg.connect: URLs pass through, libpq strings become kwargs."""
    text = connection_string.strip()
    if text.startswith(("postgres://", "postgresql://")):
        return text, {}
    pairs = parse_libpq(text)
    kwargs: dict[str, Any] = {}
    for source, target in (("host", "host"), ("user", "user"), ("password", "password")):
        if pairs.get(source):
            kwargs[target] = pairs[source]
    database = pairs.get("dbname") or pairs.get("database")
    if database:
        kwargs["database"] = database
    if pairs.get("port"):
        kwargs["port"] = int(pairs["port"])
    if pairs.get("sslmode"):
        kwargs["ssl"] = pairs["sslmode"]
    return None, kwargs


async def _postgresql(metadata: Mapping[str, str]) -> Reachability:
    try:
        dsn, kwargs = postgres_target(metadata.get("connectionString") or "")
    except ValueError as exc:
        return Reachability("False", "BadAddress", f"connectionString: {exc}")
    where = _postgres_where(dsn, kwargs)
    try:
        asyncpg: Any = importlib.import_module("asyncpg")
    except ImportError:
        host, port = _postgres_host_port(dsn, kwargs)
        opened = await _open(host, port, None)
        if isinstance(opened, Reachability):
            return opened
        opened[1].close()
        return Reachability(
            "True",
            "TCPOnly",
            f"{where} accepts connections (asyncpg is not installed: not logged in)",
        )
    try:
        connection = await asyncpg.connect(dsn, **kwargs)
    except OSError as exc:
        return _os_failure(where, exc)
    except asyncpg.InvalidPasswordError as exc:
        return Reachability("False", "AuthenticationFailed", f"{where}: {exc}")
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        return Reachability("False", "AuthenticationFailed", f"{where}: {exc}")
    except asyncpg.InvalidCatalogNameError as exc:
        return Reachability("False", "DatabaseNotFound", f"{where}: {exc}")
    except asyncpg.PostgresError as exc:
        return Reachability("False", "ConnectFailed", f"{where}: {exc}")
    try:
        await connection.fetchval("SELECT 1")
    except asyncpg.PostgresError as exc:
        return Reachability("False", "QueryFailed", f"{where}: SELECT 1 failed: {exc}")
    finally:
        await connection.close()
    return Reachability("True", "Reachable", f"{where} answers SELECT 1")


def _postgres_host_port(dsn: str | None, kwargs: Mapping[str, Any]) -> tuple[str, int]:
    if dsn is not None:
        parts = urlsplit(dsn)
        return parts.hostname or "localhost", parts.port or _POSTGRES_DEFAULT_PORT
    return str(kwargs.get("host") or "localhost"), int(kwargs.get("port") or _POSTGRES_DEFAULT_PORT)


def _postgres_where(dsn: str | None, kwargs: Mapping[str, Any]) -> str:
    try:
        host, port = _postgres_host_port(dsn, kwargs)
    except ValueError:
        return "postgresql"
    return f"{host}:{port}"


# --- shared ----------------------------------------------------------------------------------


async def _open(
    host: str, port: int, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | Reachability:
    try:
        return await asyncio.open_connection(host, port, ssl=tls, limit=_MAX_LINE * 2)
    except OSError as exc:
        return _os_failure(f"{host}:{port}", exc)


def _os_failure(where: str, exc: OSError) -> Reachability:
    if isinstance(exc, socket.gaierror):
        return Reachability(
            "False", "NameResolutionFailed", f"{where}: the host name does not resolve"
        )
    if isinstance(exc, ConnectionRefusedError):
        return Reachability("False", "ConnectionRefused", f"{where} refuses connections")
    if isinstance(exc, ssl.SSLError):
        return Reachability("False", "TLSHandshakeFailed", f"{where}: {exc.reason or exc}")
    return Reachability("False", "ConnectionFailed", f"{where}: {exc.strerror or exc}")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on", "t", "y"}
