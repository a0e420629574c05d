"""
Test helper (not a test module): a throwaway PostgreSQL server for any test tier.

`running_postgres()` runs `initdb` into a fresh temporary directory and starts `postgres` as a
child process on a free port on 127.0.0.1 (trust authentication, UTF8, locale C, durability
off for speed). On exit it stops that process by its own pid and deletes the directory.

PostgreSQL refuses to run as root. When the tests run as root, the server runs as the
`postgres` system user if it exists, else as a `statecar-pg` system user created on first use.

Set `STATECAR_TEST_POSTGRES_DSN` to use an existing server instead (nothing is started), and
`STATECAR_PG_BIN` to the directory holding `initdb` and `postgres` if they are not found in
/usr/local/bin, on PATH, or under /usr/lib/postgresql/*/bin. When no server can be had,
`running_postgres()` raises `PostgresUnavailable` (bench/run.py reports it), and
`required_postgres()` skips the calling tests with the reason, or fails them under
`STATECAR_REQUIRE_SERVERS` (`tests.support.require`).

Use from a test module (a module-scoped fixture keeps one server per module)::

    from tests.support import pg_server

    @pytest.fixture(scope="module")
    def postgres() -> Iterator[pg_server.PgServer]:
        with pg_server.required_postgres() as server:
            yield server
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import processes
from tests.support.ports import free_port
from tests.support.require import unavailable

DSN_ENV = "STATECAR_TEST_POSTGRES_DSN"
BIN_ENV = "STATECAR_PG_BIN"
_SERVICE_USER = "statecar-pg"
_DB_USER = "statecar"
_READY = "database system is ready to accept connections"
_START_TIMEOUT = 60.0


@dataclass(frozen=True)
class PgServer:
    """Where the server listens; `dsn` is an asyncpg/libpq URL for database `postgres`."""

    host: str
    port: int
    user: str
    database: str
    dsn: str


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here (callers usually turn this into a skip)."""


def find_pg_bin() -> Path | None:
    """The directory holding `initdb` and `postgres`, or None."""
    candidates: list[Path] = []
    if os.environ.get(BIN_ENV):
        candidates.append(Path(os.environ[BIN_ENV]))
    candidates.append(Path("/usr/local/bin"))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def _service_account() -> pwd.struct_passwd | None:
    """The non-root account to run postgres as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _SERVICE_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _SERVICE_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(_SERVICE_USER)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, port: int) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log.read_text()}")
        if _READY in log.read_text(errors="replace"):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
        time.sleep(0.05)
    raise RuntimeError(f"postgres did not become ready in {_START_TIMEOUT}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    processes.stop(proc, sig=signal.SIGINT, grace=20)  # "fast" shutdown: disconnect clients, exit


@contextlib.contextmanager
def running_postgres() -> Iterator[PgServer]:
    """Start a throwaway server (or use `STATECAR_TEST_POSTGRES_DSN`) for the `with` block."""
    external = os.environ.get(DSN_ENV)
    if external:
        yield PgServer(host="", port=0, user="", database="", dsn=external)
        return
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise PostgresUnavailable(f"initdb/postgres not found (set {BIN_ENV} or {DSN_ENV})")
    account = _service_account()
    uid = None if account is None else account.pw_uid
    gid = None if account is None else account.pw_gid
    root = Path(tempfile.mkdtemp(prefix="statecar-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        data, log = root / "data", root / "postgres.log"
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                f"--pgdata={data}",
                f"--username={_DB_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=root,
            user=uid,
            group=gid,
        )
        for attempt in range(3):
            port = free_port()
            with log.open("wb") as log_file:
                proc = subprocess.Popen(
                    [
                        str(bin_dir / "postgres"),
                        f"-D{data}",
                        "--listen_addresses=127.0.0.1",
                        f"--port={port}",
                        f"--unix_socket_directories={root}",
                        "--fsync=off",
                        "--full_page_writes=off",
                        "--synchronous_commit=off",
                        "--max_connections=50",
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=root,
                    user=uid,
                    group=gid,
                )
            try:
                _wait_ready(proc, log, port)
                break
            except RuntimeError:
                _stop(proc)
                proc = None
                if attempt == 2:  # the port may have been taken between probe and bind
                    raise
        yield PgServer(
            host="127.0.0.1",
            port=port,
            user=_DB_USER,
            database="postgres",
            dsn=f"postgresql://{_DB_USER}@127.0.0.1:{port}/postgres",
        )
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def required_postgres() -> Iterator[PgServer]:
    """`running_postgres()`; without PostgreSQL the calling tests skip (or fail, see `require`)."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(running_postgres())
        except PostgresUnavailable as exc:
            unavailable(str(exc))
        yield server
