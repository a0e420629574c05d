"""
Large request buffers go back to the operating system once freed.

glibc serves an allocation above its mmap threshold (128 KiB at start) with its own mmap, and
unmaps it on free. But each time such a chunk is freed it raises the threshold to that size
(up to 32 MiB): after one 3 MiB body, later 3 MiB bodies, values and replies come from the heap
instead, and concurrent ones fragment it so it cannot shrink. Measured on a real sidecar, 8
clients each sending 25 saves, bulk gets and transactions of 3 MiB left RSS 85 to 164 MiB above
where it started, for good (tests/hostile/test_memory_bound.py). Setting the threshold explicitly
turns that adjustment off (mallopt(3)): every buffer of 128 KiB or more is mapped and unmapped
on its own, which costs a large request an mmap/munmap pair and nothing to a small one, and
the resident set returns to within a MiB.

An operator's own `MALLOC_MMAP_THRESHOLD_` wins; other C libraries (musl) are left alone. The
image sets that variable to the same 128 KiB (Dockerfile): glibc then fixes the threshold itself
at exec, and the sidecar need not load ctypes to call mallopt (~1.5 ms of a cold start).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import ctypes

log = logging.getLogger("statecar.memory")

M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES: Final = 128 * 1024  # glibc's initial default, kept fixed


def process_libc() -> ctypes.CDLL | None:
    """The C library this process runs on, or None.

    dlopen(NULL) first: the interpreter's own global symbols include its C library's, with no
    search. `ctypes.util.find_library` runs `ldconfig -p` in a subprocess (~4 ms of a cold start
    per call), so it is only the fallback.
    """
    import ctypes  # only when the environment has not set the threshold (the module docstring)

    try:
        return ctypes.CDLL(None)
    except OSError:
        pass
    from ctypes import util

    name = util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def release_large_buffers(environ: Mapping[str, str] | None = None) -> bool:
    """Fix glibc's mmap threshold at 128 KiB; True when it was set.

    The one environment read outside settings.py: glibc's own variable, looked at only so that
    an operator's threshold (which glibc already applied) is not overridden.
    """
    environ = os.environ if environ is None else environ
    if "MALLOC_MMAP_THRESHOLD_" in environ:
        return False
    libc = process_libc()
    if libc is None:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    import ctypes

    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("mallopt(M_MMAP_THRESHOLD) refused; large buffers may stay resident")
        return False
    return True
