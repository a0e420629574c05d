"""
Issue 8, item 1: a bad component fails alone, health says what is broken, and the reloader
never dies.

Before: a component with `redisPort: abc` (or a PostgreSQL URL with port `abc`, a keyword DSN
with `port=abc`, a malformed IPv6 URL) beside a valid one left the sidecar with no store at
all while `/v1.0/healthz` answered 204, and the same edit on a running sidecar killed the
reloader silently, so no later fix or wiring update was ever picked up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.sidecar import SidecarProcess

from statecar_contract import wiring
from statecar_contract.components import ResolvedComponent
from statecar_sidecar.loader import LoadedComponents
from statecar_sidecar.runtime import ComponentRuntime, Reloader

MEMORY = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec: {{type: state.in-memory, version: v1}}
"""

REDIS = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec:
  type: state.redis
  version: v1
  metadata:
  - {{name: redisHost, value: "127.0.0.1"}}
  - {{name: redisPort, value: "{port}"}}
"""

POSTGRES = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec:
  type: state.postgresql
  version: v1
  metadata:
  - {{name: connectionString, value: "{dsn}"}}
"""

BAD_COMPONENTS = {
    "redisPort abc": (REDIS.format(name="bad", port="abc"), "spec.metadata.redisPort"),
    "postgres URL port abc": (
        POSTGRES.format(name="bad", dsn="postgres://u:p@127.0.0.1:abc/db"),
        "spec.metadata.connectionString",
    ),
    "keyword DSN port=abc": (
        POSTGRES.format(name="bad", dsn="host=127.0.0.1 port=abc user=u dbname=db"),
        "spec.metadata.connectionString",
    ),
    "malformed IPv6 URL": (
        POSTGRES.format(name="bad", dsn="postgres://u:p@[::1/db"),
        "spec.metadata.connectionString",
    ),
}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "components"
    path.mkdir()
    return path


@pytest.fixture
def started() -> Iterator[list[SidecarProcess]]:
    sidecars: list[SidecarProcess] = []
    yield sidecars
    for sidecar in sidecars:
        assert sidecar.stop() == 0, sidecar.log


def start(sidecars: list[SidecarProcess], **kwargs: object) -> SidecarProcess:
    sidecar = SidecarProcess(**kwargs)  # type: ignore[arg-type]
    sidecars.append(sidecar)
    sidecar.start(wait_healthy=False)
    return sidecar


@pytest.mark.parametrize("case", sorted(BAD_COMPONENTS))
def test_a_bad_component_at_start_fails_alone_and_health_says_which(
    folder: Path, started: list[SidecarProcess], case: str
) -> None:
    document, field = BAD_COMPONENTS[case]
    (folder / "bad.yaml").write_text(document)
    (folder / "good.yaml").write_text(MEMORY.format(name="good"))
    sidecar = start(started, components_path=folder)
    with httpx.Client(base_url=sidecar.url, timeout=5) as api:
        assert api.post("/v1.0/state/good", json=[{"key": "k", "value": 1}]).status_code == 204
        assert api.get("/v1.0/state/good/k").content == b"1"
        for url in (f"{sidecar.url}/v1.0/healthz", f"{sidecar.ops_url}/v1.0/healthz"):
            health = httpx.get(url)
            assert health.status_code == 500, url
            reason = health.json()["components"]["bad"]
            assert reason.startswith(f"{folder / 'bad.yaml'}: {field}: "), reason
            assert "invalid literal" not in reason
        assert httpx.get(f"{sidecar.ops_url}/v1.0/healthz/good").status_code == 204
        assert httpx.get(f"{sidecar.ops_url}/v1.0/healthz/bad").status_code == 500
        assert httpx.get(f"{sidecar.ops_url}/v1.0/healthz/nothing").status_code == 404
        assert httpx.get(f"{sidecar.ops_url}/healthz").status_code == 204  # alive: no restart
        bad = api.get("/v1.0/state/bad/k")
        assert bad.status_code == 500
        assert field in bad.json()["message"]
        [failed] = api.get("/v1.0/metadata").json()["statecarFailedComponents"]
        assert (failed["name"], failed["source"]) == ("bad", str(folder / "bad.yaml"))
        assert field in failed["error"]
    assert "stores: good; not ready: bad" in sidecar.log


