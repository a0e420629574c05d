#!/usr/bin/env python3
"""A single-node Kubernetes cluster with real containers, on this machine, and its complete removal.

    python3 scripts/cluster/realcluster.py up      # start; prints the kubeconfig path
    python3 scripts/cluster/realcluster.py up --chart  # also build the image, install the chart
    python3 scripts/cluster/realcluster.py down    # stop and remove everything it changed
    python3 scripts/cluster/realcluster.py status

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a kubelet (v1.34.x, built by
scripts/k8s-tools.sh --cluster), containerd + runc + the bridge CNI plugin from Debian, a pause
image built from a tiny static Go program. Pods live on a private /24 behind the bridge
`statecar0`, inside network namespaces containerd creates; the API server binds the bridge's
address, so pods reach it there; ip_forward stays 0 and there is no NAT: nothing leaves the
machine. There is no kube-proxy and no cluster DNS (they need host iptables rules): address
backends by pod IP, and give in-cluster clients KUBERNETES_SERVICE_HOST/PORT explicitly
(`API_HOST`, `API_PORT` below).

Everything the run changes is written down in <run dir>/state.json as it happens (process ids,
sysctls' previous values, host paths that did not exist before), so `down` undoes it from any
process, also after a crash: processes by PID (and the containerd shims of *this* containerd),
mounts under the paths it owns, the kubepods cgroups, the bridge, the sysctls, the host paths.

Only one such cluster runs on a machine at a time (the kubelet uses fixed host paths): `up`
and `down` serialize on /run/statecar-cluster.lock, and `up` waits (STATECAR_CLUSTER_WAIT
seconds, default 1200) while another run's cluster is alive; a dead run's leftovers it removes.
"""

# ruff: noqa: S603, S607

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("STATECAR_CACHE", Path.home() / ".cache" / "statecar"))
BIN = CACHE / "bin"
RUN = Path(os.environ.get("STATECAR_CLUSTER_DIR", "/run/statecar-cluster"))
LOCK = Path("/run/statecar-cluster.lock")
CONTAINERD_ROOT = CACHE / "containerd"  # image content survives runs (a cache, like the Go builds)

SUBNET = ipaddress.ip_network(os.environ.get("STATECAR_CLUSTER_SUBNET", "10.213.77.0/24"))
API_HOST = str(SUBNET.network_address + 1)  # the bridge's address; the API server binds it
API_PORT = 6443
BRIDGE = "statecar0"
NODE = "statecar-node"
PAUSE_IMAGE = "localhost/statecar-pause:1"
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
HOST_PATHS = (  # created by the kubelet/containerd/CNI whatever their configured roots say
    "/var/lib/kubelet",
    "/var/log/pods",
    "/var/log/containers",
    "/var/run/netns",
    "/run/containerd",
    "/var/lib/cni",
)
CGROUP = Path("/sys/fs/cgroup")


def log(message: str) -> None:
    print(f"[cluster] {message}", file=sys.stderr, flush=True)


# --- state -------------------------------------------------------------------------------------


def _state() -> dict[str, Any]:
    path = RUN / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(state: dict[str, Any]) -> None:
    tmp = RUN / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    tmp.rename(RUN / "state.json")


# --- PKI ---------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _cert(
    subject_cn: str,
    key: Any,
    ca: tuple[x509.Certificate, Any] | None,
    *,
    org: str | None = None,
    sans: list[str] = (),  # type: ignore[assignment]
    is_ca: bool = False,
) -> x509.Certificate:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attrs)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca[0].subject if ca else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if sans:
        alt: list[x509.GeneralName] = []
        for s in sans:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                alt.append(x509.DNSName(s))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    if not is_ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(ca[1] if ca else key, hashes.SHA256())


