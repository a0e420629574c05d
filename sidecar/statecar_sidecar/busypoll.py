"""
Busy-polling: keep the event loop polling its sockets, instead of sleeping, for a short window
when an answer is due soon.

Why. One request at a time, a GET is four short waits: the sidecar waits for the store's reply,
then for the client's next request, and the store and the client each wait for the sidecar.
When a wait puts the sidecar's CPU to sleep, waking it costs more than the work it wakes up for:
a halted vCPU exits to the hypervisor and comes back on an interrupt (bench/README.md, "Issue 12":
~180 µs per GET at one connection across two CPUs, against ~50 µs when all three processes share
one busy CPU). Go's scheduler polls the network before it parks a thread (`runtime.findRunnable`),
which is much of why daprd answered one request at a time faster than statecar while spending
more CPU per call (135 against 105 µs before this module). Linux offers the same idea per socket
as `net.core.busy_poll` / `SO_BUSY_POLL`, but it polls a NIC queue (NAPI), so it does nothing for
loopback and pod-local traffic.

How. While a spin is on, a callback re-schedules itself with `call_soon`. An event loop with a
ready callback polls its sockets with a zero timeout instead of blocking (libuv's idle handles
under uvloop, `_run_once` under asyncio), so the answer is picked up by the next iteration rather
than by a wake-up. The spin never holds the loop: every iteration still runs everything that is
ready, timers included, so no other request waits behind it.

When. Only while at most one call is in flight (more, and the loop is not idle), and only for
two waits, each with its own back-off (`_Backoff`):

* **reply**: a call has started and is the only one in flight: its store call is on the wire;
* **next**: its response has been written and nothing is in flight: the client's next call.

A spin ends as a **hit** when that event comes within the window, and as a **miss** when the
window passes first (the loop then sleeps as it would have). After a miss, that wait is not spun
for the next 1, 2, 4, ... 256 times it comes up; a hit resets the count. So a client that calls
now and then costs one window per back-off step, and a store slower than the window soon stops
being spun for, while back-to-back calls over loopback are spun for every time.

Polling must not compete with the peer it waits for. When the store or the client shares the
sidecar's CPU (one core, or a busy node), the sidecar's own write wakes it and it preempts the
sidecar; each tick of a spin also yields the CPU (`sched_yield`) to anything runnable. So every
lone call counts the thread's involuntary context switches while it is answered
(`getrusage(RUSAGE_THREAD).ru_nivcsw`, ~0.6 µs twice); one or more means the CPU is shared, and
busy-polling backs off the same way, checking again after 1, 2, 4, ... 256 calls.

The window is `STATECAR_BUSY_POLL_US` (docs/annotations.md); 0 turns busy-polling off.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable
from typing import Final

#: The most times in a row a wait is skipped after misses.
MAX_SKIP: Final = 256


def _preemptions() -> int:
    """How many times this thread has been switched off the CPU while it could run."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw


class _Backoff:
    """Whether one kind of wait is spun for: skipped `skip` times after a miss, doubling."""

    __slots__ = ("left", "skip")

    def __init__(self) -> None:
        self.skip = 0
        self.left = 0

    def allows(self) -> bool:
        if self.left:
            self.left -= 1
            return False
        return True

    def hit(self) -> None:
        self.skip = 0

    def miss(self) -> None:
        self.skip = min(self.skip * 2 or 1, MAX_SKIP)
        self.left = self.skip


class BusyPoll:
    """The sidecar's busy-poll policy: one per process (server.py), told when each HTTP request
    or unary gRPC call starts and when its response is written (`http1.connection`,
    `grpcapi.transport`)."""

    __slots__ = (
        "_clock",
        "_deadline",
        "_loop",
        "_next",
        "_preemptions",
        "_probe",
        "_reply",
        "_shared",
        "_spinning",
        "_ticking",
        "hits",
        "in_flight",
        "misses",
        "shared",
        "window_ns",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window_us: int,
        *,
        clock: Callable[[], int] = time.perf_counter_ns,
        preemptions: Callable[[], int] = _preemptions,
    ) -> None:
        self._loop = loop
        self.window_ns = window_us * 1000
        self._clock = clock
        self._preemptions = preemptions
        #: Requests started and not yet answered.
        self.in_flight = 0
        #: Spins the awaited event ended; spins the window ended; requests that found the CPU
        #: shared.
        self.hits = 0
        self.misses = 0
        self.shared = 0
        self._reply = _Backoff()
        self._next = _Backoff()
        self._shared = _Backoff()
        #: The preemption count when the request being watched started (-1: none is).
        self._probe = -1
        #: The wait the loop is kept polling for, and until when (0: from its next iteration).
        self._spinning: _Backoff | None = None
        self._deadline = 0
        self._ticking = False

    def request_started(self) -> None:
        self.in_flight += 1
        if not self.window_ns:
            return
        if self._spinning is not None:
            self._hit()
        if self.in_flight == 1 and self._shared.allows():
            self._probe = self._preemptions()
            if self._reply.allows():
                self._spin(self._reply)
        else:
            self._probe = -1

    def request_finished(self) -> None:
        self.in_flight -= 1
        if not self.window_ns:
            return
        if self._spinning is not None:
            self._hit()
        probe = self._probe
        if probe < 0:
            return
        self._probe = -1
        if self._preemptions() != probe:
            # Something else took this CPU while the request was answered, most likely the
            # store or the client, woken by the sidecar's own write: polling would only keep
            # it off the CPU.
            self._shared.miss()
            self.shared += 1
            return
        self._shared.hit()
        if self.in_flight == 0 and self._next.allows():
            self._spin(self._next)

    def _hit(self) -> None:
        assert self._spinning is not None
        self._spinning.hit()
        self._spinning = None
        self.hits += 1

    def _spin(self, wait: _Backoff) -> None:
        self._spinning = wait
        self._deadline = 0
        if not self._ticking:
            self._ticking = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        wait = self._spinning
        if wait is None:
            self._ticking = False
            return
        now = self._clock()
        if not self._deadline:
            # The first iteration after the request began or ended: its own work is done and
            # the loop would now sleep; the window counts from here.
            self._deadline = now + self.window_ns
        elif now >= self._deadline:
            self._spinning = None
            self._ticking = False
            wait.miss()
            self.misses += 1
            return
        else:
            # Let whatever else is runnable on this CPU go first: often the very peer being
            # waited for. That counts as a preemption, and polling backs off. Alone on the
            # CPU, the call returns at once (~0.5 µs).
            os.sched_yield()
        self._loop.call_soon(self._tick)
