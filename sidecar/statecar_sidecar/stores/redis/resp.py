"""A minimal asyncio Redis (RESP2) client: the wire layer under the Redis state store.

This module holds the wire protocol; `client` builds the connection management stores use on
top of it. It runs past 500 lines because `Connection` is one job: its protocol callbacks, its
first-in-first-out waiters and its single deadline timer share state that must change together.

What this module owns:

* ``Connection``: one TCP (optionally TLS) connection, an ``asyncio.Protocol`` with a
  ``hiredis.Reader`` parser. Any number of tasks may use it at once: each command is written
  immediately (or coalesced with the others issued in the same loop iteration) and replies are
  matched to callers first in, first out. This implicit pipelining is why the module exists:
  redis-py's asyncio client spends ~65 µs of CPU per command, while one connection driven this
  way serves well over 100k GET/s (measured in bench/README.md).
* ``Script``: Lua source plus its SHA1, run with exactly one ``EVALSHA`` and reloaded once on
  ``NOSCRIPT``.
* ``frame``: a hot command's RESP as a template, so a call fills in its arguments with one
  format instead of packing them one by one (``Connection.execute_packed`` sends it).
* ``RedisEndpoint``, ``ReplyError``, ``RedisUnavailableError``, ``RedisReplyLostError``: the
  vocabulary `client` and the store share.

What it does not own: key layout, the Lua scripts themselves, Dapr semantics (ETags, consistency),
mapping errors to HTTP; those belong to the Redis store. Nor Redis Cluster routing: a
`Connection` talks to one node, and `cluster` picks which. RESP3, Pub/Sub and MONITOR are out of
scope: every reply must answer exactly one request, in order.

Replies are decoded by hiredis: bulk and status strings are ``bytes``, integers ``int``, arrays
``list``, nil ``None``. An error reply is a ``ReplyError``: raised by ``execute``, returned in
place by ``pipeline`` (and inside arrays, e.g. an ``EXEC`` result).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, cast

import hiredis

__all__ = [
    "Arg",
    "Command",
    "Connection",
    "RedisEndpoint",
    "RedisReplyLostError",
    "RedisUnavailableError",
    "ReplyError",
    "Script",
    "frame",
]

Arg: TypeAlias = bytes | str | int | float
"""A command argument: ``str`` goes out as UTF-8, numbers in decimal. hiredis refuses ``bool``,
which is as well: ``True`` would be ambiguous."""

Command: TypeAlias = Sequence[Arg]

# hiredis builds a whole RESP array in C as one bytes object (~0.7 µs for a GET), cheaper than any
# per-argument Python encoding. It takes a tuple; tuple() of a tuple is not a copy.
_pack: Final[Any] = hiredis.pack_command


def frame(*head: bytes, rest: int) -> bytes:
    """The RESP array of a command that starts with the words `head` and has `rest` arguments
    more, as a bytes %-template: fill it with ``(len(a), a)`` for each further argument ``a``
    (bytes), in order, and send the result with ``Connection.execute_packed``.

    hiredis spends ~0.13 µs per argument (1.27 µs for a save's eight-word EVALSHA, timeit); one
    format of this template costs 0.62 µs, encoding included (bench S4a: save/s vs GET/s).
    """
    words = b"".join(b"$%d\r\n%b\r\n" % (len(word), word.replace(b"%", b"%%")) for word in head)
    return b"*%d\r\n" % (len(head) + rest) + words + b"$%d\r\n%b\r\n" * rest


# What Reader.gets() returns while no complete reply is buffered. A private object, so that no
# decoded reply can be mistaken for it (hiredis's default marker is False).
_NEED_MORE: Final = object()


# A graceful close (TLS close_notify) waits for the peer; a dead peer must not hold close() long.
_CLOSE_GRACE: Final = 1.0


@dataclass(frozen=True)
class RedisEndpoint:
    """Where and how to reach one Redis server. ``password`` stays out of ``repr`` (and logs)."""

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: bool = False
    tls_insecure: bool = False
    connect_timeout: float = 2.0
    command_timeout: float = 5.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-WRONGTYPE ...``), message kept verbatim.

    hiredis constructs it while parsing, with the message as its only argument.
    """

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def code(self) -> str:
        """The prefix Redis uses as an error code: ``ERR``, ``WRONGTYPE``, ``NOSCRIPT``..."""
        return self.message.split(" ", 1)[0]


class RedisUnavailableError(ConnectionError):
    """Redis could not be reached or stopped answering: connect failure, lost connection, timeout.

    The message names host:port and the cause. It never contains a password.
    """


class RedisReplyLostError(RedisUnavailableError):
    """The command was written to the connection, then its reply was lost (deadline passed,
    connection dropped): Redis may or may not have run it.

    A call failing with plain ``RedisUnavailableError`` was never written: Redis did not run it.
    """


def _is_noscript(reply: object) -> bool:
    return isinstance(reply, ReplyError) and reply.message.startswith("NOSCRIPT")


def _client_ssl_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        # Explicit opt-in for self-signed in-cluster certificates: no hostname or chain check.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Batch:
    """The waiter of a pipeline: one future for N replies, so a pipeline is one deque entry."""

    __slots__ = ("future", "n", "replies")

    def __init__(self, n: int, future: asyncio.Future[list[Any]]) -> None:
        self.n = n
        self.future = future
        self.replies: list[Any] = []


_Waiter: TypeAlias = asyncio.Future[Any] | _Batch


class Script:
    """Lua source and its SHA1. ``command()`` builds the ``EVALSHA``, e.g. for a pipeline."""

    __slots__ = ("sha1", "source")

    def __init__(self, source: str | bytes) -> None:
        self.source: bytes = source.encode() if isinstance(source, str) else source
        # SHA1 is how Redis names scripts: an identifier here, not a security measure.
        digest = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()
        self.sha1: bytes = digest.encode("ascii")

    def command(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> tuple[Arg, ...]:
        """``EVALSHA sha numkeys *keys *args``, for ``execute(*cmd)`` or a pipeline."""
        return (b"EVALSHA", self.sha1, len(keys), *keys, *args)

    def load_command(self) -> tuple[Arg, ...]:
        return (b"SCRIPT", b"LOAD", self.source)

    def __repr__(self) -> str:
        return f"Script(sha1={self.sha1.decode()})"


class Connection(asyncio.Protocol):
    """One multiplexed connection to Redis; create it with ``await Connection.open(endpoint)``.

    The ``asyncio.Protocol`` callbacks belong to the event loop. Callers use ``execute``,
    ``pipeline``, ``evalsha``, ``pipeline_with_scripts`` and ``close``.

    Deadlines: each call must be answered within ``endpoint.command_timeout`` (or its
    ``reply_timeout``). Replies come in order, so only the oldest pending call's deadline needs
    watching: one timer per connection rather than one per call. When that deadline passes, no
    later reply can be matched to its caller with confidence, so the connection is aborted and
    every pending call fails: with ``RedisReplyLostError`` if its command had been written (Redis
    may have run it), else with plain ``RedisUnavailableError``. A call never waits longer than the
    largest deadline among itself and the calls queued before it.
    """

    __slots__ = (
        "_address",
        "_deadlines",
        "_endpoint",
        "_error",
        "_loop",
        "_lost",
        "_reader",
        "_timeout",
        "_timer",
        "_timer_at",
        "_transport",
        "_waiters",
        "_wbuf",
    )

    def __init__(self, endpoint: RedisEndpoint, loop: asyncio.AbstractEventLoop) -> None:
        self._endpoint = endpoint
        self._address = endpoint.address
        self._loop = loop
        self._timeout = endpoint.command_timeout
        self._reader: Any = hiredis.Reader(replyError=ReplyError, notEnoughData=_NEED_MORE)
        self._transport: asyncio.Transport | None = None
        # Two parallel deques (waiter, deadline) rather than one of tuples: no tuple per command.
        self._waiters: deque[_Waiter] = deque()
        self._deadlines: deque[float] = deque()
        self._wbuf: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # Set once, when the connection stops being usable: the reason every later caller gets.
        self._error: RedisUnavailableError | None = None
        self._lost: asyncio.Future[None] = loop.create_future()

    # ------------------------------------------------------------------------------- opening

    @classmethod
    async def open(
        cls, endpoint: RedisEndpoint, *, ssl_context: ssl.SSLContext | None = None
    ) -> Connection:
        """Connect, then ``AUTH``/``SELECT`` when configured (else ``PING``), all within
        ``connect_timeout``: an open connection has been answered at least once.

        Raises ``RedisUnavailableError`` when the server cannot be reached in time, and
        ``ReplyError`` ("redis at host:port rejected AUTH: ...") when it refuses the credentials
        or the db. ``ssl_context`` overrides the context built from ``tls``/``tls_insecure``.
        """
        loop = asyncio.get_running_loop()
        conn = cls(endpoint, loop)
        context = ssl_context
        if context is None and endpoint.tls:
            context = _client_ssl_context(endpoint.tls_insecure)
        address = endpoint.address
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    endpoint.host,
                    endpoint.port,
                    ssl=context,
                    server_hostname=endpoint.host if context is not None else None,
                )
                await conn._handshake()
        except BaseException as exc:
            conn._fail(RedisUnavailableError(f"connection to redis at {address} aborted"))
            # TimeoutError and RedisUnavailableError are OSErrors too: test them first.
            if isinstance(exc, RedisReplyLostError):
                # The handshake's reply was lost: for the caller's command, nothing was sent.
                raise RedisUnavailableError(str(exc)) from None
            if isinstance(exc, TimeoutError):
                raise RedisUnavailableError(
                    f"could not connect to redis at {address} within {endpoint.connect_timeout:g} s"
                ) from None
            if isinstance(exc, RedisUnavailableError | ReplyError):
                raise
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS handshake
                raise RedisUnavailableError(
                    f"could not connect to redis at {address}: {exc}"
                ) from exc
            raise
        return conn

    async def _handshake(self) -> None:
        endpoint = self._endpoint
        commands: list[tuple[Arg, ...]] = []
        names: list[str] = []
        if endpoint.password:
            if endpoint.username:
                commands.append((b"AUTH", endpoint.username, endpoint.password))
            else:
                commands.append((b"AUTH", endpoint.password))
            names.append("AUTH")
        if endpoint.db:
            commands.append((b"SELECT", endpoint.db))
            names.append(f"SELECT {endpoint.db}")
        if not commands:
            # Without it a hung server (SIGSTOPped, overloaded) would still accept the TCP
            # connection, and every reconnect would then cost a full command_timeout instead of
            # failing within connect_timeout. One round trip per connect is cheap.
            commands.append((b"PING",))
            names.append("PING")
        # One round trip for all. If AUTH fails SELECT fails too; AUTH's error is reported first.
        # open()'s connect_timeout bounds this; the reply deadline is set past it so that the
        # error names the connect timeout, not command_timeout.
        replies = await self.pipeline(commands, reply_timeout=2 * endpoint.connect_timeout)
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, ReplyError):
                # Redis never echoes the password in its error text, and neither do we.
                raise ReplyError(f"redis at {self._address} rejected {name}: {reply.message}")

    # ---------------------------------------------------------------------------- public API

    @property
    def endpoint(self) -> RedisEndpoint:
        return self._endpoint

    @property
    def address(self) -> str:
        return self._address

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def pending(self) -> int:
        """How many calls are waiting for a reply."""
        return len(self._waiters)

    def execute(self, *args: Arg, reply_timeout: float | None = None) -> asyncio.Future[Any]:
        """Send one command; await the result for its decoded reply (an error reply raises
        ``ReplyError``).

        A plain function handing back the reply's future, not a coroutine: every GET and save
        awaits one frame less (bench/README.md, S3). A closed connection raises
        ``RedisUnavailableError`` here, at the call.

        ``reply_timeout`` replaces ``command_timeout`` for this call (e.g. a long ``WAIT``). Unlike
        an ``asyncio.timeout`` around the call, missing it closes the connection: the command is
        still in flight and its reply could otherwise be handed to the next caller.
        """
        if self._error is not None:
            raise RedisUnavailableError(str(self._error))
        if not args:
            raise ValueError("empty redis command")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(_pack(args), future, reply_timeout)
        return future

    def execute_packed(self, packed: bytes) -> asyncio.Future[Any]:
        """``execute`` for a command already in RESP (filled from a ``frame``); the reply the
        same way. The caller vouches for ``packed`` being exactly one command."""
        if self._error is not None:
            raise RedisUnavailableError(str(self._error))
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(packed, future, None)
        return future

    async def pipeline(
        self, commands: Sequence[Command], *, reply_timeout: float | None = None
    ) -> list[Any]:
        """Send all commands in one write and return their replies in order.

        Error replies come back in place as ``ReplyError`` instances, not raised: the other
        commands did run. A pipeline is not a transaction: use ``MULTI``/``EXEC`` or a script.
        """
        if not commands:
            return []
        if self._error is not None:
            raise RedisUnavailableError(str(self._error))
        if not all(commands):
            raise ValueError("empty redis command in pipeline")
        payload = b"".join([_pack(tuple(command)) for command in commands])
        batch = _Batch(len(commands), self._loop.create_future())
        self._enqueue(payload, batch, reply_timeout)
        return await batch.future

    async def evalsha(
        self,
        script: Script,
        keys: Sequence[Arg] = (),
        args: Sequence[Arg] = (),
        *,
        reply_timeout: float | None = None,
    ) -> Any:
        """Run ``script`` with one ``EVALSHA``; on ``NOSCRIPT``, ``SCRIPT LOAD`` it, retry once.

        The normal path is exactly one command: the script text crosses the wire only after
        Redis lost it (restart, failover, ``SCRIPT FLUSH``).
        """
        command = script.command(keys, args)
        try:
            return await self.execute(*command, reply_timeout=reply_timeout)
        except ReplyError as exc:
            if not _is_noscript(exc):
                raise
        # Outside the except block, so that a failure below is not chained to the NOSCRIPT.
        await self.execute(*script.load_command(), reply_timeout=reply_timeout)
        return await self.execute(*command, reply_timeout=reply_timeout)

    async def pipeline_with_scripts(
        self,
        commands: Sequence[Command],
        scripts: Iterable[Script],
        *,
        reply_timeout: float | None = None,
    ) -> list[Any]:
        """``pipeline()`` for batches holding ``EVALSHA`` commands built by ``Script.command``.

        If any reply is ``NOSCRIPT``, every script in ``scripts`` is loaded (one round trip) and
        the whole pipeline is sent once more. An ``EVALSHA`` that got ``NOSCRIPT`` did nothing,
        but the other commands did run, so use this only when they are safe to repeat (reads,
        ``WAIT``, guarded scripts). A ``NOSCRIPT`` inside an ``EXEC`` result is not retried: the
        rest of that transaction was applied.
        """
        replies = await self.pipeline(commands, reply_timeout=reply_timeout)
        if not any(_is_noscript(reply) for reply in replies):
            return replies
        loads = [script.load_command() for script in scripts]
        for reply in await self.pipeline(loads, reply_timeout=reply_timeout):
            if isinstance(reply, ReplyError):
                raise reply
        return await self.pipeline(commands, reply_timeout=reply_timeout)

    async def close(self) -> None:
        """Close the connection; calls still pending fail with ``RedisUnavailableError``."""
        self._fail(RedisUnavailableError(f"connection to redis at {self._address} was closed"))
        if self._transport is None or self._lost.done():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._lost), _CLOSE_GRACE)
        if not self._lost.done():
            self._transport.abort()

    def __repr__(self) -> str:
        state = "closed" if self._error is not None else f"open, {len(self._waiters)} pending"
        return f"<Connection redis://{self._address}/{self._endpoint.db} {state}>"

    # ------------------------------------------------------------------------------- sending

    def _enqueue(self, data: bytes, waiter: _Waiter, reply_timeout: float | None) -> None:
        loop = self._loop
        deadline = loop.time() + (self._timeout if reply_timeout is None else reply_timeout)
        waiters = self._waiters
        waiters.append(waiter)
        self._deadlines.append(deadline)
        wbuf = self._wbuf
        if wbuf:
            # A flush is already scheduled; appending keeps the write order equal to FIFO order.
            wbuf.append(data)
        elif len(waiters) == 1:
            # Nothing else in flight: an idle connection should not add a loop iteration of
            # latency, so write now.
            transport = self._transport
            assert transport is not None  # open() hands out connected instances only
            transport.write(data)
        else:
            # Calls are in flight, so this one waits for a reply anyway: gather all commands issued
            # in this loop iteration into one write (one syscall, one packet) instead of one each.
            wbuf.append(data)
            loop.call_soon(self._flush)
        timer = self._timer
        if timer is None:
            self._timer = loop.call_at(deadline, self._on_deadline)
            self._timer_at = deadline
        elif deadline < self._timer_at:
            # Only after a call with a longer reply_timeout (the handshake, a WAIT): with one
            # timeout for all, deadlines only grow and the timer set for an earlier call stands.
            timer.cancel()
            self._timer = loop.call_at(deadline, self._on_deadline)
            self._timer_at = deadline

    def _flush(self) -> None:
        wbuf = self._wbuf
        if not wbuf:
            return
        data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
        wbuf.clear()
        if self._error is None and self._transport is not None:
            self._transport.write(data)

    def _on_deadline(self) -> None:
        self._timer = None
        if self._error is not None or not self._deadlines:
            return
        head = self._deadlines[0]
        if self._loop.time() >= head:
            self._fail(
                RedisUnavailableError(
                    f"redis at {self._address} did not reply in time (command timeout"
                    f" {self._timeout:g} s); connection closed"
                ),
                abort=True,
            )
        else:
            self._timer = self._loop.call_at(head, self._on_deadline)
            self._timer_at = head

    def _fail(self, error: RedisUnavailableError, *, abort: bool = False) -> None:
        """Make the connection unusable: keep why, fail every pending call, drop the transport."""
        if self._error is not None:
            return
        self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # The newest calls, one buffered write each, were never written: Redis never saw them.
        unsent = len(self._wbuf)
        self._wbuf.clear()
        waiters = self._waiters
        self._waiters = deque()
        self._deadlines = deque()
        message = str(error)
        written = len(waiters) - unsent
        for index, waiter in enumerate(waiters):
            future = waiter.future if isinstance(waiter, _Batch) else waiter
            if not future.done():
                # One instance per caller: a shared one would collect every caller's traceback.
                kind = RedisReplyLostError if index < written else RedisUnavailableError
                future.set_exception(kind(message))
        transport = self._transport
        if transport is not None and not self._lost.done():
            if abort:
                transport.abort()
            else:
                transport.close()

    # ------------------------------------------------------------- asyncio.Protocol callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio already sets TCP_NODELAY. Keepalive lets the kernel notice a peer that
            # vanished (node crash) while the connection is idle and no deadline is running.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self._waiters
        deadlines = self._deadlines
        try:
            reply = reader.gets()
            while reply is not _NEED_MORE:
                if not waiters:
                    self._fail(
                        RedisUnavailableError(
                            f"redis at {self._address} sent a reply nobody asked for"
                        ),
                        abort=True,
                    )
                    return
                waiter = waiters[0]
                if isinstance(waiter, _Batch):
                    replies = waiter.replies
                    replies.append(reply)
                    if len(replies) == waiter.n:
                        waiters.popleft()
                        deadlines.popleft()
                        if not waiter.future.done():
                            waiter.future.set_result(replies)
                else:
                    waiters.popleft()
                    deadlines.popleft()
                    # done() means the caller was cancelled: its reply is consumed and dropped
                    # here, which is what keeps the FIFO aligned.
                    if not waiter.done():
                        if type(reply) is ReplyError:
                            waiter.set_exception(reply)
                        else:
                            waiter.set_result(reply)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._fail(
                RedisUnavailableError(f"redis at {self._address} sent invalid RESP: {exc}"),
                abort=True,
            )

    def connection_lost(self, exc: Exception | None) -> None:
        cause = str(exc) if exc is not None else "closed by the server"
        self._fail(RedisUnavailableError(f"connection to redis at {self._address} lost: {cause}"))
        if not self._lost.done():
            self._lost.set_result(None)
