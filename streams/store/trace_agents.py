"""Held OTLP spans and their traces' links, shared by every worker's decode agent.

Keys (the logic that reads them: streams/runtime/trace_holds.py, on the pure rules of
streams/decoding/trace_attribution.py):

    {prefix}:tagents:{<trace_id>}  hash, TRACE_TTL_S after its last write:
                                   "s:<span_id>" -> "<parent span_id>\\t<agent>" (both may be ''),
                                   "p:<event_id>" -> "<deadline ms>\\t<held span JSON>" (waiting),
                                   "d:<event_id>" -> the identity its settlement decided
    {prefix}:tagents-due           zset: trace_id -> the earliest deadline of its waiting spans

The hash has its trace's hash tag and the zset is one key of its own: no command touches both
(Redis Cluster). A span is parked (HSET) before its trace is put on the due list, and the due
list drops a trace before re-reading what still waits, so no interleaving of two workers
leaves a waiting span off the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from meterguard.streams.store.keys import KeyLayout, text
from meterguard.streams.store.traces import TRACE_TTL_S


@dataclass
class TraceView:
    """What one trace's hash holds."""

    links: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    waiting: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # event_id -> (ms, span)
    decided: dict[str, str] = field(default_factory=dict)  # event_id -> identity


@dataclass(frozen=True)
class LinkRow:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    agent: str | None


class TraceAgents:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self._redis = client
        self._keys = keys

    def _key(self, trace_id: str) -> str:
        return f"{self._keys.prefix}:tagents:{{{trace_id}}}"

    @property
    def _due(self) -> str:
        return f"{self._keys.prefix}:tagents-due"

    async def record(self, links: Sequence[LinkRow], traces: Iterable[str]) -> dict[str, TraceView]:
        """Keep the links (the first writer of a span wins) and read every named trace,
        links included, in one round trip."""
        wanted = sorted({*traces, *(link.trace_id for link in links)})
        async with self._redis.pipeline(transaction=False) as pipe:
            for link in links:
                value = f"{link.parent_span_id or ''}\t{link.agent or ''}"
                pipe.hsetnx(self._key(link.trace_id), f"s:{link.span_id}", value)
            for trace_id in {link.trace_id for link in links}:
                pipe.expire(self._key(trace_id), TRACE_TTL_S)
            for trace_id in wanted:
                pipe.hgetall(self._key(trace_id))
            replies = await pipe.execute()
        views = replies[len(replies) - len(wanted) :]
        return {trace_id: _view(raw) for trace_id, raw in zip(wanted, views, strict=True)}

    async def park(self, spans: Sequence[tuple[str, str, int, bytes]]) -> None:
        """(trace_id, event_id, deadline ms, held span JSON): wait, and be on the due list."""
        if not spans:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, event_id, deadline_ms, payload in spans:
                key = self._key(trace_id)
                pipe.hset(key, f"p:{event_id}", str(deadline_ms).encode() + b"\t" + payload)
                pipe.expire(key, TRACE_TTL_S)
            await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, _, deadline_ms, _ in spans:
                # LT: keeps the earlier deadline of a trace already listed, adds a new one.
                pipe.zadd(self._due, {trace_id: deadline_ms}, lt=True)
            await pipe.execute()

    async def decide(self, choices: Sequence[tuple[str, str, str]]) -> list[str]:
        """(trace_id, event_id, identity) -> the identity that stands: the first decision of
        an event wins, so a redelivered or doubly released span keeps one identity."""
        if not choices:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, event_id, identity in choices:
                pipe.hsetnx(self._key(trace_id), f"d:{event_id}", identity)
                pipe.hget(self._key(trace_id), f"d:{event_id}")
            replies = await pipe.execute()
        return [text(reply) for reply in replies[1::2]]

    async def release(self, spans: Sequence[tuple[str, str]]) -> None:
        """(trace_id, event_id): no longer waiting (call after they were produced)."""
        if not spans:
            return
        traces = sorted({trace_id for trace_id, _ in spans})
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, event_id in spans:
                pipe.hdel(self._key(trace_id), f"p:{event_id}")
            pipe.zrem(self._due, *traces)
            for trace_id in traces:
                pipe.hgetall(self._key(trace_id))
            replies = await pipe.execute()
        left = {
            trace_id: min(ms for ms, _ in view.waiting.values())
            for trace_id, raw in zip(traces, replies[len(spans) + 1 :], strict=True)
            if (view := _view(raw)).waiting
        }
        if left:
            await self._redis.zadd(self._due, dict(left))

    async def due(self, now_ms: int, limit: int = 100) -> list[str]:
        """Traces with a span whose hold ended by now_ms, earliest first."""
        found = await self._redis.zrangebyscore(self._due, "-inf", now_ms, start=0, num=limit)
        return [text(trace_id) for trace_id in found if isinstance(trace_id, bytes | str)]

    async def forget(self, trace_ids: Sequence[str]) -> None:
        """Drop traces from the due list that hold nothing waiting (their hash expired)."""
        if trace_ids:
            await self._redis.zrem(self._due, *trace_ids)


def _view(raw: dict[bytes, bytes]) -> TraceView:
    view = TraceView()
    for name, value in raw.items():
        field_name = text(name)
        kind, _, ident = field_name.partition(":")
        if kind == "s":
            parent, _, agent = text(value).partition("\t")
            view.links[ident] = (parent or None, agent or None)
        elif kind == "p":
            deadline, _, payload = value.partition(b"\t")
            view.waiting[ident] = (int(deadline), payload)
        elif kind == "d":
            view.decided[ident] = text(value)
    return view
