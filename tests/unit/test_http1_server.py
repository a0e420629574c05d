"""
statecar's HTTP/1.1 server (`statecar_sidecar.http1`), over real loopback sockets.

The server replaced uvicorn (issue 12); these pin the HTTP behaviour uvicorn gave and clients
rely on: pipelined requests answered in order, `Expect: 100-continue`, chunked request and
response bodies, HEAD, keep-alive and `Connection: close`, HTTP/1.0, a malformed request or
oversized headers answered and closed, a body over the limit refused without being kept, idle
connections closed, and a graceful stop that lets a request finish and cancels a stuck one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable
from email.utils import formatdate
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statecar_sidecar.api.asgi import JSON, Reply, Request
from statecar_sidecar.api.errors import DaprError
from statecar_sidecar.http1 import connection as http1_connection
from statecar_sidecar.http1.server import HttpServer
from statecar_sidecar.http1.wire import http_date
from statecar_sidecar.listener import ListenerLimits, create_server

LIMIT = 1000


class EchoAPI:
    """Answers `/state/...` directly: the body's length, the method and the path; `/slow/N`
    sleeps N ms first; everything else goes to the ASGI app."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None

    def direct(self, request: Request, raw_path: bytes) -> Awaitable[Reply] | None:
        if raw_path.startswith(b"/slow/"):
            return self._slow(request, int(raw_path[6:]))
        if raw_path.startswith(b"/gate"):
            return self._gated(request)
        if not raw_path.startswith(b"/state/"):
            return None
        return self._echo(request, raw_path)

    async def _echo(self, request: Request, raw_path: bytes) -> Reply:
        try:
            body = await request.body(LIMIT)
        except DaprError as exc:  # the 413 a handler would render
            return Reply(exc.status, b"too large", [JSON])
        document = {"method": request.method, "path": raw_path.decode(), "length": len(body)}
        return Reply(200, json.dumps(document).encode(), [JSON])

    async def _slow(self, request: Request, milliseconds: int) -> Reply:
        await asyncio.sleep(milliseconds / 1000)
        return Reply(200, b"slow %d" % milliseconds)

    async def _gated(self, request: Request) -> Reply:
        assert self.gate is not None
        await self.gate.wait()
        return Reply(200, b"gated")


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/stream":  # no content-length: chunked
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})
        return
    if path == "/boom":
        raise RuntimeError("the app failed")
    if path == "/wait-disconnect":
        message = await receive()
        assert message["type"] == "http.request"
        message = await receive()
        DISCONNECTS.append(message["type"])
        return
    body = json.dumps({"path": path, "query": scope["query_string"].decode()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


DISCONNECTS: list[str] = []


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, EchoAPI]]:
    api = EchoAPI()
    limits = ListenerLimits("test", 2.0, 2.0, 64, "STATECAR_MAX_CONNECTIONS")
    http = HttpServer(asgi_app, limits, state_api=api, max_body_bytes=LIMIT)
    await http.listen("127.0.0.1", 0)
    yield http, api
    await http.stop(1.0)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def connection(server: tuple[HttpServer, EchoAPI]) -> AsyncIterator[Connection]:
    """One client connection to `server`, closed after the test."""
    http, _ = server
    reader, writer = await _connect(http)
    yield reader, writer
    await _close(writer)


