"""A private redis-server for fault tests that stop, kill and restart it (never the session's
Redis): one fixed port and one data folder across restarts, append-only file on.

Persistence is the setting README "Recovering windows after Redis loses its data" asks of a
production Redis: `appendonly yes`, `appendfsync everysec`. Redis writes the AOF buffer to the
file before it replies to the clients of that event-loop turn (aof.c, flushAppendOnlyFile),
so a killed redis-server loses nothing it acknowledged: the page cache keeps it. A crash of
the host loses what was not fsynced yet: about the last second (up to two while a slow
fsync holds the write back).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from meterguard.streams.tools.embedded import free_port
from meterguard.streams.tools.embedded.redis_server import EmbeddedRedis


class PersistentRedis(EmbeddedRedis):
    """redis-server (not Valkey: the facts above are redis-server 7's) with its AOF in
    `workdir`, on one port for its whole life, so clients find it again after a restart."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(port=free_port(), workdir=workdir, prefer="redis-server")

    def _command(self, port: int, workdir: Path) -> list[str]:
        return [
            self._binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",  # the AOF alone: one persistence path to reason about
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(workdir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def shut_down(self) -> None:
        """SIGTERM: redis-server flushes its AOF and exits (a restart, an operator's stop)."""
        self.stop(grace=10.0)

    def crash(self) -> None:
        """SIGKILL: no shutdown of any kind (an OOM kill, a container killed)."""
        assert self.pid is not None, "not running"
        os.kill(self.pid, signal.SIGKILL)
        self.stop(grace=10.0)  # reaps it; the folder (a given workdir) is kept
