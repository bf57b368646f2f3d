"""Traces' call trees, for the agent-chain detector: where each traced call sits in its trace.

Keys:

    {prefix}:trace:{<trace_id>}   hash: span_id -> "parent<tab>identity", "#<span_id>" -> child
                                  count, "$" -> the trace's cost (TRACE_TTL_S after its last
                                  span)

Script: trace.lua (links one trace's new spans and describes each span's place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from meterguard.streams.store.keys import KeyLayout, load_script, text

TRACE_TTL_S = 3600  # a trace's call tree is kept this long after its last span
MAX_TRACE_HOPS = 64


@dataclass(frozen=True)
class SpanLink:
    """One traced call as the trace store saw it (for the agent-chain detector)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    identity: str
    cost_nano_usd: int = 0


@dataclass(frozen=True)
class SpanPlace:
    depth: int  # hops from the root span (as far as the parents are known yet)
    cycle: bool  # the identity already appears among the span's ancestors
    root: str | None  # identity of the trace's root span, once the chain reaches it
    fanout: int  # children of the span's parent so far
    trace_cost_nano_usd: int = 0  # the whole trace's cost so far


class Traces:
    def __init__(self, client: aioredis.Redis, keys: KeyLayout) -> None:
        self._redis = client
        self._keys = keys
        self._trace = load_script(client, "trace.lua")

    async def link(self, spans: Sequence[SpanLink]) -> list[SpanPlace]:
        """Add spans to their traces' call trees (one script per trace, one round trip) and
        return each span's depth, cycle flag, root and parent fan-out, in input order."""
        by_trace: dict[str, list[int]] = {}
        for i, span in enumerate(spans):
            by_trace.setdefault(span.trace_id, []).append(i)
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, indices in by_trace.items():
                packed = "".join(
                    f"{spans[i].span_id}\t{spans[i].parent_span_id or ''}\t{spans[i].identity}"
                    f"\t{spans[i].cost_nano_usd}\n"
                    for i in indices
                )
                key = self._keys.trace_key(trace_id)
                args: list[str | int] = [TRACE_TTL_S, MAX_TRACE_HOPS, packed]
                await self._trace(keys=[key], args=args, client=pipe)
            replies = await pipe.execute()
        places: list[SpanPlace | None] = [None] * len(spans)
        for indices, reply in zip(by_trace.values(), replies, strict=True):
            lines = text(reply).splitlines()
            for i, line in zip(indices, lines, strict=True):
                depth, cycle, root, fanout, cost = line.split("\t")
                places[i] = SpanPlace(
                    int(depth), cycle == "1", root or None, int(fanout), int(cost)
                )
        return [p if p is not None else SpanPlace(0, False, None, 0) for p in places]
