"""A real Kubernetes control plane as local processes, for the e2e tier.

This module owns the e2e tier's cluster: it runs ``scripts/k8s-tools.sh`` to get (build once,
then reuse from the cache) ``etcd``, ``kube-apiserver``, ``kubectl`` and ``helm``, then starts
etcd and kube-apiserver on loopback (random free ports, a temporary data directory) with:

* a serving certificate signed by a throwaway CA (``ca_file``), made with ``cryptography``;
* a static admin bearer token (``token``) in group ``system:masters``;
* ``--authorization-mode=Node,RBAC``, so anything but the admin is subject to RBAC;
* a service-account signing key and issuer, so ServiceAccount tokens can be minted through
  the TokenRequest API (``kubectl create token``);
* the default admission plugins (MutatingAdmissionWebhook and ValidatingAdmissionWebhook
  included); webhooks can be configured with ``clientConfig.url: https://127.0.0.1:PORT/...``.

There is no kubelet and no kube-controller-manager: pods are stored, never run, namespaces
stay ``Terminating`` once deleted, and no ``default`` ServiceAccount appears in a new namespace
by itself (the ServiceAccount admission plugin then refuses pods) -- use
:meth:`LocalCluster.create_namespace`, which creates it.

Usage (pytest tests get one for the session from the ``cluster`` fixture in conftest.py)::

    from tests.e2e.localcluster import LocalCluster, ensure_tools

    with LocalCluster(ensure_tools()) as cluster:
        cluster.kubectl("get", "namespaces")
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.support import processes
from tests.support.ports import free_port

__all__ = [
    "REPO_ROOT",
    "ClusterStartError",
    "KubectlError",
    "LocalCluster",
    "ensure_tools",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_SCRIPT = REPO_ROOT / "scripts" / "k8s-tools.sh"

#: The in-cluster issuer / audience of ServiceAccount tokens minted by this cluster.
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
ADMIN_USER = "statecar-e2e-admin"

_LOG_TAIL_LINES = 60


class ClusterStartError(RuntimeError):
    """etcd or kube-apiserver did not come up (the message carries the log tail)."""


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited non-zero; unlike its base class, the message shows kubectl's stderr."""

    def __str__(self) -> str:
        stderr = self.stderr if isinstance(self.stderr, str) else repr(self.stderr)
        args = " ".join(str(a) for a in self.cmd[2:]) if isinstance(self.cmd, list) else self.cmd
        return f"kubectl {args} exited with {self.returncode}: {stderr.strip()}"


