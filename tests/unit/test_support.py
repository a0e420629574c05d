"""
The shared test helpers (tests/support): a missing tool skips a test with the reason, or fails
it when `STATECAR_REQUIRE_SERVERS` is set; the stop sequence ends even a process that ignores
SIGTERM, within its bounded waits.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support import processes
from tests.support.ports import free_port
from tests.support.require import require

MISSING = "statecar-no-such-binary"


@pytest.fixture
def nothing_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATECAR_REQUIRE_SERVERS", raising=False)
    monkeypatch.delenv("CI", raising=False)


@pytest.mark.usefixtures("nothing_required")
def test_a_missing_binary_skips_with_the_reason_and_the_hint() -> None:
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} not found \\(install it\\)"):
        require(MISSING, hint="install it")


@pytest.mark.parametrize("variable", ["STATECAR_REQUIRE_SERVERS", "CI"])
@pytest.mark.usefixtures("nothing_required")
def test_a_missing_binary_fails_when_servers_are_required(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} not found"):
        require(MISSING)


@pytest.mark.usefixtures("nothing_required")
def test_zero_means_not_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATECAR_REQUIRE_SERVERS", "0")
    with pytest.raises(pytest.skip.Exception):
        require(MISSING)


def test_the_variable_then_the_extra_folders_then_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tool = tmp_path / MISSING
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert require(MISSING, also_in=[tmp_path]) == str(tool)
    monkeypatch.setenv("STATECAR_TEST_TOOL", "/elsewhere/tool")
    assert require(MISSING, env="STATECAR_TEST_TOOL", also_in=[tmp_path]) == "/elsewhere/tool"
    assert require("sh") == shutil.which("sh")


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_stop_kills_a_process_that_ignores_the_signal_after_the_grace() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None
    with stubborn.stdout:
        stubborn.stdout.readline()
    started = time.monotonic()
    assert processes.stop(stubborn, grace=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert processes.stop(stubborn) == -signal.SIGKILL, "stopping a stopped process is a no-op"