def _make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("statecar-cluster-ca", ca_key, None, is_ca=True)
    (pki / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (pki / "ca.key").write_bytes(_pem(ca_key))
    pairs = {
        "apiserver": (
            "kube-apiserver",
            None,
            [
                API_HOST,
                "127.0.0.1",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ],
        ),
        "admin": ("statecar-admin", "system:masters", []),
        "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters", []),
        "controller-manager": ("system:kube-controller-manager", None, []),
        "scheduler": ("system:kube-scheduler", None, []),
        "kubelet": (f"system:node:{NODE}", "system:nodes", [API_HOST, NODE, "127.0.0.1"]),
    }
    for name, (cn, org, sans) in pairs.items():
        key = _key()
        cert = _cert(cn, key, (ca, ca_key), org=org, sans=sans)
        (pki / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (pki / f"{name}.key").write_bytes(_pem(key))
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(_pem(sa))
    (pki / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _kubeconfig(path: Path, pki: Path, user: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "statecar",
                        "cluster": {
                            "server": f"https://{API_HOST}:{API_PORT}",
                            "certificate-authority": str(pki / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [
                    {"name": "statecar", "context": {"cluster": "statecar", "user": user}}
                ],
                "current-context": "statecar",
            },
            indent=1,
        )
    )
    return path


# --- processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The cluster's processes started by this Python process. They outlive the call that starts
#: them and are stopped by PID (from the state file, so any process can run `down`); holding
#: the Popen objects keeps Python from warning that a child it dropped is still running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(state: dict[str, Any], name: str, argv: list[str]) -> None:
    # The child writes its own copy of the log descriptor; ours is closed at once.
    with open(RUN / "logs" / f"{name}.log", "ab") as logf:
        proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=RUN,
        )
    _CHILDREN[proc.pid] = proc
    state.setdefault("pids", {})[name] = proc.pid
    _save(state)


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:  # ours: poll() reaps it and records that it is gone
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def _stop_pid(pid: int, grace: float = 10.0) -> None:
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def _wait(what: str, check: Any, timeout: float, state: dict[str, Any]) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        for name, pid in state.get("pids", {}).items():
            if not _alive(pid):
                tail = (RUN / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited while waiting for {what}:\n{tail}")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(0.3)
    raise RuntimeError(f"timed out waiting for {what}: {last!r}")


def kubectl(*args: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    out = subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={RUN / 'admin.kubeconfig'}", *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def ctr(*args: str, timeout: float = 300) -> str:
    return subprocess.run(
        ["ctr", "--address", str(RUN / "containerd" / "containerd.sock"), "-n", "k8s.io", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


# --- host changes -----------------------------------------------------------------------------


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def _record_host(state: dict[str, Any]) -> None:
    state["sysctls"] = {s: Path("/proc/sys", s).read_text().strip() for s in KUBELET_SYSCTLS}
    state["ip_forward"] = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    state["created_paths"] = [p for p in HOST_PATHS if not os.path.lexists(p)]
    _save(state)


def _make_bridge(state: dict[str, Any]) -> None:
    if _sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    state["bridge"] = BRIDGE
    _save(state)
    _sh("ip", "addr", "replace", f"{API_HOST}/{SUBNET.prefixlen}", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")


# --- images ------------------------------------------------------------------------------------

PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

// The pod sandbox's process: hold the namespaces until told to stop.
func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
"""


def _pause_archive() -> Path:
    out = CACHE / "image" / "pause-1.tar"
    if out.exists():
        return out
    build = CACHE / "build" / "pause"
    build.mkdir(parents=True, exist_ok=True)
    (build / "go.mod").write_text("module statecar.local/pause\n\ngo 1.22\n")
    (build / "main.go").write_text(PAUSE_GO)
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        "GOCACHE": str(CACHE / "go-build"),
        "GOWORK": "off",
        "GOTOOLCHAIN": "local",
        "GOFLAGS": "",
    }
    go = shutil.which("go") or "/usr/local/go/bin/go"
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags=-s -w", "-o", "pause", "."],
        cwd=build,
        env=env,
        check=True,
    )
    store = [
        "--root",
        str(CACHE / "image" / "storage"),
        "--runroot",
        "/run/statecar-buildah",
        "--storage-driver",
        "overlay",
    ]
    c = _sh("buildah", *store, "from", "scratch").stdout.strip()
    _sh("buildah", *store, "copy", c, str(build / "pause"), "/pause")
    _sh("buildah", *store, "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", c)
    _sh("buildah", *store, "commit", "--rm", c, PAUSE_IMAGE)
    tmp = out.with_suffix(".tmp")
    _sh("buildah", *store, "push", PAUSE_IMAGE, f"docker-archive:{tmp}:{PAUSE_IMAGE}")
    tmp.rename(out)
    return out


def import_image(archive: Path, ref: str) -> None:
    """Put a docker-archive into containerd's k8s.io namespace, unless it is there already."""
    names = set(ctr("images", "ls", "-q").split())
    if ref not in names:
        ctr("images", "import", str(archive))
    # Older builds of the same repository would pile up in the cached containerd root.
    repo = ref.rsplit(":", 1)[0]
    stale = [n for n in names if n.rsplit(":", 1)[0] == repo and n != ref]
    if stale:
        ctr("images", "rm", *stale)


# --- up ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _running(state: dict[str, Any]) -> bool:
    return any(_alive(pid) for pid in state.get("pids", {}).values())


def up() -> Path:
    """Start everything; return the admin kubeconfig's path. Raises (after `down`) on failure."""
    deadline = time.monotonic() + float(os.environ.get("STATECAR_CLUSTER_WAIT", "1200"))
    while True:
        with _locked():
            state = _state()
            if not _running(state):
                if state:
                    log("a dead run's leftovers found: removing them first")
                    _down()
                RUN.mkdir(parents=True, exist_ok=True)
                try:
                    return _up()
                except BaseException:
                    log("start failed: tearing down")
                    tail_logs()
                    _down()
                    raise
        if time.monotonic() > deadline:
            raise RuntimeError(f"another run's cluster is up in {RUN}: `make cluster-down` ends it")
        log(f"another run's cluster is up in {RUN}; waiting for it to go down")
        time.sleep(5)


def tail_logs(lines: int = 15) -> None:
    for path in sorted((RUN / "logs").glob("*.log")) if (RUN / "logs").exists() else []:
        text = path.read_text(errors="replace").splitlines()[-lines:]
        log(f"--- {path.name}\n" + "\n".join(text))


def _up() -> Path:
    t0 = time.monotonic()
    state: dict[str, Any] = {"run": str(RUN), "started": time.time()}
    for sub in ("logs", "pki", "etcd", "containerd", "cni/net.d", "cni/ipam", "kubelet"):
        (RUN / sub).mkdir(parents=True, exist_ok=True)
    _save(state)
    _record_host(state)
    tools = (
        subprocess.run(
            ["bash", str(REPO / "scripts" / "k8s-tools.sh"), "--cluster"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    assert Path(tools[-1]) == BIN, tools
    pause = _pause_archive()
    pki = RUN / "pki"
    _make_pki(pki)
    admin = _kubeconfig(RUN / "admin.kubeconfig", pki, "admin")
    for user in ("controller-manager", "scheduler", "kubelet"):
        _kubeconfig(RUN / f"{user}.kubeconfig", pki, user)
    _make_bridge(state)

    # containerd
    cd = RUN / "containerd"
    (cd / "config.toml").write_text(f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{cd / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{cd / "containerd.sock"}"
[ttrpc]
  address = "{cd / "containerd.sock.ttrpc"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{RUN / "cni" / "net.d"}"
""")
    (RUN / "cni" / "net.d" / "10-statecar.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "statecar",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": False,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(RUN / "cni" / "ipam"),
                            "ranges": [[{"subnet": str(SUBNET), "gateway": API_HOST}]],
                        },
                    }
                ],
            }
        )
    )
    _spawn(state, "containerd", ["containerd", "--config", str(cd / "config.toml")])
    _wait(
        "containerd",
        lambda: (cd / "containerd.sock").exists() and ctr("version", timeout=5),
        30,
        state,
    )
    import_image(pause, PAUSE_IMAGE)

    # etcd + kube-apiserver
    etcd_port, peer_port = _free_port(), _free_port()
    _spawn(
        state,
        "etcd",
        [
            str(BIN / "etcd"),
            "--name=statecar",
            f"--data-dir={RUN / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=statecar=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    _spawn(
        state,
        "kube-apiserver",
        [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={API_HOST}",
            f"--advertise-address={API_HOST}",
            f"--secure-port={API_PORT}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--enable-aggregator-routing=true",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
    )
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))

    def ready() -> bool:
        url = f"https://{API_HOST}:{API_PORT}/readyz"
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=3) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError as exc:  # not ready yet: close its socket, ask again
            exc.close()
            return False

    _wait("kube-apiserver /readyz", ready, 90, state)

    _spawn(
        state,
        "kube-controller-manager",
        [
            str(BIN / "kube-controller-manager"),
            f"--kubeconfig={RUN / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={RUN / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={RUN / 'controller-manager.kubeconfig'}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            "--controllers=*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle,-route",
            "--profiling=false",
            "--v=1",
        ],
    )
    _spawn(
        state,
        "kube-scheduler",
        [
            str(BIN / "kube-scheduler"),
            f"--kubeconfig={RUN / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={RUN / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={RUN / 'scheduler.kubeconfig'}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}",
            "--profiling=false",
            "--v=1",
        ],
    )

    # kubelet
    kl = RUN / "kubelet"
    (kl / "config.yaml").write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": API_HOST,
                "port": 10250,
                "healthzPort": 0,
                "readOnlyPort": 0,
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": True},
                    "x509": {"clientCAFile": str(pki / "ca.crt")},
                },
                "authorization": {"mode": "Webhook"},
                "tlsCertFile": str(pki / "kubelet.crt"),
                "tlsPrivateKeyFile": str(pki / "kubelet.key"),
                "cgroupDriver": "cgroupfs",
                "failSwapOn": False,
                "makeIPTablesUtilChains": False,
                "containerRuntimeEndpoint": f"unix://{cd / 'containerd.sock'}",
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "evictionHard": {
                    "memory.available": "50Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "syncFrequency": "10s",
                "fileCheckFrequency": "20s",
                "serializeImagePulls": False,
                "maxPods": 60,
                "resolvConf": "/etc/resolv.conf",
                "clusterDomain": "cluster.local",
            }
        )
    )
    _spawn(
        state,
        "kubelet",
        [
            str(BIN / "kubelet"),
            f"--config={kl / 'config.yaml'}",
            f"--kubeconfig={RUN / 'kubelet.kubeconfig'}",
            f"--root-dir={kl / 'root'}",
            f"--hostname-override={NODE}",
            f"--node-ip={API_HOST}",
            "--v=1",
        ],
    )

    def node_ready() -> bool:
        out = kubectl(
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return out.strip() == "True"

    _wait(f"node {NODE} Ready", node_ready, 120, state)
    # Pods may need the default ServiceAccount before they can be created.
    _wait(
        "default ServiceAccount",
        lambda: (
            kubectl("get", "serviceaccount", "default", "-n", "default", check=False).strip() != ""
        ),
        60,
        state,
    )
    state["up_seconds"] = round(time.monotonic() - t0, 1)
    _save(state)
    log(f"cluster up in {state['up_seconds']}s: KUBECONFIG={admin}")
    return admin


# --- down --------------------------------------------------------------------------------------


def _mounts_under(prefixes: list[str]) -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if any(target == p or target.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(target)
    return sorted(found, key=len, reverse=True)


def _cgroup_pids(root: Path) -> set[int]:
    pids: set[int] = set()
    if root.is_dir():
        for procs in root.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _kubepods_cgroups() -> list[Path]:
    return [p for c in CGROUP.iterdir() if c.is_dir() for p in c.glob("kubepods*") if p.is_dir()]


def _shim_pids() -> list[int]:
    """The containerd shims of THIS containerd (their command line names its socket)."""
    sock = str(RUN / "containerd" / "containerd.sock")
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
                    pids.append(int(proc.name))
    return pids


def down() -> None:
    with _locked():
        _down()


def _down() -> None:
    state = _state()
    pids: dict[str, int] = state.get("pids", {})
    # 1. The kubelet first (it would restart containers), then every container process.
    if "kubelet" in pids:
        _stop_pid(pids["kubelet"])
    for _ in range(3):
        victims = set()
        for cg in _kubepods_cgroups():
            victims |= _cgroup_pids(cg)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not victims:
            break
        time.sleep(0.5)
    # 2. The control plane and containerd, then the shims of this containerd.
    for name in (
        "kube-scheduler",
        "kube-controller-manager",
        "kube-apiserver",
        "etcd",
        "containerd",
    ):
        if name in pids:
            _stop_pid(pids[name])
    for pid in _shim_pids():
        _stop_pid(pid, grace=2)
    # 3. Mounts: container rootfs, pod volumes, network namespaces, containerd's shm.
    prefixes = [
        str(RUN),
        str(CONTAINERD_ROOT),
        "/var/lib/kubelet",
        "/run/containerd",
        "/var/run/netns",
        "/run/netns",
    ]
    for target in _mounts_under(prefixes):
        if _sh("umount", target, check=False).returncode != 0:
            _sh("umount", "-l", target, check=False)
    # 4. cgroups the kubelet made (deepest first; empty by now).
    for cg in _kubepods_cgroups():
        deepest_first = sorted(
            (p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        )
        for d in [*deepest_first, cg]:
            with contextlib.suppress(OSError):
                d.rmdir()
    # 5. The bridge (the veths went with the namespaces), sysctls, host paths.
    if state.get("bridge"):
        # The pods' veths first: a namespace the kernel has not reaped yet keeps its pair alive.
        ports = _sh("ip", "-o", "link", "show", "master", state["bridge"], check=False).stdout
        for line in ports.splitlines():
            _sh("ip", "link", "del", line.split(":")[1].strip().split("@")[0], check=False)
        _sh("ip", "link", "del", state["bridge"], check=False)
    for key, value in state.get("sysctls", {}).items():
        with contextlib.suppress(OSError):
            Path("/proc/sys", key).write_text(value)
    for path in state.get("created_paths", []):
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
    # netns files the CNI made under a pre-existing /var/run/netns
    for ns in Path("/var/run/netns").glob("cni-*") if Path("/var/run/netns").exists() else []:
        with contextlib.suppress(OSError):
            ns.unlink()
    if RUN.exists():
        # Keep logs for a post-mortem, next to the run dir; remove everything else.
        logs = RUN / "logs"
        keep = CACHE / "cluster-last-logs"
        if logs.exists():
            shutil.rmtree(keep, ignore_errors=True)
            shutil.move(str(logs), keep)
        shutil.rmtree(RUN, ignore_errors=True)
    left = [p for p in (state.get("created_paths") or []) if os.path.lexists(p)]
    if left or _kubepods_cgroups() or _mounts_under([str(RUN), str(CONTAINERD_ROOT)]):
        log(f"WARNING: left behind: paths {left}, cgroups {_kubepods_cgroups()}")
    log("cluster down")


def status() -> int:
    state = _state()
    if not state:
        print("no cluster")
        return 1
    for name, pid in state.get("pids", {}).items():
        print(f"{name:25} pid {pid:7} {'running' if _alive(pid) else 'EXITED'}")
    print(f"KUBECONFIG={RUN / 'admin.kubeconfig'}")
    return 0


def build_image(*args: str) -> tuple[Path, str]:
    """scripts/cluster/image.sh: (archive, image reference), built or from the cache."""
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "cluster" / "image.sh"), *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.split()
    return Path(out[-2]), out[-1]


def chart_values(image: str) -> Path:
    """A values file for this cluster: the local image, and the API server's real address
    (no kube-proxy here, so the Service IP in KUBERNETES_SERVICE_HOST does not route)."""
    repo, tag = image.rsplit(":", 1)
    path = RUN / "values.yaml"
    path.write_text(
        json.dumps(
            {
                "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
                "operator": {
                    "extraEnv": [
                        {"name": "KUBERNETES_SERVICE_HOST", "value": API_HOST},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": str(API_PORT)},
                    ]
                },
            },
            indent=1,
        )
    )
    return path


def up_with_chart() -> None:
    """`make cluster`: the cluster, the image built from the Dockerfile, the chart installed."""
    archive, ref = build_image()
    kubeconfig = up()
    import_image(archive, ref)
    values = chart_values(ref)
    subprocess.run(
        [
            str(BIN / "helm"),
            f"--kubeconfig={kubeconfig}",
            "upgrade",
            "--install",
            "statecar",
            str(REPO / "charts" / "statecar"),
            "-n",
            "statecar-system",
            "--create-namespace",
            "-f",
            str(values),
            "--wait",
            "--timeout",
            "180s",
        ],
        check=True,
    )
    print(f"""
statecar is installed on a local single-node cluster (image {ref}).

  export KUBECONFIG={kubeconfig} PATH={BIN}:$PATH
  kubectl -n statecar-system get pods
  helm -n statecar-system upgrade statecar charts/statecar -f {values} --set replicaCount=2

Pods get addresses on {SUBNET} (reachable from this machine); there is no cluster DNS and no
kube-proxy, so point components at pod IPs. Images: `imagePullPolicy: Never`, {ref}.
Tear down everything with `make cluster-down`.""")


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "up":
        if "--chart" in argv:
            up_with_chart()
        else:
            print(up())
        return 0
    if cmd == "down":
        down()
        return 0
    if cmd == "status":
        return status()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
