"""The live throttle feed behind `GET /api/throttles/stream` (Server-Sent Events).

Every change of a gateway key is PUBLISHed by the Redis scripts that make it
(streams/store/apply_throttle.lua, operator_release.lua), so any worker sees every identity's
changes, whichever worker made them. One pub/sub connection per worker process fans out to
the connected SSE clients; a client that cannot keep up, or a lost Redis connection, ends
its stream: the client reconnects and resyncs from the snapshot that starts every stream
(commands are versioned, so replaying one is harmless).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
import redis.exceptions

log = logging.getLogger("meterguard.feed")

CLOSED = None  # sentinel on a subscriber queue: the stream ends, the client resyncs


def format_sse(event: str, data: str, event_id: str | int | None = None) -> bytes:
    """One Server-Sent Event; multi-line data becomes several `data:` lines (per the spec)."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


class ThrottleFeed:
    def __init__(self, client: aioredis.Redis, channel: str, max_pending: int = 1000) -> None:
        self.client = client
        self.channel = channel
        self.max_pending = max_pending
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self) -> asyncio.Queue[bytes | None]:
        """A queue of ready SSE frames, one per published command. Subscribed in Redis
        before this returns, so a snapshot read afterwards misses nothing."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.max_pending)
        self._subscribers.add(queue)
        if self._listener is None or self._listener.done():
            self._subscribed.clear()
            self._listener = asyncio.create_task(self._listen(), name="throttle-feed")
        await self._subscribed.wait()
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(queue)

    async def close(self) -> None:
        """End every stream (worker shutdown) and the pub/sub connection."""
        self._end_all()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self) -> None:
        delay = 0.2
        while self._subscribers:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed.set()
                delay = 0.2
                while self._subscribers:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._fan_out(message["data"])
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                # Changes during the gap would be lost: end the streams so clients resync.
                log.warning("throttle feed lost Redis (%s); clients will resync", exc)
                self._end_all()
                self._subscribed.set()  # let waiting subscribers see their stream end
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py's PubSub.aclose is unannotated before 8.2 and annotated since:
                    # called through Any, strict mypy passes with either.
                    await cast(Any, pubsub).aclose()

    def _fan_out(self, payload: bytes) -> None:
        # One SSE frame per change, whatever the number of clients.
        version = orjson.loads(payload).get("version")
        frame = format_sse("command", payload.decode(), version)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                log.warning(
                    "an SSE client fell %d changes behind; ending its stream", queue.qsize()
                )
                self._end(queue)

    def _end_all(self) -> None:
        for queue in list(self._subscribers):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(queue)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(CLOSED)
