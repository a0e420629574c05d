"""Free loopback ports for the servers the tests start."""

from __future__ import annotations

import itertools
import os
import socket

# Below Linux's default ephemeral range (net.ipv4.ip_local_port_range, 32768-60999). A port the
# kernel hands out for `bind(0)` comes from that range, where any outgoing connection made
# between the pick and the server's own bind (a store client, a health probe) may take it as its
# local port: the server then fails with EADDRINUSE (seen once in ~10 suite runs: daprd's
# drop-in binding 0.0.0.0). Ports here are never handed out implicitly.
_FIRST, _LAST = 20_000, 32_000
# Each process walks the range from its own offset, so picks not yet bound never repeat.
_START = _FIRST + os.getpid() % (_LAST - _FIRST)
_next = itertools.cycle(itertools.chain(range(_START, _LAST), range(_FIRST, _START)))


def free_port() -> int:
    """A TCP port that nothing is bound to right now, on any address, outside the ephemeral
    range (so no outgoing connection takes it before the server binds it)."""
    for _ in range(_LAST - _FIRST):
        port = next(_next)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                # The wildcard address: free there is free on 127.0.0.1 and on 0.0.0.0 alike.
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {_FIRST}-{_LAST - 1}")
