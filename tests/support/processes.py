"""The one stop sequence for the child processes tests start: by pid, with bounded waits."""

from __future__ import annotations

import contextlib
import signal
import subprocess

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
