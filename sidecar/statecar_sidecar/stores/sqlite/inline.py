"""
When the SQLite store may read on the event loop instead of its worker thread: the decision,
kept pure (the caller passes the clock and the evidence), so it is tested without a slow disk.

A point read of a cached WAL database takes a few microseconds, far less than handing the call
to the worker thread and back (30-60 µs of CPU, bench/sqlite_get.py). A read whose pages are
not in memory blocks the event loop for as long as the disk takes, and the stdlib driver cannot
say beforehand whether they are. Afterwards the kernel can: the loop thread's count of blocks
read from storage and of major page faults (getrusage(RUSAGE_THREAD) `ru_inblock` and
`ru_majflt`, getrusage(2)) rises when a read waited on the disk, and not when the thread was
merely preempted, which a neighbour on the node causes whichever thread reads.

So a read that took `slow` or longer and raised that count closes the gate for a pause, during
which reads go to the worker thread. A read of `stall` or longer closes it without evidence
(a kernel without I/O accounting). The pause doubles, up to `longest_pause`, when the disk is
still cold soon after the gate reopens, and starts again from `first_pause` otherwise. Thus
the loop waits on the disk for at most one read per pause, and a store whose file is not in
memory falls back to the thread, as all reads did before inline reads.
"""

from __future__ import annotations

import resource
from typing import Final

__all__ = ["InlineGate", "blocks_read"]

#: Reads of cached pages take microseconds; from 0.2 ms on, ask whether one waited on the disk.
SLOW: Final = 0.0002
#: Closes the gate without evidence.
STALL: Final = 0.02
FIRST_PAUSE: Final = 1.0
LONGEST_PAUSE: Final = 64.0
# Linux counts per thread; elsewhere (macOS, for `statecar run`) the process's count also has
# the worker thread's reads, which can only close the gate more often.
_WHO: Final[int] = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def blocks_read() -> int:
    """The calling thread's blocks read from storage plus its major faults, so far."""
    usage = resource.getrusage(_WHO)
    return usage.ru_inblock + usage.ru_majflt


class InlineGate:
    """Whether a read may run on the event loop now, from what the slow inline ones did."""

    __slots__ = ("_first", "_longest", "_pause", "_stall", "closed_until", "slow")

    def __init__(
        self,
        *,
        slow: float = SLOW,
        stall: float = STALL,
        first_pause: float = FIRST_PAUSE,
        longest_pause: float = LONGEST_PAUSE,
    ) -> None:
        #: Monotonic time before which reads go to the worker thread (read on the hot path).
        self.closed_until = 0.0
        #: An inline read this long or longer is passed to `took` (the hot path compares).
        self.slow = slow
        self._stall = stall
        self._first = first_pause
        self._longest = longest_pause
        self._pause = 0.0

    def open(self, now: float) -> bool:
        return now >= self.closed_until

    @property
    def pause(self) -> float:
        """The length of the last pause (0: the gate never closed)."""
        return self._pause

    def took(self, seconds: float, now: float, *, disk: bool) -> bool:
        """Record a slow inline read that took `seconds`, ended at `now` (monotonic), and
        waited on the disk (`disk`: the thread's `blocks_read` rose). True: the gate closed."""
        if seconds < self.slow or not (disk or seconds >= self._stall):
            return False
        if self.closed_until and now - self.closed_until < self._pause:
            self._pause = min(self._longest, self._pause * 2)  # still cold since it reopened
        else:
            self._pause = self._first
        self.closed_until = now + self._pause
        return True
