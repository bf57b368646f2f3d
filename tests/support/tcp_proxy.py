"""A TCP proxy in front of a broker, for the broker-outage scenario (tests/faults): every
client reaches the broker through it (the broker advertises the proxy's address), so cutting
the proxy is, to the clients, the broker going away: open connections reset, new ones
refused. Restoring it listens on the same port again; the broker's data is untouched (Tansu
keeps topics in memory only, so a real broker restart would lose them: INFRA-NOTES)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from meterguard.streams.tools.embedded import EmbeddedBroker
from meterguard.streams.tools.embedded.child import HOST
from meterguard.streams.tools.embedded.tansu import kafka_metadata

CHUNK = 1 << 16


class TcpProxy:
    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port, self.target_port = listen_port, target_port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted since the proxy was made

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, self.listen_port)

    async def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            transport = writer.transport
            transport.abort()  # RST, as a dying broker's kernel would
        self._links.clear()

    async def restore(self) -> None:
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        self._links -= {writer, up_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()


class ProxiedBroker(EmbeddedBroker):
    """Tansu advertising `advertised_port` (the proxy's) instead of its own listener."""

    def __init__(self, advertised_port: int, workdir: str | Path | None = None) -> None:
        super().__init__(workdir=workdir)
        self.advertised_port = advertised_port

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.advertised_port}"

    @property
    def url(self) -> str:
        return f"kafka://{HOST}:{self.advertised_port}"

    def _command(self, port: int, workdir: Path) -> list[str]:
        command = super()._command(port, workdir)
        at = command.index("--advertised-listener-url") + 1
        command[at] = f"tcp://{HOST}:{self.advertised_port}"
        return command

    def _probe(self, port: int) -> bool:
        try:
            brokers, cluster_id = kafka_metadata(HOST, port, timeout=0.5)
        except OSError:
            return False
        return cluster_id == self.cluster_id and (HOST, self.advertised_port) in brokers
