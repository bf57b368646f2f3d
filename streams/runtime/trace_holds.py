"""The worker's held OTLP spans: the rules of streams/decoding/trace_attribution.py on state in
Redis (streams/store/trace_agents.py), shared by every worker and kept across restarts.

The decode agent hands over each batch's links and held spans (`admit`) and a timer settles
what waited past its hold (`due`, the wall clock). Settled spans are returned with the
waiting entries they came from; the caller produces them, flushes, and only then `release`s
those entries: a crash in between settles them again, under the identity already decided
(the first decision of an event stands), so the downstream dedupe sees one event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.trace_attribution import (
    HeldSpan,
    SpanLink,
    settle,
    walk,
)
from meterguard.streams.store.trace_agents import LinkRow, TraceAgents, TraceView
from meterguard.timeutil import to_ms


@dataclass
class Settled:
    items: list[MeteringEvent | DeadLetter] = field(default_factory=list)
    waited: list[tuple[str, str]] = field(default_factory=list)  # (trace, event) to release


class TraceHolds:
    def __init__(self, store: TraceAgents, hold: timedelta) -> None:
        self.store = store
        self.hold = hold

    async def admit(
        self, links: Sequence[SpanLink], held: Sequence[HeldSpan], now: datetime
    ) -> Settled:
        rows = [LinkRow(x.trace_id, x.span_id, x.parent_span_id, x.agent) for x in links]
        views = await self.store.record(rows, (span.trace_id for span in held))
        out = Settled()
        choices: list[tuple[HeldSpan, str, tuple[str, str] | None]] = []
        park: list[tuple[str, str, int, bytes]] = []
        deadline = to_ms(now + self.hold)
        for span in _unique(held):
            view = views[span.trace_id]
            event_id = span.event.event_id
            if event_id in view.decided:
                out.items.append(span.event.model_copy(update={"identity": view.decided[event_id]}))
                continue
            if event_id in view.waiting:
                continue  # a redelivery of a span still waiting
            found = walk(view.links, span.parent_span_id)
            settled = settle(span, found, expired=self.hold <= timedelta(0))
            if settled is None:
                park.append((span.trace_id, event_id, deadline, span.to_json()))
            elif isinstance(settled, DeadLetter):
                out.items.append(settled)
            else:
                choices.append((span, settled.identity, None))
        # Spans that waited on these traces, settled by the links that just arrived.
        for trace_id in sorted({link.trace_id for link in links}):
            self._waiting(views[trace_id], trace_id, None, choices, out)
        await self.store.park(park)
        await self._decide(choices, out)
        return out

    async def due(self, now: datetime) -> Settled:
        """Settle the spans whose hold ended: their ancestor's agent if it came meanwhile,
        else the fallback (or the dead letter that says which attribute to set)."""
        out = Settled()
        trace_ids = await self.store.due(to_ms(now))
        if not trace_ids:
            return out
        views = await self.store.record([], trace_ids)
        choices: list[tuple[HeldSpan, str, tuple[str, str] | None]] = []
        empty = [t for t in trace_ids if not views[t].waiting]
        for trace_id in trace_ids:
            self._waiting(views[trace_id], trace_id, to_ms(now), choices, out)
        await self.store.forget(empty)
        await self._decide(choices, out)
        return out

    async def release(self, settled: Settled) -> None:
        await self.store.release(settled.waited)

    def _waiting(
        self,
        view: TraceView,
        trace_id: str,
        now_ms: int | None,
        choices: list[tuple[HeldSpan, str, tuple[str, str] | None]],
        out: Settled,
    ) -> None:
        for event_id, (deadline_ms, payload) in sorted(view.waiting.items()):
            span = HeldSpan.from_json(payload)
            expired = now_ms is not None and deadline_ms <= now_ms
            settled = settle(span, walk(view.links, span.parent_span_id), expired)
            if settled is None:
                continue
            if isinstance(settled, DeadLetter):
                out.items.append(settled)
                out.waited.append((trace_id, event_id))
            else:
                choices.append((span, settled.identity, (trace_id, event_id)))

    async def _decide(
        self, choices: list[tuple[HeldSpan, str, tuple[str, str] | None]], out: Settled
    ) -> None:
        decided = await self.store.decide(
            [(span.trace_id, span.event.event_id, identity) for span, identity, _ in choices]
        )
        for (span, _, waited), identity in zip(choices, decided, strict=True):
            out.items.append(span.event.model_copy(update={"identity": identity}))
            if waited is not None:
                out.waited.append(waited)


def _unique(held: Sequence[HeldSpan]) -> list[HeldSpan]:
    """One held span per event id (an export may repeat a span)."""
    seen: dict[tuple[str, str], HeldSpan] = {}
    for span in held:
        seen.setdefault((span.trace_id, span.event.event_id), span)
    return list(seen.values())
