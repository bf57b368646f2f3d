"""A server as a child process in its own process group: start, readiness, stop, and the
hooks that stop it when this process exits or dies (shared by the Tansu and Redis servers)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"


class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be found, started or stopped."""


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it; a race is still possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Servers started by this process and not yet stopped; the atexit hook stops them.
_LIVE: set[ChildServer] = set()
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


class ChildServer:
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


def stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """Stop a child started in its own process group: SIGTERM to the group, SIGKILL after
    `grace_s` (so a shutdown never hangs on a child that does not stop)."""
    if proc.poll() is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
