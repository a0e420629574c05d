"""
Test helper (not a test module): a throwaway Redis Cluster of real `redis-server` processes.

`RedisCluster` starts 3 primaries and 3 replicas (by default) with `--cluster-enabled yes` on
free ports of 127.0.0.1 (the cluster bus too, through `--cluster-port`), forms the cluster with
`redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, waits until every node
reports `cluster_state:ok` and every replica is in sync, and stops every process on exit, each
by its own pid (`RedisProcess`). `failover(replica)` runs the coordinated `CLUSTER FAILOVER`
(Redis documents no write loss for it) and waits until the topology shows it.

Use from a test module::

    from tests.support.redis_cluster import RedisCluster, running_cluster
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from tests.support.ports import free_port
from tests.support.redis_server import RedisProcess, require_redis_server
from tests.support.require import require
from tests.support.tls_certs import Certs, redis_tls_args

_FORM_TIMEOUT = 30.0
#: Short, so that a killed primary is replaced within a few seconds (default 15 s).
NODE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class Node:
    """One line of `CLUSTER NODES`."""

    node_id: str
    port: int
    primary: bool
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]


def parse_nodes(text: str) -> list[Node]:
    nodes: list[Node] = []
    for line in text.strip().splitlines():
        fields = line.split()
        flags = fields[2].split(",")
        if "fail" in flags or "noaddr" in flags:
            continue
        port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
        ranges: list[tuple[int, int]] = []
        for part in fields[8:]:
            if part.startswith("["):
                continue  # a slot being migrated
            first, _, last = part.partition("-")
            ranges.append((int(first), int(last or first)))
        nodes.append(
            Node(
                fields[0],
                port,
                "master" in flags,
                None if fields[3] == "-" else fields[3],
                tuple(ranges),
            )
        )
    return nodes


class RedisCluster:
    host = "127.0.0.1"

    def __init__(self, primaries: int = 3, replicas: int = 1, certs: Certs | None = None) -> None:
        """With `certs`, every port is TLS only and clients must present a certificate
        (`--tls-auth-clients yes`); the cluster bus and replication use TLS too."""
        require_redis_server()
        self.cli = require("redis-cli", hint="apt-get install redis-tools")
        self.replicas_per_primary = replicas
        self.size = primaries * (1 + replicas)
        self.certs = certs
        self.processes: list[RedisProcess] = []

    def _create(self) -> None:
        """One process per node, each with its own client and bus port, all distinct: two
        calls of free_port() may hand out the same port, as it is free until someone binds."""
        ports: list[int] = []
        while len(ports) < 2 * self.size:
            port = free_port()
            if port not in ports:
                ports.append(port)
        certs = self.certs
        tls = (
            [*redis_tls_args(certs, "yes"), "--tls-cluster", "yes", "--tls-replication", "yes"]
            if certs
            else []
        )
        self.processes = []
        for index in range(self.size):
            process = RedisProcess(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    "--cluster-port",
                    str(ports[self.size + index]),
                    # Every acknowledged write also goes to the AOF: a restarted node keeps it.
                    "--appendonly",
                    "yes",
                    *tls,
                ],
                tls=certs is not None,
            )
            process.port = ports[index]
            self.processes.append(process)

    @property
    def seeds(self) -> str:
        """`redisHost` for a component: every node, comma-separated."""
        return ",".join(p.address for p in self.processes)

    def process(self, port: int) -> RedisProcess:
        return next(p for p in self.processes if p.port == port)

    def client(self, port: int) -> redis.Redis:
        if self.certs is None:
            return redis.Redis(host=self.host, port=port, socket_timeout=5)
        return redis.Redis(
            host=self.host,
            port=port,
            socket_timeout=5,
            ssl=True,
            ssl_ca_certs=self.certs.path("ca.pem"),
            ssl_certfile=self.certs.path("client.pem"),
            ssl_keyfile=self.certs.path("client-key.pem"),
        )

    def _cli_tls(self) -> list[str]:
        if self.certs is None:
            return []
        return [
            "--tls",
            "--cacert",
            self.certs.path("ca.pem"),
            "--cert",
            self.certs.path("client.pem"),
            "--key",
            self.certs.path("client-key.pem"),
        ]

    def nodes(self) -> list[Node]:
        for process in self.processes:
            if process.process is None:
                continue
            with contextlib.suppress(redis.RedisError), self.client(process.port) as conn:
                return parse_nodes(conn.execute_command("CLUSTER", "NODES").decode())
        raise RuntimeError("no cluster node answers CLUSTER NODES")

    def primaries(self) -> list[Node]:
        return [n for n in self.nodes() if n.primary and n.slots]

    def replica_of(self, primary: Node) -> Node:
        return next(n for n in self.nodes() if n.primary_id == primary.node_id)

    def owner(self, slot: int) -> Node:
        return next(n for n in self.primaries() if any(a <= slot <= b for a, b in n.slots))

    def start(self) -> None:
        # A port handed out by free_port() can be taken by another program before redis-server
        # binds it: then start again on fresh ports (at most 3 times).
        for attempt in range(3):
            self._create()
            try:
                for process in self.processes:
                    process.start()
                break
            except RuntimeError as exc:
                self.stop()
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
        subprocess.run(
            [
                self.cli,
                *self._cli_tls(),
                "--cluster",
                "create",
                *(p.address for p in self.processes),
                "--cluster-replicas",
                str(self.replicas_per_primary),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=_FORM_TIMEOUT,
        )
        self.wait_healthy()

    def wait_healthy(self, timeout: float = _FORM_TIMEOUT) -> None:
        """Every running node says cluster_state:ok, all slots served, every replica synced."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self._problems()
            if not problems:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster not healthy within {timeout} s: {problems}")
            time.sleep(0.1)

    def _problems(self) -> list[str]:
        problems: list[str] = []
        for process in self.processes:
            if process.process is None:
                continue
            try:
                with self.client(process.port) as conn:
                    info = conn.execute_command("CLUSTER", "INFO").decode()
                    replication = conn.info("replication")
            except redis.RedisError as exc:
                problems.append(f"{process.port}: {exc}")
                continue
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                problems.append(f"{process.port}: not ok")
            if replication.get("role") == "slave" and (
                replication.get("master_link_status") != "up"
                or replication.get("master_sync_in_progress")
            ):
                problems.append(f"{process.port}: replica not in sync")
        return problems

    def failover(self, replica: Node, timeout: float = 10.0) -> None:
        """The coordinated manual failover: the replica catches up with its primary, which stops
        taking writes meanwhile, then takes over (Redis docs, CLUSTER FAILOVER, no option)."""
        with self.client(replica.port) as conn:
            conn.execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        while True:
            with self.client(replica.port) as conn:
                if conn.info("replication").get("role") == "master":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {replica.port} not promoted within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            process.cleanup()


@contextlib.contextmanager
def running_cluster(
    primaries: int = 3, replicas: int = 1, certs: Certs | None = None
) -> Iterator[RedisCluster]:
    cluster = RedisCluster(primaries, replicas, certs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
