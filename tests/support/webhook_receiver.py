"""A real HTTP webhook receiver whose availability a test switches: refusing connections (not
listening), answering 503, hanging until released, or up (200). Every request is checked the
way a receiver should (sinks/webhook_verify.py: signature, timestamp, dedupe by webhook-id)
and recorded as a `Hit`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Literal

import orjson
from aiohttp import web

from meterguard.sinks.webhook_verify import SeenIds, VerificationError, WebhookVerifier
from meterguard.streams.tools.embedded import free_port

Mode = Literal["refuse", "503", "hang", "up"]


@dataclass(frozen=True)
class Hit:
    at: float  # monotonic
    alert_id: str
    identity: str
    event_time: str
    status: int  # what the receiver answered
    first: bool  # the first time its webhook-id was seen (SeenIds)


class SwitchableReceiver:
    """Starts in `mode`; `switch` changes it (the port stays the same throughout)."""

    def __init__(self, secret: str, path: str = "/siem", mode: Mode = "refuse") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.path = path
        self.hits: list[Hit] = []
        self.unverified = 0  # requests whose signature or timestamp did not verify (401)
        self.released = asyncio.Event()  # ends the hang of "hang" requests (answered 503)
        self._verifier = WebhookVerifier(secret)
        self._seen = SeenIds()
        self._mode: Mode = "refuse"
        self._runner: web.AppRunner | None = None
        self._initial = mode

    @property
    def mode(self) -> Mode:
        return self._mode

    async def __aenter__(self) -> SwitchableReceiver:
        await self.switch(self._initial)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released.set()
        await self._close()

    async def switch(self, mode: Mode) -> None:
        if mode == "refuse":
            await self._close()
        elif self._runner is None:
            app = web.Application()
            app.router.add_post(self.path, self._handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._mode = mode

    async def _close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            delivery = self._verifier.verify(body, request.headers)
        except VerificationError:
            self.unverified += 1
            return web.Response(status=401, text="bad signature")
        alert = orjson.loads(delivery.body)["data"]
        assert delivery.webhook_id == f"msg_{alert['alert_id']}"
        if self._mode == "hang":
            await self.released.wait()
        status = 200 if self._mode == "up" else 503
        first = self._seen.first(delivery) if status == 200 else True
        self.hits.append(
            Hit(
                time.monotonic(),
                alert["alert_id"],
                alert["identity"],
                alert["event_time"],
                status,
                first,
            )
        )
        return web.Response(status=status, text="ok" if status == 200 else "down")

    def answered(self, status: int) -> list[Hit]:
        return [h for h in self.hits if h.status == status]