def ensure_tools(*, timeout: float = 3600.0) -> Path:
    """Run ``scripts/k8s-tools.sh`` (builds on first use, prints progress to stderr).

    Returns the directory holding ``etcd``, ``kube-apiserver``, ``kubectl`` and ``helm``.
    """
    proc = subprocess.run(
        ["bash", str(TOOLS_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=None,  # progress goes straight to our stderr
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{TOOLS_SCRIPT} failed with exit code {proc.returncode}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{TOOLS_SCRIPT} printed no bin directory")
    bin_dir = Path(lines[-1].strip())
    for name in ("etcd", "kube-apiserver", "kubectl", "helm"):
        if not os.access(bin_dir / name, os.X_OK):
            raise RuntimeError(f"{TOOLS_SCRIPT} left no executable {bin_dir / name}")
    return bin_dir


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)


def _make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """Write a CA and a serving cert/key for loopback; return (ca, cert, key) paths."""
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "statecar-e2e-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
        x509.IPAddress(
            ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE)[1]
        ),  # the kubernetes Service
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    ca_file, cert_file, key_file = (
        directory / "ca.crt",
        directory / "apiserver.crt",
        directory / "apiserver.key",
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(key_file, _pem_key(key))
    return ca_file, cert_file, key_file


def _die_with_parent() -> None:
    """preexec_fn: have Linux send SIGTERM to the child if the test process dies."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    no_proxy = ",".join(
        part for part in (env.get("NO_PROXY", ""), "127.0.0.1,localhost,::1") if part
    )
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


class LocalCluster:
    """etcd + kube-apiserver on loopback; a context manager (``start`` / ``close``).

    Attributes are set at construction (ports are chosen then) so they can be read
    before :meth:`start`; the servers exist only between :meth:`start` and :meth:`close`.
    """

    url: str
    ca_file: Path
    token: str
    kubeconfig: Path
    bin_dir: Path
    workdir: Path
    etcd_url: str

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        ready_timeout: float = 120.0,
        extra_apiserver_args: Sequence[str] = (),
        keep_workdir: bool | None = None,
    ) -> None:
        self.bin_dir = bin_dir if bin_dir is not None else ensure_tools()
        self.ready_timeout = ready_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.keep_workdir = (
            keep_workdir
            if keep_workdir is not None
            else os.environ.get("STATECAR_E2E_KEEP", "") not in ("", "0")
        )
        self.workdir = Path(tempfile.mkdtemp(prefix="statecar-e2e-cluster-"))
        self.port = free_port()
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.token = secrets.token_urlsafe(32)
        self.ca_file = self.workdir / "pki" / "ca.crt"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.etcd_log = self.workdir / "etcd.log"
        self.apiserver_log = self.workdir / "kube-apiserver.log"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> LocalCluster:
        if self._apiserver is not None:
            return self
        try:
            self._write_files()
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self.write_kubeconfig(self.kubeconfig, self.token, user=ADMIN_USER)
        except ClusterStartError:
            self.keep_workdir = True  # the logs named in the message stay readable
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, then SIGKILL); remove the workdir.

        The workdir (logs, etcd data, PKI) is kept if ``keep_workdir`` (or the environment
        variable ``STATECAR_E2E_KEEP=1``) is set, or if startup failed.
        """
        for attr in ("_apiserver", "_etcd"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is not None:
                processes.stop(proc)
                setattr(self, attr, None)
        for handle in self._logs:
            handle.close()
        self._logs.clear()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    # -- setup -------------------------------------------------------------------------

    def _write_files(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca_file, self._serving_cert, self._serving_key = _make_pki(pki)

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._sa_key = pki / "sa.key"
        self._sa_pub = pki / "sa.pub"
        _write_private(self._sa_key, _pem_key(sa_key))
        self._sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        self._token_file = pki / "tokens.csv"
        _write_private(
            self._token_file, f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
        )

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        handle = log.open("ab")
        self._logs.append(handle)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=_child_env(),
            preexec_fn=_die_with_parent,
        )

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        argv = [
            str(self.bin_dir / "etcd"),
            "--name=statecar-e2e",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=statecar-e2e={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # a throwaway test store: durability is not wanted
            "--log-level=warn",
        ]
        self._etcd = self._spawn(argv, self.etcd_log)
        deadline = time.monotonic() + 30.0
        while True:
            if self._etcd.poll() is not None:
                raise ClusterStartError(
                    f"etcd exited with code {self._etcd.returncode}; "
                    f"last lines of {self.etcd_log}:\n{_tail(self.etcd_log)}"
                )
            try:
                with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"etcd not healthy at {self.etcd_url} after 30s; "
                    f"last lines of {self.etcd_log}:\n{_tail(self.etcd_log)}"
                )
            time.sleep(0.2)

    def _start_apiserver(self) -> None:
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self._serving_cert}",
            f"--tls-private-key-file={self._serving_key}",
            f"--token-auth-file={self._token_file}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self._sa_pub}",
            f"--service-account-signing-key-file={self._sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The endpoints of the "kubernetes" Service may not be a loopback address, and
            # there is nothing in-cluster to reach it anyway.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.extra_apiserver_args,
        ]
        self._apiserver = self._spawn(argv, self.apiserver_log)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _wait_ready(self) -> None:
        assert self._apiserver is not None
        context = self._ssl_context()
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer yet"
        while True:
            if self._apiserver.poll() is not None:
                raise ClusterStartError(
                    f"kube-apiserver exited with code {self._apiserver.returncode}; "
                    f"last lines of {self.apiserver_log}:\n{_tail(self.apiserver_log)}"
                )
            request = urllib.request.Request(
                f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"}
            )
            try:
                with urllib.request.urlopen(request, timeout=5, context=context) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-2000:]}"
            except (OSError, ssl.SSLError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"kube-apiserver not ready at {self.url}/readyz after "
                    f"{self.ready_timeout:.0f}s (last: {last}); "
                    f"last lines of {self.apiserver_log}:\n{_tail(self.apiserver_log)}"
                )
            time.sleep(0.5)

    # -- helpers ------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, token: str, *, user: str = "user") -> Path:
        """Write a kubeconfig for this cluster that authenticates with ``token``.

        Use it to run a program as a ServiceAccount (token from ``kubectl create token``).
        """
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "statecar-e2e",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.ca_file),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {
                    "name": f"statecar-e2e-{user}",
                    "context": {"cluster": "statecar-e2e", "user": user, "namespace": "default"},
                }
            ],
            "current-context": f"statecar-e2e-{user}",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, yaml.safe_dump(config, sort_keys=False))
        return path

    def ca_data(self) -> str:
        """The CA bundle, base64-encoded (as ``caBundle`` / ``certificate-authority-data``)."""
        return base64.b64encode(self.ca_file.read_bytes()).decode()

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
        kubeconfig: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this cluster (admin unless ``kubeconfig`` is given).

        With ``check`` (the default) a non-zero exit raises ``CalledProcessError`` whose
        message includes kubectl's stderr.
        """
        child_env = _child_env()
        if env:
            child_env.update(env)
        argv = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            *args,
        ]
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=child_env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, argv, output=proc.stdout, stderr=proc.stderr)
        return proc

    def apply(self, manifest: str | Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
        """``kubectl apply -f -`` a YAML string or object(s); returns kubectl's stdout."""
        if isinstance(manifest, str):
            text = manifest
        elif isinstance(manifest, Mapping):
            text = yaml.safe_dump(dict(manifest), sort_keys=False)
        else:
            text = yaml.safe_dump_all([dict(m) for m in manifest], sort_keys=False)
        return self.kubectl("apply", "-f", "-", input=text).stdout

    def create_namespace(self, name: str) -> None:
        """Create a namespace and its ``default`` ServiceAccount (no controller-manager here)."""
        self.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": name},
                },
            ]
        )