async def _connect(http: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", http.ports[0])


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response: status, headers (lower-case), body (content-length or chunked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = b""
    return status, headers, body


async def _ok_json(reader: asyncio.StreamReader) -> Any:
    """The next response, which must be a 200, as JSON."""
    status, _, body = await _response(reader)
    assert status == 200, body
    return json.loads(body)


async def _closed(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionResetError:
        return True


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionResetError):
        await writer.wait_closed()


async def test_pipelined_requests_are_answered_in_order(
    connection: Connection,
) -> None:
    reader, writer = connection
    # The first takes longest: answers must still come back in request order.
    writer.write(
        b"GET /slow/50 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /slow/1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /state/s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /other?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = [await _response(reader) for _ in range(4)]
    assert [a[2] for a in answers[:2]] == [b"slow 50", b"slow 1"]
    assert json.loads(answers[2][2]) == {"method": "POST", "path": "/state/s", "length": 3}
    assert json.loads(answers[3][2]) == {"path": "/other", "query": "x=1"}
    assert all("date" in a[1] for a in answers)


async def test_many_pipelined_requests_pause_reading_and_all_get_answers(
    connection: Connection,
) -> None:
    reader, writer = connection
    count = 5 * http1_connection.MAX_QUEUED
    writer.write(b"".join(b"GET /state/s/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
    for i in range(count):
        assert (await _ok_json(reader))["path"] == f"/state/s/{i}"


async def test_expect_continue_gets_100_before_the_body(
    connection: Connection,
) -> None:
    reader, writer = connection
    writer.write(
        b"POST /state/s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"12345")
    assert (await _ok_json(reader))["length"] == 5


async def test_expect_continue_over_the_limit_is_refused_at_once(
    connection: Connection,
) -> None:
    reader, writer = connection
    writer.write(
        b"POST /state/s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n"
        % (LIMIT + 1)
    )
    status, headers, _ = await _response(reader)  # no 100 first, no body awaited
    assert status == 413
    assert headers["connection"] == "close"
    assert await _closed(reader)


async def test_a_body_over_the_limit_is_dropped_and_the_connection_goes_on(
    connection: Connection,
) -> None:
    reader, writer = connection
    big = b"x" * (LIMIT * 3)
    writer.write(
        b"POST /state/s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    )
    writer.write(b"POST /state/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"".join(b"%x\r\n%s\r\n" % (400, b"y" * 400) for _ in range(3)) + b"0\r\n\r\n")
    writer.write(b"GET /state/s/after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await _response(reader))[0] == 413
    assert (await _response(reader))[0] == 413  # chunked: over the limit on its third chunk
    assert (await _ok_json(reader))["path"] == "/state/s/after"


async def test_a_chunked_body_is_read_whole(
    connection: Connection,
) -> None:
    reader, writer = connection
    writer.write(b"POST /state/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"3\r\nabc\r\n", b"4\r\ndefg\r\n", b"0\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    assert (await _ok_json(reader))["length"] == 7


async def test_a_malformed_request_gets_a_json_400_and_the_connection_closes(
    connection: Connection,
) -> None:
    reader, writer = connection
    writer.write(b"GET /state/s HTTP/1.1\r\nHost x\r\n\r\n")
    status, headers, body = await _response(reader)
    assert status == 400
    assert headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert document["message"].startswith("invalid HTTP request: ")
    assert await _closed(reader)


async def test_oversized_headers_get_431_and_the_connection_closes(
    connection: Connection,
) -> None:
    reader, writer = connection
    filler = b"X-Filler: " + b"a" * 8000 + b"\r\n"
    writer.write(b"GET /state/s/k HTTP/1.1\r\nHost: x\r\n" + filler * 9 + b"\r\n")
    status, _, body = await _response(reader)
    assert status == 431
    assert str(http1_connection.MAX_HEADER_BYTES) in json.loads(body)["message"]
    assert await _closed(reader)


async def test_asgi_responses_without_a_length_are_chunked_and_head_has_no_body(
    connection: Connection,
) -> None:
    reader, writer = connection
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await _response(reader)
    assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"hello world")
    writer.write(b"HEAD /other HTTP/1.1\r\nHost: x\r\n\r\nGET /state/s/next HTTP/1.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: " in head
    # No body after HEAD's headers: the next bytes are the next response.
    assert (await _ok_json(reader))["path"] == "/state/s/next"


async def test_an_asgi_app_that_fails_gets_a_plain_500(
    connection: Connection,
) -> None:
    reader, writer = connection
    writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = await _response(reader)
    assert (status, body) == (500, b"Internal Server Error")
    assert await _closed(reader)


async def test_an_asgi_app_waiting_on_receive_sees_the_disconnect(
    server: tuple[HttpServer, EchoAPI],
) -> None:
    http, _ = server
    DISCONNECTS.clear()
    _reader, writer = await _connect(http)
    writer.write(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.1)
    await _close(writer)
    for _ in range(50):
        if DISCONNECTS:
            break
        await asyncio.sleep(0.02)
    assert DISCONNECTS == ["http.disconnect"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /state/s/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /state/s/k HTTP/1.0\r\n\r\n",
    ],
    ids=["connection close", "HTTP/1.0"],
)
async def test_the_connection_closes_after_the_answer_when_asked(
    server: tuple[HttpServer, EchoAPI], request_bytes: bytes
) -> None:
    http, _ = server
    reader, writer = await _connect(http)
    writer.write(request_bytes)
    status, headers, _ = await _response(reader)
    assert status == 200
    assert headers["connection"] == "close"
    assert await _closed(reader)
    await _close(writer)


async def test_an_idle_keep_alive_connection_is_closed(
    server: tuple[HttpServer, EchoAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, _ = server
    monkeypatch.setattr(http1_connection, "KEEP_ALIVE_SECONDS", 0.3)
    reader, writer = await _connect(http)
    loop = asyncio.get_running_loop()
    for _ in range(3):  # each request restarts the idle clock
        writer.write(b"GET /state/s/k HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[0] == 200
        await asyncio.sleep(0.15)
    started = loop.time()
    assert await _closed(reader, timeout=3)
    assert 0.1 <= loop.time() - started <= 1.0
    await _close(writer)


async def test_a_graceful_stop_lets_requests_finish_and_closes_idle_connections() -> None:
    api = EchoAPI()
    limits = ListenerLimits("test", 2.0, 2.0, 64, "STATECAR_MAX_CONNECTIONS")
    http = HttpServer(asgi_app, limits, state_api=api, max_body_bytes=LIMIT)
    await http.listen("127.0.0.1", 0)
    port = http.ports[0]
    idle_reader, idle_writer = await _connect(http)
    busy_reader, busy_writer = await _connect(http)
    busy_writer.write(b"GET /slow/300 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    stopping = asyncio.create_task(http.stop(5.0))
    assert await _closed(idle_reader, timeout=1)
    status, headers, body = await _response(busy_reader)
    assert (status, body, headers["connection"]) == (200, b"slow 300", "close")
    assert await stopping is True
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await _close(idle_writer)
    await _close(busy_writer)


async def test_a_graceful_stop_cancels_what_outlives_the_grace() -> None:
    api = EchoAPI()
    api.gate = asyncio.Event()  # never set: the request hangs
    limits = ListenerLimits("test", 2.0, 2.0, 64, "STATECAR_MAX_CONNECTIONS")
    http = HttpServer(asgi_app, limits, state_api=api, max_body_bytes=LIMIT)
    await http.listen("127.0.0.1", 0)
    reader, writer = await _connect(http)
    writer.write(b"GET /gate HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await http.stop(0.2) is False
    assert loop.time() - started < 1.0
    assert await _closed(reader)
    await _close(writer)


@given(st.integers(min_value=0, max_value=253402300799))  # up to 9999-12-31T23:59:59Z
def test_the_date_header_is_rfc_9110_imf_fixdate(epoch: int) -> None:
    assert http_date(epoch).decode() == formatdate(epoch, usegmt=True)


async def test_api_logging_writes_one_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    """daprd's `--enable-api-logging`: method, path and status of every HTTP API call."""
    limits = ListenerLimits("test", 2.0, 2.0, 64, "STATECAR_MAX_CONNECTIONS")
    http = HttpServer(
        asgi_app, limits, state_api=EchoAPI(), max_body_bytes=LIMIT, log_requests=True
    )
    await http.listen("127.0.0.1", 0)
    reader, writer = await _connect(http)
    with caplog.at_level(logging.INFO, logger="statecar.api"):
        writer.write(b"GET /state/s/a%20b HTTP/1.1\r\nHost: x\r\n\r\nGET /other HTTP/1.1\r\n\r\n")
        await _response(reader)
        await _response(reader)
    await _close(writer)
    await http.stop(1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "statecar.api"]
    assert lines == ["HTTP API Called: GET /state/s/a b 200", "HTTP API Called: GET /other 200"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
async def test_a_listener_binds_an_address_or_a_name_and_refuses_a_taken_port(host: str) -> None:
    """`listener.create_server` binds an IP address itself (no IDNA) and leaves a name to the
    loop; either way the port serves, and a port in use is an OSError, as the loop's own."""
    loop = asyncio.get_running_loop()
    served = await create_server(loop, asyncio.Protocol, host, 0, backlog=8)
    try:
        if host != "localhost":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            assert [s.family for s in served.sockets] == [family]
        port = served.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await create_server(loop, asyncio.Protocol, host, port, backlog=8)
    finally:
        served.close()
        await served.wait_closed()
