"""
A kubelet stand-in for the e2e tier: run one container of a stored Pod as a local process.

There is no kubelet here (pods are stored, never run), so the e2e tier takes the container the
webhook injected, exactly as the API server returned it, and runs it: its command and args, its
env (literal values, `fieldRef`s and `secretKeyRef`s read from the API), and its Secret and
projected-Secret volume mounts materialised into a temp dir and kept in sync with the Secrets the
way the kubelet refreshes them (atomic swap per file; a key removed from a Secret disappears;
`items` select and rename keys; an `optional` Secret or key that does not exist is left out;
while a Secret cannot be read the last content stays, as with the kubelet:
pkg/volume/secret/secret.go `MakePayload`, pkg/volume/projected/projected.go `collectData`). Two things are necessarily rewritten,
and only these: the image's `statecar` entrypoint becomes this checkout's interpreter, and mount
paths / ports are moved to a temp dir and free ports so several "pods" share one machine.

Secrets are read over HTTPS with the cluster's admin token (standing in for the kubelet's node
credentials), not with kubectl, so the 0.5 s refresh costs a request, not a process.
"""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from tests.e2e.localcluster import LocalCluster
from tests.support import processes
from tests.support.ports import free_port

PORT_VARIABLES = (
    "STATECAR_HTTP_PORT",
    "STATECAR_METRICS_PORT",
    "DAPR_HTTP_PORT",
    "STATECAR_GRPC_PORT",
    "DAPR_GRPC_PORT",
)
#: How often the Secret volumes are refreshed (the real kubelet: its sync period plus cache TTL).
SYNC_INTERVAL = 0.5


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
        self._api = httpx.Client(
            base_url=cluster.url,
            verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
            headers={"Authorization": f"Bearer {cluster.token}"},
            timeout=10,
            trust_env=False,
        )
        self._mounts = self._secret_mounts()
        self.refresh_errors = 0

    # -- the pod's own spec -----------------------------------------------------------------

    def _secret(self, name: str, *, optional: bool = False) -> dict[str, bytes]:
        response = self._api.get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")
        if optional and response.status_code == 404:
            return {}  # the kubelet mounts an optional Secret that does not exist as empty
        response.raise_for_status()
        data = response.json().get("data") or {}
        return {key: base64.b64decode(value) for key, value in data.items()}

    def _secret_mounts(self) -> list[tuple[list[dict[str, Any]], Path, str]]:
        """(secret sources, local dir, mount path) for every Secret or projected volume mounted;
        a source is `{"name", "optional", "items"}` as in a projected volume."""
        volumes = {v["name"]: v for v in self.pod["spec"].get("volumes", [])}
        mounts = []
        for mount in self.container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            local = self.root / mount["name"]
            if "secret" in volume:
                source = dict(volume["secret"])
                source["name"] = source.pop("secretName")
                mounts.append(([source], local, mount["mountPath"]))
            elif "projected" in volume:
                sources = volume["projected"].get("sources") or []
                if any(set(s) != {"secret"} for s in sources):
                    raise NotImplementedError(f"projected volume {mount['name']}: {sources}")
                mounts.append(([s["secret"] for s in sources], local, mount["mountPath"]))
        return mounts

    def _relocate(self, value: str) -> str:
        for _, local, mount_path in self._mounts:
            if value.startswith(mount_path):
                return str(local) + value[len(mount_path) :]
        return value

    def _files(self, sources: list[dict[str, Any]]) -> dict[str, bytes]:
        """The files of one volume, as the kubelet computes its payload."""
        files: dict[str, bytes] = {}
        for source in sources:
            optional = source.get("optional") is True
            data = self._secret(source["name"], optional=optional)
            items = source.get("items")
            if items is None:
                files.update(data)
                continue
            for item in items:
                if item["key"] in data:
                    files[item["path"]] = data[item["key"]]
                elif not optional:
                    raise LookupError(f"Secret {source['name']} has no key {item['key']}")
        return files

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
        for sources, local, _ in self._mounts:
            data = self._files(sources)
            local.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                target = local / key
                if target.exists() and target.read_bytes() == value:
                    continue
                staging = local.with_name(f".{local.name}.{key}.new")
                staging.write_bytes(value)
                # Atomic per file (the kubelet's `..data` symlink swap is atomic per volume; each
                # reader here reads one file, so it sees the old or the new content, never a mix).
                os.replace(staging, target)
            for stale in local.iterdir():
                if stale.name not in data:
                    stale.unlink()

    def _sync(self) -> None:
        while not self._stop.wait(SYNC_INTERVAL):
            try:
                self._materialise()
            except Exception:  # noqa: BLE001  # a failed refresh keeps the last content; retried
                self.refresh_errors += 1

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
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
        """Poll the container's startupProbe as the kubelet would (2xx/3xx passes)."""
        deadline = time.monotonic() + timeout
        url = self.probe()
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sidecar exited with {self.process.returncode}:\n{self.log}")
            try:
                status = httpx.get(url, timeout=1, trust_env=False).status_code
                if 200 <= status < 400:
                    return
                last = f"HTTP {status}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"startup probe {url} never passed within {timeout}s ({last}):\n{self.log}"
        )

    def stop(self) -> int:
        """SIGTERM (then SIGKILL), stop the volume refresh, remove the pod's directory."""
        self._stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=5)
        returncode = 0
        if self.process is not None:
            returncode = processes.stop(self.process)
        self._api.close()
        if os.environ.get("STATECAR_E2E_KEEP", "") in ("", "0"):
            shutil.rmtree(self.root, ignore_errors=True)
        return returncode
