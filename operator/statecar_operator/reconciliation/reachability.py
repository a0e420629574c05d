"""
Is a component's backend reachable from the operator? Measured, never assumed.

Redis: TCP (or TLS) connect, `AUTH` when a password is set, `PING`, spoken in RESP by hand so the
operator needs no Redis client. PostgreSQL: connect with asyncpg and `SELECT 1` (a plain TCP
connect when asyncpg is not installed, said so in the message). SQLite and in-memory stores live
inside each pod, so there is nothing to reach from here. Every check is bounded by `timeout`.
The settings are read by the contract's settings classes (`RedisSettings`, and
`PostgreSQLSettings` with its parsed `PostgresDSN`), as the sidecar reads them, so both reach the
same address; settings the sidecar would refuse are reported as BadAddress or BadSettings with
the sidecar's message.
Messages name the address but never a measurement, so an unchanged backend yields an unchanged
condition (see `conditions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import ssl
from typing import Any, Final

from statecar_contract.components import ComponentError, ResolvedComponent
from statecar_contract.settings import HostPort, PostgresDSN, PostgreSQLSettings, RedisSettings
from statecar_contract.settings.redis_tls import redis_tls_context
from statecar_contract.settings.values import SettingValueError
from statecar_operator.reconciliation.conditions import Reachability

_POD_LOCAL: Final = frozenset({"state.sqlite", "state.in-memory"})
_MAX_LINE: Final = 64 * 1024


# A malformed one of these is reported as BadAddress, any other invalid setting as BadSettings.
_ADDRESS_FIELDS: Final = frozenset(
    f"spec.metadata.{name}" for name in ("redisHost", "redisPort", "connectionString")
)


async def measure(component: ResolvedComponent, *, timeout: float) -> Reachability:  # noqa: ASYNC109  # the bound is applied inside, per check, with asyncio.timeout
    """One bounded check of `component`'s backend, read through its typed settings."""
    if component.type in _POD_LOCAL:
        return Reachability(
            "True",
            "PodLocal",
            f"{component.type} lives inside each pod's sidecar; nothing to reach from the operator",
        )
    try:
        settings = component.settings()
    except ComponentError as exc:  # the sidecar refuses the same settings with the same message
        reason = "BadAddress" if exc.field in _ADDRESS_FIELDS else "BadSettings"
        return Reachability("False", reason, str(exc))
    try:
        async with asyncio.timeout(timeout):
            if isinstance(settings, RedisSettings):
                return await _redis(settings)
            if isinstance(settings, PostgreSQLSettings):
                return await _postgresql(settings.connection)
    except TimeoutError:
        return Reachability("False", "Timeout", f"no answer within {timeout:g}s")
    return Reachability("Unknown", "UnsupportedType", f"cannot measure {component.type}")


# --- Redis -----------------------------------------------------------------------------------


async def _redis(settings: RedisSettings) -> Reachability:
    if settings.failover:
        # With failover, redisHost lists sentinels (Dapr's state.redis), which answer PING too.
        username, password = settings.sentinel_username, settings.sentinel_password
    else:
        username, password = settings.username, settings.password
    try:
        tls = redis_tls_context(settings) if settings.enable_tls else None
    except SettingValueError as exc:  # the sidecar refuses the same PEM with the same message
        return Reachability("False", "BadSettings", str(exc))
    first_failure: Reachability | None = None
    for address in settings.hosts:
        outcome = await _redis_one(address, tls, username, password)
        if outcome.status == "True":
            return outcome
        first_failure = first_failure or outcome
    assert first_failure is not None  # RedisSettings holds at least one host
    return first_failure


async def _redis_one(
    address: HostPort, tls: ssl.SSLContext | None, username: str | None, password: str | None
) -> Reachability:
    where = address.address
    failure = await _open(address, tls)
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


# --- PostgreSQL ------------------------------------------------------------------------------


async def _postgresql(connection: PostgresDSN) -> Reachability:
    """Connect as the sidecar does (`to_url()` plus the server settings), then `SELECT 1`."""
    address = connection.addresses[0]
    where = address.address
    try:
        asyncpg: Any = importlib.import_module("asyncpg")
    except ImportError:
        opened = await _open(address, None)
        if isinstance(opened, Reachability):
            return opened
        opened[1].close()
        return Reachability(
            "True",
            "TCPOnly",
            f"{where} accepts connections (asyncpg is not installed: not logged in)",
        )
    try:
        conn = await asyncpg.connect(
            connection.to_url(),
            server_settings=dict(connection.server_settings) or None,
            **({"timeout": connection.connect_timeout} if connection.connect_timeout else {}),
        )
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
        await conn.fetchval("SELECT 1")
    except asyncpg.PostgresError as exc:
        return Reachability("False", "QueryFailed", f"{where}: SELECT 1 failed: {exc}")
    finally:
        await conn.close()
    return Reachability("True", "Reachable", f"{where} answers SELECT 1")


# --- shared ----------------------------------------------------------------------------------


async def _open(
    address: HostPort, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | Reachability:
    try:
        if address.host.startswith("/"):  # a PostgreSQL Unix-socket directory
            path = f"{address.host}/.s.PGSQL.{address.port}"
            return await asyncio.open_unix_connection(path, limit=_MAX_LINE * 2)
        return await asyncio.open_connection(
            address.host, address.port, ssl=tls, limit=_MAX_LINE * 2
        )
    except OSError as exc:
        return _os_failure(address.address, exc)


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
