"""
Busy-polling (`statecar_sidecar.busypoll`): when the loop is kept polling, when it backs off, and
that the state API's calls are counted in and out whatever their outcome.

The policy's decisions run on a fake loop and clock (the pure tier). The mechanism itself runs on
a real asyncio loop whose selector records its timeouts: while a spin is on the loop polls with
a zero timeout, and once the window has passed it sleeps again. The HTTP/1.1 server's accounting
runs over real loopback sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import selectors
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from statecar_sidecar.busypoll import MAX_SKIP, BusyPoll
from statecar_sidecar.http1.server import HttpServer
from statecar_sidecar.listener import ListenerLimits

WINDOW_US = 100


class FakeLoop:
    """Just `call_soon`: a test runs the ready callbacks one iteration at a time."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.ready.append(callback)

    def iterate(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()

    @property
    def polling(self) -> bool:
        """Whether the loop's next iteration polls without sleeping (a callback is ready)."""
        return bool(self.ready)


class Clocks:
    def __init__(self) -> None:
        self.now_ns = 0
        self.switches = 0

    def clock(self) -> int:
        return self.now_ns

    def preemptions(self) -> int:
        return self.switches


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def _policy(loop: FakeLoop, clocks: Clocks, window_us: int = WINDOW_US) -> BusyPoll:
    return BusyPoll(
        cast(asyncio.AbstractEventLoop, loop),
        window_us,
        clock=clocks.clock,
        preemptions=clocks.preemptions,
    )


def _wait(loop: FakeLoop, clocks: Clocks, microseconds: int) -> None:
    """Let `microseconds` pass while the loop iterates (first iteration: the window opens)."""
    loop.iterate()
    clocks.now_ns += microseconds * 1000
    loop.iterate()


def test_a_lone_call_keeps_the_loop_polling_for_its_reply_and_the_next_call(
    loop: FakeLoop, clocks: Clocks
) -> None:
    poll = _policy(loop, clocks)
    poll.request_started()
    assert loop.polling
    _wait(loop, clocks, 40)  # the store takes 40 µs to answer: inside the window
    assert loop.polling
    poll.request_finished()
    assert poll.hits == 1
    loop.iterate()
    assert loop.polling  # now for the client's next call
    _wait(loop, clocks, 30)
    poll.request_started()
    assert (poll.hits, poll.misses) == (2, 0)
    assert loop.polling


def test_once_the_window_passes_the_loop_may_sleep(loop: FakeLoop, clocks: Clocks) -> None:
    poll = _policy(loop, clocks)
    poll.request_started()
    poll.request_finished()
    _wait(loop, clocks, WINDOW_US - 1)
    assert loop.polling
    clocks.now_ns += 1000
    loop.iterate()
    assert not loop.polling
    assert poll.misses == 1


def _cycles(poll: BusyPoll, loop: FakeLoop, clocks: Clocks, n: int, gap_us: int) -> list[bool]:
    """`n` lone calls answered at once, `gap_us` apart: whether the loop polled after each."""
    spun = []
    for _ in range(n):
        poll.request_started()
        poll.request_finished()
        loop.iterate()  # the reply spin's last tick, or the next call's first
        spun.append(loop.polling)
        _wait(loop, clocks, gap_us)
        loop.iterate()
    return spun


def test_a_wait_that_outlasts_the_window_is_skipped_1_2_4_times_then_tried_again(
    loop: FakeLoop, clocks: Clocks
) -> None:
    poll = _policy(loop, clocks)
    # An app that calls every 5 ms: each spin for its next call misses.
    spun = _cycles(poll, loop, clocks, 20, 5000)
    assert [i for i, s in enumerate(spun) if s] == [0, 2, 5, 10, 19]
    assert poll.misses == 5


def test_the_back_off_stops_at_its_bound(loop: FakeLoop, clocks: Clocks) -> None:
    poll = _policy(loop, clocks)
    spun = _cycles(poll, loop, clocks, 2 * MAX_SKIP + 520, 5000)
    tries = [i for i, s in enumerate(spun) if s]
    gaps = [b - a - 1 for a, b in itertools.pairwise(tries)]
    assert gaps[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert set(gaps[9:]) == {MAX_SKIP}


def test_a_hit_after_misses_resumes_polling_every_time(loop: FakeLoop, clocks: Clocks) -> None:
    poll = _policy(loop, clocks)
    _cycles(poll, loop, clocks, 11, 5000)  # misses: the 11th call was skipped
    spun = _cycles(poll, loop, clocks, 12, 20)  # back-to-back calls
    first = spun.index(True)
    assert first <= 8
    assert all(spun[first:])


def test_with_two_calls_in_flight_the_loop_is_left_alone(loop: FakeLoop, clocks: Clocks) -> None:
    poll = _policy(loop, clocks)
    poll.request_started()
    poll.request_started()
    loop.iterate()
    assert not loop.polling
    poll.request_finished()
    assert not loop.polling
    poll.request_finished()  # the last call was not watched alone: no spin for the next
    loop.iterate()
    assert not loop.polling
    assert poll.in_flight == 0


def test_a_call_that_was_preempted_stops_polling_and_it_checks_again_later(
    loop: FakeLoop, clocks: Clocks
) -> None:
    poll = _policy(loop, clocks)
    # The store runs on the sidecar's CPU: every call is preempted by it.
    lone_calls_polled = []
    for _ in range(12):
        poll.request_started()
        lone_calls_polled.append(loop.polling)
        clocks.switches += 1
        poll.request_finished()
        assert not loop.polling or poll.hits  # a reply spin that came up ends as a hit
        loop.iterate()
        loop.iterate()
    assert lone_calls_polled[:6] == [True, False, True, False, False, True]
    assert poll.shared == 4
    # The CPU is free again: the next check finds no preemption and polling resumes.
    spun = _cycles(poll, loop, clocks, 12, 20)
    assert any(spun)
    assert all(spun[spun.index(True) :])


def test_a_zero_window_never_polls(loop: FakeLoop, clocks: Clocks) -> None:
    poll = _policy(loop, clocks, window_us=0)
    for _ in range(3):
        poll.request_started()
        assert not loop.polling
        poll.request_finished()
        assert not loop.polling
    assert (poll.hits, poll.misses, poll.shared, poll.in_flight) == (0, 0, 0, 0)


# -- the mechanism, on a real event loop -----------------------------------------------------------


class RecordingSelector(selectors.DefaultSelector):
    """The loop's selector, recording the timeout of every poll."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        self.timeouts.append(timeout)
        return cast(list[tuple[Any, int]], super().select(timeout))


def _run_on_recording_loop(window_us: int) -> tuple[list[float | None], list[float | None], int]:
    """A lone call answered at once, then 50 ms with no call: the selector's timeouts in the
    first millisecond, then in the rest; and the misses."""
    selector = RecordingSelector()
    real_loop = asyncio.SelectorEventLoop(selector)
    try:
        poll = BusyPoll(real_loop, window_us, preemptions=lambda: 0)

        async def scenario() -> tuple[list[float | None], list[float | None]]:
            poll.request_started()
            poll.request_finished()
            selector.timeouts.clear()
            await asyncio.sleep(0.001)
            early = list(selector.timeouts)
            selector.timeouts.clear()
            await asyncio.sleep(0.05)
            return early, list(selector.timeouts)

        early, late = real_loop.run_until_complete(scenario())
        return early, late, poll.misses
    finally:
        real_loop.close()


def test_while_spinning_the_loop_polls_without_sleeping_then_sleeps_again() -> None:
    early, late, misses = _run_on_recording_loop(window_us=5000)
    assert len(early) > 10
    assert all(timeout == 0 for timeout in early)
    late_sleeps = [t for t in late if t]
    assert late_sleeps  # the 5 ms window passed: the loop blocked until the 50 ms timer
    assert misses == 1


def test_without_busy_polling_the_loop_sleeps_at_once() -> None:
    early, _, _ = _run_on_recording_loop(window_us=0)
    assert early
    assert early[0] is not None
    assert early[0] > 0


# -- the HTTP/1.1 server counts every call in and out -----------------------------------------------


async def _asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/boom":
        raise RuntimeError("the app failed")
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def served() -> AsyncIterator[tuple[HttpServer, BusyPoll]]:
    poll = BusyPoll(asyncio.get_running_loop(), WINDOW_US, preemptions=lambda: 0)
    limits = ListenerLimits("test", 2.0, 2.0, 64, "STATECAR_MAX_CONNECTIONS")
    http = HttpServer(_asgi, limits, max_body_bytes=1000, busy_poll=poll)
    await http.listen("127.0.0.1", 0)
    yield http, poll
    await http.stop(1.0)


async def _get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, n: int = 1
) -> list[int]:
    writer.write(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode() for _ in range(n)))
    statuses = []
    for _ in range(n):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        statuses.append(int(head.split(b" ")[1]))
    return statuses


async def test_sequential_calls_are_spun_for_and_every_call_is_counted_out(
    served: tuple[HttpServer, BusyPoll],
) -> None:
    http, poll = served
    reader, writer = await asyncio.open_connection("127.0.0.1", http.ports[0])
    try:
        for _ in range(20):
            assert await _get(reader, writer, "/ok") == [200]
            assert poll.in_flight == 0
        assert poll.hits >= 20
        # Pipelined calls, and a call whose app raises (its connection then closes), are
        # counted out too.
        assert await _get(reader, writer, "/ok", n=5) == [200] * 5
        assert poll.in_flight == 0
        assert await _get(reader, writer, "/boom") == [500]
        assert poll.in_flight == 0
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
