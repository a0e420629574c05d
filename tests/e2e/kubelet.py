"""
A kubelet stand-in for the e2e tier: run one container of a stored Pod as a local process.

There is no kubelet here (pods are stored, never run), so the e2e tier takes the container the
webhook injected, exactly as the API server returned it, and runs it: its command and args, its
env (literal values, `fieldRef`s and `secretKeyRef`s read from the API), and its Secret volume
mounts materialised into a temp dir and kept in sync with the Secret the way the kubelet
refreshes them (atomic swap). Two things are necessarily rewritten, and only these: the image's
`statecar` entrypoint becomes this checkout's interpreter, and mount paths / ports are moved to
a temp dir and free ports so several "pods" share one machine.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.e2e.localcluster import LocalCluster
from tests.support.sidecar import free_port

PORT_VARIABLES = ("STATECAR_HTTP_PORT", "STATECAR_METRICS_PORT", "DAPR_HTTP_PORT")


def find_container(pod: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = pod["spec"]
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        if container["name"] == name:
            return dict(container)
    raise LookupError(f"pod {pod['metadata'].get('name')} has no container {name!r}")


class PodProcess:
    """One container of a Pod, running locally, with its Secret volumes kept in sync."""

    def __init__(self, cluster: LocalCluster, pod: Mapping[str, Any], container_name: str) -> None:
        self.cluster = cluster
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self.container = find_container(pod, container_name)
        self.root = Path(tempfile.mkdtemp(prefix="statecar-pod-"))
        self.ports = {name: free_port() for name in PORT_VARIABLES}
        self.log_path = self.root / "container.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._sync_thread: threading.Thread | None = None
        self._mounts = self._secret_mounts()

    # -- the pod's own spec -----------------------------------------------------------------

    def _secret(self, name: str) -> dict[str, bytes]:
        raw = self.cluster.kubectl("get", "secret", name, "-n", self.namespace, "-o", "json").stdout
        data = json.loads(raw).get("data") or {}
        return {key: base64.b64decode(value) for key, value in data.items()}

    def _secret_mounts(self) -> list[tuple[str, Path, str]]:
        """(secret name, local dir, mount path) for every Secret volume the container mounts."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        mounts = []
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume:
                local = self.root / mount["name"]
                mounts.append((volume["secret"]["secretName"], local, mount["mountPath"]))
        return mounts

    def _relocate(self, value: str) -> str:
        for _, local, mount_path in self._mounts:
            if value.startswith(mount_path):
                return str(local) + value[len(mount_path) :]
        return value

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STATECAR_", "DAPR_"))}
        for item in self.container.get("env", []):
            name = item["name"]
            if "value" in item:
                env[name] = self._relocate(item["value"])
            elif "valueFrom" in item:
                source = item["valueFrom"]
                if "fieldRef" in source:
                    path = source["fieldRef"]["fieldPath"]
                    section, _, field = path.partition(".")
                    env[name] = str(self.pod[section].get(field, ""))
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    env[name] = self._secret(ref["name"])[ref["key"]].decode()
                else:
                    raise NotImplementedError(f"env {name}: {source}")
        for name, port in self.ports.items():
            if name in env:
                env[name] = str(port)
        return env

    def command(self) -> list[str]:
        argv = [*self.container.get("command", []), *self.container.get("args", [])]
        if not argv or Path(argv[0]).name != "statecar":
            raise AssertionError(f"the injected container does not run statecar: {argv}")
        return [sys.executable, "-m", "statecar_cli.main", *argv[1:]]

    # -- what the kubelet does --------------------------------------------------------------

    def _materialise(self) -> None:
        for secret_name, local, _ in self._mounts:
            data = self._secret(secret_name)
            staging = local.with_name(local.name + ".new")
            staging.mkdir(parents=True, exist_ok=True)
            changed = False
            for key, value in data.items():
                target = local / key
                if not target.exists() or target.read_bytes() != value:
                    changed = True
                (staging / key).write_bytes(value)
            if changed or not local.exists():
                local.mkdir(parents=True, exist_ok=True)
                for key in data:
                    # Atomic per file, as the kubelet's `..data` symlink swap is per volume.
                    os.replace(staging / key, local / key)
            for leftover in staging.iterdir():
                leftover.unlink()
            staging.rmdir()

    def _sync(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._materialise()
            except Exception:  # a failed refresh is retried, as the kubelet does
                continue

    def start(self) -> PodProcess:
        self._materialise()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=log, stderr=log
            )
        self._sync_thread = threading.Thread(target=self._sync, daemon=True)
        self._sync_thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['STATECAR_HTTP_PORT']}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['STATECAR_METRICS_PORT']}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def probe(self, kind: str = "startupProbe") -> str:
        """The URL the kubelet would probe for this container's `kind` probe."""
        probe = self.container[kind]["httpGet"]
        port = probe["port"]
        if isinstance(port, str):
            port = next(
                p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port
            )
        assert int(port) == int(self._spec_env("STATECAR_METRICS_PORT")), (
            "probes must hit the ops port"
        )
        return f"{self.ops_url}{probe['path']}"

    def _spec_env(self, name: str) -> str:
        return next(str(e["value"]) for e in self.container.get("env", []) if e["name"] == name)

    def wait_started(self, timeout: float = 30) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        url = self.probe()
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.process.returncode}:\n{self.log}")
            try:
                if httpx.get(url, timeout=1).status_code < 400:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"startup probe {url} never passed:\n{self.log}")

    def stop(self) -> int:
        self._stop.set()
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