def test_a_bad_edit_on_a_running_sidecar_keeps_serving_and_a_fix_is_picked_up(
    folder: Path, started: list[SidecarProcess]
) -> None:
    (folder / "orders.yaml").write_text(MEMORY.format(name="orders"))
    (folder / "other.yaml").write_text(MEMORY.format(name="other"))
    sidecar = start(started, components_path=folder)
    ops = httpx.Client(base_url=sidecar.ops_url, timeout=5)
    with httpx.Client(base_url=sidecar.url, timeout=5) as api, ops:
        wait_until(lambda: ops.get("/v1.0/healthz").status_code == 204, "healthy")
        assert api.post("/v1.0/state/orders", json=[{"key": "k", "value": 1}]).status_code == 204

        # Edited into a value the backend refuses: the previous `orders` keeps serving (its data
        # too), `other` is untouched, and health names the component, the file and the field.
        (folder / "orders.yaml").write_text(REDIS.format(name="orders", port="abc"))
        wait_until(lambda: ops.get("/v1.0/healthz").status_code == 500, "not ready")
        reason = ops.get("/v1.0/healthz").json()["components"]["orders"]
        assert reason.startswith(f"{folder / 'orders.yaml'}: spec.metadata.redisPort: ")
        assert api.get("/v1.0/state/orders/k").content == b"1"
        assert api.get("/v1.0/state/other/k").status_code == 204
        [failed] = api.get("/v1.0/metadata").json()["statecarFailedComponents"]
        assert failed["previousVersionServing"] is True

        # The reloader is alive: a new component is picked up while `orders` stays broken.
        (folder / "fresh.yaml").write_text(MEMORY.format(name="fresh"))
        wait_until(lambda: api.get("/v1.0/state/fresh/k").status_code == 204, "fresh served")
        # A broken file (not even YAML) changes nothing else either.
        (folder / "other.yaml").write_text("spec: [unclosed\n")
        wait_until(
            lambda: str(folder / "other.yaml") in ops.get("/v1.0/healthz").json()["components"],
            "the unreadable file reported",
        )
        assert api.get("/v1.0/state/other/k").status_code == 204  # kept from before

        # Fixed, without a restart: ready again, the same `orders` store (its data) kept.
        (folder / "orders.yaml").write_text(MEMORY.format(name="orders"))
        (folder / "other.yaml").write_text(MEMORY.format(name="other"))
        wait_until(lambda: ops.get("/v1.0/healthz").status_code == 204, "ready again")
        assert api.get("/v1.0/state/orders/k").content == b"1"
        assert api.get("/v1.0/metadata").json()["statecarFailedComponents"] == []
    assert sidecar.process is not None
    assert sidecar.process.poll() is None


def _write_wiring(path: Path, *components: ResolvedComponent) -> None:
    data = wiring.encode(wiring.with_components("shop", components))[wiring.WIRING_FILE]
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def test_wiring_updates_keep_being_picked_up_after_a_bad_edit(
    tmp_path: Path, started: list[SidecarProcess]
) -> None:
    """The operator resolves secrets into the wiring file: a Secret holding `redisPort: abc`
    reaches the sidecar there. A later update (a rotated password, here a new SQLite file
    for `db`) must still be applied."""
    wiring_file = tmp_path / wiring.WIRING_FILE
    memory = ResolvedComponent("memo", "state.in-memory")

    def db(name: str) -> ResolvedComponent:
        return ResolvedComponent(
            "db", "state.sqlite", metadata={"connectionString": str(tmp_path / name)}
        )

    _write_wiring(wiring_file, memory, db("one.db"))
    sidecar = start(started, wiring_file=wiring_file)
    ops = httpx.Client(base_url=sidecar.ops_url, timeout=5)
    with httpx.Client(base_url=sidecar.url, timeout=5) as api, ops:
        wait_until(lambda: ops.get("/v1.0/healthz").status_code == 204, "healthy")
        broken = ResolvedComponent(
            "cache", "state.redis", metadata={"redisHost": "127.0.0.1", "redisPort": "abc"}
        )
        _write_wiring(wiring_file, memory, db("one.db"), broken)
        wait_until(lambda: ops.get("/v1.0/healthz").status_code == 500, "not ready")
        reason = ops.get("/v1.0/healthz/cache").json()["message"]
        assert f"{wiring_file} (component cache): spec.metadata.redisPort" in reason
        assert "abc" not in reason  # wiring values come from Secrets: never quoted

        assert api.post("/v1.0/state/db", json=[{"key": "k", "value": 2}]).status_code == 204
        _write_wiring(wiring_file, memory, db("two.db"), broken)  # the "rotation"
        wait_until(lambda: api.get("/v1.0/state/db/k").status_code == 204, "db moved to two.db")

        _write_wiring(wiring_file, memory, db("two.db"))
        wait_until(lambda: ops.get("/v1.0/healthz").status_code == 204, "ready again")


