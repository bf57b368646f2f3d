"""Private Redis servers for the Cluster, TLS and ACL tests (issue 14, scenarios 8 and 9).

    LocalRedisCluster   three `redis-server --cluster-enabled yes` on free ports, joined by
                        `redis-cli --cluster create ... --cluster-replicas 0`, ready once
                        every node reports cluster_state:ok and all 16,384 slots
    TlsRedis            redis-server with a TLS port (client certificates required) next to a
                        plain one (the readiness probe's)
    make_tls_files      a CA, a server and a client certificate, and a CA that signed neither
                        (openssl CLI, 1 day)
    add_acl_user        an ACL user with a password; the default user turned off

Each server is a child of this process (streams/tools/embedded), stopped on exit.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import redis

from meterguard.streams.tools.embedded import EmbeddedRedis, free_port

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
READY_TIMEOUT_S = 60.0  # generous: a shared 2-core box; the join takes ~1-2 s when idle


class ClusterNode(EmbeddedRedis):
    """One cluster-enabled redis-server; its cluster bus on a free port of its own."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir=workdir, prefer="redis-server")
        self.bus_port = free_port()

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            *super()._command(port, workdir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / f"nodes-{port}.conf"),
            "--cluster-port", str(self.bus_port),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip


class LocalRedisCluster:
    """Three primaries, no replicas, every slot assigned; `url` names the first node."""

    def __init__(self, workdir: Path, nodes: int = 3) -> None:
        self.nodes = [ClusterNode(workdir / f"node{i}") for i in range(nodes)]

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.nodes[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def __enter__(self) -> LocalRedisCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{HOST}:{p}" for p in self.ports]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=READY_TIMEOUT_S,
            )  # fmt: skip
            self._wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _wait_ok(self) -> None:
        """Until every node reports the cluster ok with every slot assigned (polled)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(self._node_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster {self.ports} not ok after {READY_TIMEOUT_S:g}s")
            time.sleep(0.1)  # polling interval of a readiness check

    @staticmethod
    def _node_ok(port: int) -> bool:
        with redis.Redis(host=HOST, port=port) as client:
            info = client.cluster("info")
        return bool(
            info.get("cluster_state") == "ok"
            and int(info.get("cluster_slots_ok", 0)) == CLUSTER_SLOTS
            and int(info.get("cluster_known_nodes", 0)) >= 3
        )

    def flushall(self) -> None:
        for port in self.ports:
            with redis.Redis(host=HOST, port=port) as client:
                client.flushall()

    def keyslot(self, key: str) -> int:
        with redis.Redis(host=HOST, port=self.ports[0]) as client:
            return int(client.cluster("keyslot", key))


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verifying the server with it fails


def make_tls_files(folder: Path) -> TlsFiles:
    """Certificates for 127.0.0.1 (subjectAltName IP) signed by a fresh CA, with openssl."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        run("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
            "-days", "1", "-subj", f"/CN=meterguard test {ca}")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=meterguard test {name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip
    return TlsFiles(
        folder / "ca.crt", folder / "server.crt", folder / "server.key",
        folder / "client.crt", folder / "client.key", folder / "other-ca.crt",
    )  # fmt: skip


class TlsRedis(EmbeddedRedis):
    """redis-server serving TLS on `tls_port` (a client certificate signed by the CA
    required) and plain TCP on `port`, which only the readiness probe uses."""

    def __init__(self, workdir: Path, tls: TlsFiles) -> None:
        super().__init__(workdir=workdir, prefer="redis-server")
        self.tls = tls
        self.tls_port = free_port()

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            *super()._command(port, workdir),
            "--tls-port", str(self.tls_port),
            "--tls-cert-file", str(self.tls.server_cert),
            "--tls-key-file", str(self.tls.server_key),
            "--tls-ca-cert-file", str(self.tls.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip

    @property
    def tls_url(self) -> str:
        return f"rediss://{HOST}:{self.tls_port}/0"


def add_acl_user(url: str, user: str, password: str) -> None:
    """`user` may do everything with `password`; the default (no password) user is off."""
    with redis.Redis.from_url(url) as client:
        client.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
            commands=["+@all"],
        )  # fmt: skip
        client.acl_setuser("default", enabled=False)
