"""
Test helper (not a test module): throwaway `redis-server` processes for any test tier.

`RedisProcess` runs one `redis-server` (plain, replica, Sentinel or TLS) as a child process on a
free port on 127.0.0.1, without persistence, in its own temporary directory. It can be stopped,
started again on the same port, paused with SIGSTOP and resumed with SIGCONT, always by its own
pid. `running_redis(...)` is the context manager that starts one and always stops it.

`redis-server` is looked up on PATH (Debian package `redis-server`); set `STATECAR_REDIS_SERVER`
to another binary. When none is found, the calling test is skipped, or failed under
`STATECAR_REQUIRE_SERVERS` (`tests.support.require`).

Use from a test module::

    from tests.support.redis_server import RedisProcess, running_redis
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support import processes
from tests.support.ports import free_port
from tests.support.require import require

BINARY_ENV = "STATECAR_REDIS_SERVER"
_START_TIMEOUT = 15.0


def require_redis_server() -> str:
    return require("redis-server", env=BINARY_ENV, hint="apt-get install redis-server")


class RedisProcess:
    """One redis-server child process. `args` are extra config options (`--name value ...`)."""

    host = "127.0.0.1"

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        sentinel_config: str | None = None,
        tls: bool = False,
        directory: Path | None = None,
    ) -> None:
        self.binary = require_redis_server()
        self.port = free_port()
        self.extra_args = list(args)
        self.sentinel_config = sentinel_config
        self.tls = tls
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="statecar-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        path = self.directory / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _command_line(self) -> list[str]:
        log = str(self.directory / f"redis-{self.port}.log")
        if self.sentinel_config is not None:
            config = self.directory / f"sentinel-{self.port}.conf"
            if not config.exists():  # Sentinel rewrites its file; a restart keeps what it learnt
                config.write_text(
                    f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
                    f"logfile {log}\n{self.sentinel_config}\n"
                )
            return [self.binary, str(config), "--sentinel"]
        port_args = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else [
                "--port",
                str(self.port),
            ]
        )
        return [
            self.binary,
            *port_args,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            log,
            *self.extra_args,
        ]

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(self._command_line(), stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server exited at start-up:\n{self.log}")
            if self._answers():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start within {_START_TIMEOUT} s:\n{self.log}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                if self.tls:
                    return True  # listening is enough: the TLS tests handshake themselves
                sock.sendall(b"PING\r\n")
                return sock.recv(64)[:1] in (b"+", b"-")  # -NOAUTH also means it is serving
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop by pid (SIGTERM: Redis closes its clients; SIGKILL: the kernel resets them)."""
        process = self.process
        if process is None:
            return
        self.process = None
        processes.stop(process, sig=sig)  # SIGCONT too: a paused server acts on SIGTERM only then

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def running_redis(
    args: Sequence[str] = (),
    *,
    sentinel_config: str | None = None,
    tls: bool = False,
    directory: Path | None = None,
) -> Iterator[RedisProcess]:
    server = RedisProcess(args, sentinel_config=sentinel_config, tls=tls, directory=directory)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
