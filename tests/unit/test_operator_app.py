"""The composition root's contract with kopf, as real pods exercise it.

Two failures a process-based e2e cannot see, both found by running the image in a real pod
(tests/cluster): kopf derived its identity from `getpass.getuser()`, which raises under a uid
with no passwd entry (the image's 65532; OpenShift's arbitrary uids); and when kopf died the
operator still exited 0, so the kubelet saw a clean exit and `kubectl get pods` lied.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from statecar_operator import app, health_server
from statecar_operator.cluster import kube
from statecar_operator.memo import Indexes, Memo
from statecar_operator.settings import OperatorSettings
from statecar_operator.webhook_tls.server import LiveTLS


def _no_passwd_entry() -> str:
    # What getpass.getuser() does in the image: no USER/LOGNAME, and pwd.getpwuid(65532) fails.
    raise KeyError("getpwuid(): uid not found: 65532")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(**overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "namespace": "statecar-system",
        "identity": "statecar-operator-7d9f-abcde",
        "leader_election": False,
        "health_addr": "127.0.0.1",
        "health_port": _free_port(),
        "webhook_addr": "127.0.0.1",
        "webhook_port": _free_port(),
    }
    values.update(overrides)
    return OperatorSettings(**values)


async def test_kopf_starts_without_a_passwd_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(getpass, "getuser", _no_passwd_entry)
    monkeypatch.delenv("POD_ID", raising=False)
    settings = _settings()
    server = app.build_webhook_server(settings, LiveTLS(tmp_path), lambda: None)
    memo = Memo(
        settings=settings,
        readiness=health_server.Readiness(),
        events=None,  # type: ignore[arg-type]  # not used before a handler runs
        reconciler=None,  # type: ignore[arg-type]
        leadership=None,  # type: ignore[arg-type]
        indexes=Indexes(),
    )
    stop = asyncio.Event()
    options = app.kopf_options(settings, server=server, memo=memo, stop=stop)
    # kopf's own start-up path (spawn_tasks is what kopf.operator runs first): it must take
    # the replica's identity from us, and never ask for a user name.
    tasks = await kopf.spawn_tasks(**options)
    try:
        assert options["identity"] == "statecar-operator-7d9f-abcde"
    finally:
        # kopf's start-up task shields its clean-up from the first cancellation: repeat.
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)


class _FakeKube:
    async def list_component_uids(self, *namespaces: Any) -> set[str]:
        await asyncio.sleep(3600)
        return set()

    def __getattr__(self, name: str) -> Any:
        async def idle(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(3600)

        return idle


@contextlib.asynccontextmanager
async def _fake_connect(*args: Any, **kwargs: Any) -> AsyncIterator[_FakeKube]:
    yield _FakeKube()


def test_a_kopf_crash_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    async def crashing_kopf(**kwargs: Any) -> None:
        await asyncio.sleep(0.05)
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(kube, "connect", _fake_connect)
    monkeypatch.setattr(kopf, "operator", crashing_kopf)
    assert app.run(_settings()) == 1


def test_kopf_returning_after_sigterm_exits_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    async def graceful_kopf(**kwargs: Any) -> None:
        await asyncio.sleep(0.05)

    monkeypatch.setattr(kube, "connect", _fake_connect)
    monkeypatch.setattr(kopf, "operator", graceful_kopf)
    assert app.run(_settings()) == 0


def test_sigterm_sets_the_stop_flag_kopf_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf waits for its stop flag in a task of its own; unless SIGTERM sets that flag, the
    waiter outlives the signal and kopf waits 5 s for it as a hung task before exiting."""
    seen: dict[str, float] = {}

    async def kopf_waiting_for_its_flag(**kwargs: Any) -> None:
        # kopf's own handler, installed before its ready flag is raised: ours must replace it.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: None)
        kwargs["ready_flag"].set()
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        sent = time.monotonic()
        await kwargs["stop_flag"].wait()
        seen["stopped after"] = time.monotonic() - sent

    monkeypatch.setattr(kube, "connect", _fake_connect)
    monkeypatch.setattr(kopf, "operator", kopf_waiting_for_its_flag)
    assert app.run(_settings()) == 0
    assert seen["stopped after"] < 1


def test_kopf_watches_only_the_chosen_namespaces(tmp_path: Path) -> None:
    memo: Any = None
    server = app.build_webhook_server(_settings(), LiveTLS(tmp_path), lambda: None)
    everywhere = app.kopf_options(_settings(), server=server, memo=memo, stop=asyncio.Event())
    assert everywhere["clusterwide"] is True
    assert "namespaces" not in everywhere
    restricted = app.kopf_options(
        _settings(watch_namespaces="shop,cart"), server=server, memo=memo, stop=asyncio.Event()
    )
    assert restricted["clusterwide"] is False
    assert restricted["namespaces"] == ["cart", "shop"]
    # kopf's restricted mode: it neither lists Namespaces nor watches CRDs (RBAC grants neither).
    assert restricted["settings"].scanning.disabled is True
    assert everywhere["settings"].scanning.disabled is False