# --- the reloader in process: it cannot die -------------------------------------------------


class _Source:
    """A component source whose next answer the test sets: components, or an exception."""

    def __init__(self) -> None:
        self.answer: LoadedComponents | BaseException = LoadedComponents((), "empty")
        self.version = 0

    def set(self, answer: LoadedComponents | BaseException) -> None:
        self.answer = answer
        self.version += 1

    def load(self) -> LoadedComponents:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def changed(self) -> str:
        return str(self.version)


async def test_the_reloader_survives_any_error_and_applies_the_next_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = ComponentRuntime(app_id="app", namespace=None)
    source = _Source()
    reloader = Reloader(runtime, source.load, 0.01, changed=source.changed)
    good = ResolvedComponent("good", "state.in-memory")
    source.set(LoadedComponents((good,), "1"))
    await reloader.load_initial()
    task = asyncio.create_task(reloader.run())
    try:
        # A bug in the source (not a ComponentError): logged with its traceback, reported.
        source.set(RuntimeError("unforeseen"))
        await _eventually(lambda: runtime.last_reload_error == "RuntimeError('unforeseen')")
        assert "component reload failed; retrying on the next poll" in caplog.text
        # A store whose opener fails in an unforeseen way fails alone.
        odd = ResolvedComponent("odd", "state.unknown-kind")
        fresh = ResolvedComponent("fresh", "state.in-memory")
        source.set(LoadedComponents((good, odd, fresh), "2"))
        await _eventually(lambda: "fresh" in runtime.stores)
        assert sorted(runtime.stores) == ["fresh", "good"]
        assert "unknown component type" in runtime.failures["odd"]
        # ... and the reloader, still running, applies the fix.
        source.set(LoadedComponents((good, fresh), "3"))
        await _eventually(lambda: not runtime.failed and runtime.last_reload_error is None)
        assert not task.done()
    finally:
        task.cancel()
        await runtime.close()


async def test_an_opener_that_raises_anything_fails_only_its_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from statecar_sidecar import runtime as runtime_module
    from statecar_sidecar.stores.registry import open_store as real_open

    async def open_store(component_type: str, metadata: object) -> object:
        if metadata:
            raise ValueError("invalid literal for int() with base 10: 'abc'")
        return await real_open(component_type, {})

    monkeypatch.setattr(runtime_module, "open_store", open_store)
    runtime = ComponentRuntime(app_id="app", namespace=None)
    failures = await runtime.apply(
        [
            ResolvedComponent("good", "state.in-memory"),
            ResolvedComponent("bad", "state.in-memory", metadata={"x": "abc"}),
        ]
    )
    assert sorted(runtime.stores) == ["good"]
    assert failures == {"bad": "state.in-memory: invalid literal for int() with base 10: 'abc'"}
    await runtime.close()


async def _eventually(condition: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# --- the operator's probe reads the same typed settings: no unguarded int() ------------------


@pytest.mark.parametrize(
    ("component_type", "metadata", "field"),
    [
        ("state.redis", {"redisHost": "127.0.0.1", "redisPort": "abc"}, "redisPort"),
        ("state.redis", {"redisHost": "[::1:6379"}, "redisHost"),
        (
            "state.postgresql",
            {"connectionString": "postgres://u:p@127.0.0.1:abc/db"},
            "connectionString",
        ),
        (
            "state.postgresql",
            {"connectionString": "host=127.0.0.1 port=abc user=u"},
            "connectionString",
        ),
        ("state.postgresql", {"connectionString": "postgres://u:p@[::1/db"}, "connectionString"),
        (
            "state.postgresql",
            {"connectionString": "postgres://u:p@::1:5432/db"},
            "connectionString",
        ),
    ],
)
async def test_the_operator_probe_reports_a_bad_address_instead_of_raising(
    component_type: str, metadata: dict[str, str], field: str
) -> None:
    from statecar_operator.reconciliation.reachability import measure

    outcome = await measure(ResolvedComponent("bad", component_type, metadata=metadata), timeout=1)
    assert (outcome.status, outcome.reason) == ("False", "BadAddress")
    assert f"spec.metadata.{field}" in outcome.message
    assert "invalid literal" not in outcome.message
