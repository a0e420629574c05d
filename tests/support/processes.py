"""The one stop sequence for the child processes tests start (by pid, with bounded waits), and
the one wait for a started sidecar (ours or daprd) to answer its health endpoint."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Collection

import httpx

#: How long a process may take to exit after the first signal before it is killed.
GRACE = 10.0


def stop(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = GRACE
) -> int:
    """Send `sig` to `process` (and SIGCONT, so a paused process acts on it), wait up to `grace`
    seconds, then SIGKILL and wait again as long. Returns the exit code; a no-op if it has exited.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
            process.send_signal(signal.SIGCONT)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return process.returncode


def wait_healthy(
    process: subprocess.Popen[bytes],
    health_url: str,
    log: Callable[[], str],
    *,
    name: str,
    timeout: float = 30,
    accept: Collection[int] = (204,),
) -> None:
    """Poll `health_url` until it answers a status in `accept`; raise with `log()` if `process`
    exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log()}")
        try:
            if httpx.get(health_url, timeout=1).status_code in accept:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} not healthy within {timeout} s:\n{log()}")
