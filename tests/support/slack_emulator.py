"""A local Slack Web API for tests: `chat.postMessage` and `chat.update` on a free port.

slack-sdk talks aiohttp, so a real local server (not a mock transport) stands in for Slack.
It records every call, keeps the channel's messages (top level and threads), and answers
the next calls of a method with scripted failures when told to (`fail_next`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from meterguard.streams.tools.embedded import free_port


@dataclass
class Call:
    method: str
    body: dict[str, Any]
    authorization: str


@dataclass
class Message:
    ts: str
    channel: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    edits: int = 0


@dataclass
class SlackEmulator:
    port: int = field(default_factory=free_port)
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)  # by ts, in posting order
    _failures: dict[str, list[tuple[int, dict[str, str], dict[str, Any]]]] = field(
        default_factory=dict
    )
    _runner: web.AppRunner | None = None
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def fail_next(
        self, method: str, status: int = 200, error: str | None = None, **headers: str
    ) -> None:
        body: dict[str, Any] = {"ok": False, "error": error or "ratelimited"}
        self._failures.setdefault(method, []).append((status, headers, body))

    def top_level(self) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts is None]

    def replies(self, ts: str) -> list[Message]:
        return [m for m in self.messages.values() if m.thread_ts == ts]

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await request.json()
        self.calls.append(Call(method, body, request.headers.get("Authorization", "")))
        if self._failures.get(method):
            status, headers, answer = self._failures[method].pop(0)
            return web.json_response(answer, status=status, headers=headers)
        if method == "chat.postMessage":
            ts = f"1700000000.{next(self._ts):06d}"
            parent = body.get("thread_ts")
            if parent is not None and parent not in self.messages:
                return web.json_response({"ok": False, "error": "thread_not_found"})
            self.messages[ts] = Message(
                ts, body["channel"], body.get("text", ""), body.get("blocks", []), parent
            )
            return web.json_response({"ok": True, "channel": body["channel"], "ts": ts})
        if method == "chat.update":
            message = self.messages.get(body.get("ts", ""))
            if message is None:
                return web.json_response({"ok": False, "error": "message_not_found"})
            message.text, message.blocks = body.get("text", ""), body.get("blocks", [])
            message.edits += 1
            return web.json_response({"ok": True, "channel": body["channel"], "ts": message.ts})
        return web.json_response({"ok": False, "error": "unknown_method"}, status=404)

    async def start(self) -> SlackEmulator:
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
