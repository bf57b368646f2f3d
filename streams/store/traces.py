"""Traces' call trees, for the agent-chain detector and root-caller attribution: where each
traced call sits in its trace, and whose call started the chain that paid for it.

Keys:

    {prefix}:trace:{<trace_id>}   hash: span_id -> "parent<tab>identity", "#<span_id>" -> child
                                  count, "$" -> the trace's cost, "w<tab><span_id>" -> the spans
                                  (and their usage) whose chains wait for that missing ancestor
                                  (TRACE_TTL_S after its last span)
    {prefix}:trace:{<trace_id>}:credits  hash: span_id -> credit not applied yet (driven.py)

Scripts: trace.lua (links one trace's new spans, describes each span's place, credits spans
whose chain now reaches the root), driven.lua (adds credits to the root's `driven` roll-up).

Root-caller attribution (store/driven.py has the rule, the keys it writes and the read API):
`link` credits every span to its trace's root identity once its chain is known, whatever
order the spans arrive in and however often; `driven(identity, first_hour, last_hour)` reads
the cost an identity drove per event-time hour. A chain that never reaches a root span within
TRACE_TTL_S (its root span never metered, or arriving more than an hour after the rest) is
never credited.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from meterguard.detectors.features import MinuteWindow
from meterguard.streams.store.driven import Credit, Driven, parse_credits
from meterguard.streams.store.keys import (
    SCAN_COUNT,
    KeyLayout,
    StoreConfig,
    glob_escape,
    load_script,
    text,
)

TRACE_TTL_S = 3600  # a trace's call tree is kept this long after its last span
MAX_TRACE_HOPS = 64
# Spans linked per trace: a bound on one call tree's memory (about 60 B a span: 10,000 spans
# are ~600 KB), not a volume of traffic. A trace that grows past it (an agent looping for an
# hour) has been scored deep and wide long before; its later spans are still described from
# the tree so far, but not linked or credited to the root (trace.lua).
MAX_TRACE_SPANS = 10_000


@dataclass(frozen=True)
class SpanLink:
    """One traced call as the trace store saw it (agent-chain detector, root attribution)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    identity: str
    cost_nano_usd: int = 0
    hour: int = 0  # epoch hour of its event time: the hour its root is credited in
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    errors: int = 0

    @property
    def row(self) -> str:
        """Its usage as a packed roll-up row: one call."""
        return (
            f"1,{self.input_tokens},{self.output_tokens},{self.cached_tokens},"
            f"{self.cost_nano_usd},{self.errors}"
        )


@dataclass(frozen=True)
class SpanPlace:
    depth: int  # hops from the root span (as far as the parents are known yet)
    cycle: bool  # the identity already appears among the span's ancestors
    root: str | None  # identity of the trace's root span, once the chain reaches it
    fanout: int  # children of the span's parent so far
    trace_cost_nano_usd: int = 0  # the whole trace's cost so far


class Traces:
    def __init__(
        self, client: aioredis.Redis, keys: KeyLayout, config: StoreConfig | None = None
    ) -> None:
        self._redis = client
        self._keys = keys
        self._config = config if config is not None else StoreConfig(prefix=keys.prefix)
        self._trace = load_script(client, "trace.lua")
        self.credited = Driven(client, self._config, keys)

    def credits_key(self, trace_id: str) -> str:
        return f"{self._keys.trace_key(trace_id)}:credits"

    async def link(self, spans: Sequence[SpanLink]) -> list[SpanPlace]:
        """Add spans to their traces' call trees and return each span's depth, cycle flag,
        root and parent fan-out, in input order; credit every span whose chain now reaches
        its root to the root identity, exactly once (store/driven.py)."""
        places, credits = await self.link_spans(spans)
        await self.settle(credits)
        return places

    async def link_spans(self, spans: Sequence[SpanLink]) -> tuple[list[SpanPlace], list[Credit]]:
        """trace.lua alone (one script per trace, one round trip): the spans' places and
        every credit waiting in their traces, this call's and any a crash left."""
        by_trace: dict[str, list[int]] = {}
        for i, span in enumerate(spans):
            by_trace.setdefault(span.trace_id, []).append(i)
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, indices in by_trace.items():
                packed = "".join(
                    f"{spans[i].span_id}\t{spans[i].parent_span_id or ''}\t{spans[i].identity}"
                    f"\t{spans[i].cost_nano_usd}\t{spans[i].hour}\t{spans[i].row}\n"
                    for i in indices
                )
                args: list[str | int] = [
                    TRACE_TTL_S,
                    MAX_TRACE_HOPS,
                    packed,
                    self._config.ttl_s,
                    MAX_TRACE_SPANS,
                ]
                keys = [self._keys.trace_key(trace_id), self.credits_key(trace_id)]
                await self._trace(keys=keys, args=args, client=pipe)
            replies = await pipe.execute()
        places: list[SpanPlace | None] = [None] * len(spans)
        credits: list[Credit] = []
        for (trace_id, indices), (lines, waiting) in zip(by_trace.items(), replies, strict=True):
            for i, line in zip(indices, text(lines).splitlines(), strict=True):
                depth, cycle, root, fanout, cost = line.split("\t")
                places[i] = SpanPlace(
                    int(depth), cycle == "1", root or None, int(fanout), int(cost)
                )
            credits += parse_credits(trace_id, text(waiting))
        placed = [p if p is not None else SpanPlace(0, False, None, 0) for p in places]
        return placed, credits

    async def settle(self, credits: Sequence[Credit]) -> int:
        """Apply credits to their roots (each at most once), then delete them from their
        traces' waiting credits. -> how many were new to their roots."""
        if not credits:
            return 0
        new = await self.credited.apply(credits)
        by_trace: dict[str, list[str]] = defaultdict(list)
        for c in credits:
            by_trace[c.trace_id].append(c.span_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            for trace_id, span_ids in by_trace.items():
                pipe.hdel(self.credits_key(trace_id), *span_ids)
            await pipe.execute()
        return new

    async def sweep(self) -> int:
        """Apply the credits crashed workers left in traces no batch touches again (a SCAN
        of the namespace: run at start, not per batch). -> how many were new."""
        pattern = f"{glob_escape(self._keys.prefix)}:trace:*:credits"
        head = len(f"{self._keys.prefix}:trace:{{")
        credits: list[Credit] = []
        async for key in self._redis.scan_iter(match=pattern, count=SCAN_COUNT):
            name = text(key)
            if not name.endswith("}:credits"):
                continue
            trace_id = name[head : -len("}:credits")]
            waiting = await self._redis.hgetall(name)
            lines = "".join(f"{text(s)}\t{text(c)}\n" for s, c in waiting.items())
            credits += parse_credits(trace_id, lines)
        return await self.settle(credits)

    async def driven(
        self, identity: str, first_hour: int | None = None, last_hour: int | None = None
    ) -> dict[int, MinuteWindow]:
        """The cost `identity` drove (other identities' spans in chains it started) per
        event-time hour in [first_hour, last_hour] (epoch hours, both optional)."""
        return await self.credited.hours(identity, first_hour, last_hour)

    async def driven_identities(self) -> list[str]:
        """Every identity credited with cost driven so far."""
        return await self.credited.roots()
