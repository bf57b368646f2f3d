"""A trace's agent identity across exports (pure): spans whose agent is named by a span that
has not been exported yet wait for it, for a bounded time.

OpenTelemetry's batch span processor exports a span when it *ends*. An agent's
`invoke_agent` span, which names the agent (`gen_ai.agent.name`), ends after every model
call it made, so a long run's `chat` spans reach meterguard first, in other messages. Read
alone they name only the resource (`service.name`): the identity would flip from the agent
to the service. So the decoder marks such a span *held* (HeldSpan: the identity path it
matched is not one a span inherits, and its chain of parents leaves the export), and every
export leaves its spans' links (span -> parent, the agent the span itself names).

Held spans are settled as soon as their chain of parents is known:
- an ancestor names an agent: the span is that agent's;
- the chain reaches the trace's root and nothing names one: the fallback (service.name);
- neither within `hold` of the clock: the fallback, or, when there is none, the dead letter
  that says which attribute to set.

Once settled, a span's identity is *decided* and kept: a redelivered export of it gets the
same identity, so the downstream dedupe (identity + event_id) still sees one event.

`TraceAttribution` keeps this state in memory (replay, reconcile: one process, its clock the
data's); streams/store/trace_agents.py keeps the same state in Redis for workers, with the
same `walk` and `settle` rules.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson

from meterguard.models import DeadLetter, MeteringEvent

MAX_HOPS = 64  # a parent chain longer than any real trace (and a guard against cycles)
# How long a trace's links are kept after its last span: the store's TRACE_TTL_S too.
TRACE_TTL = timedelta(hours=1)
Links = Mapping[str, tuple[str | None, str | None]]  # span_id -> (parent span_id, agent)


@dataclass(frozen=True)
class SpanLink:
    """One exported span's place in its trace: who its parent is, which agent it names."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    agent: str | None  # the identity this span itself names by an inheritable attribute


@dataclass(frozen=True)
class HeldSpan:
    """A decoded span whose identity waits for an ancestor exported later."""

    event: MeteringEvent  # identity: the fallback (meaningless when `unnamed` is set)
    trace_id: str
    parent_span_id: str  # the first ancestor its own export did not hold
    unnamed: DeadLetter | None = None  # no fallback: what it becomes if no ancestor names it

    def to_json(self) -> bytes:
        unnamed = self.unnamed.model_dump_json() if self.unnamed is not None else "null"
        return (
            b'{"event":' + self.event.to_json() + b',"trace_id":"' + self.trace_id.encode()
            + b'","parent_span_id":"' + self.parent_span_id.encode() + b'","unnamed":'
            + unnamed.encode() + b"}"
        )  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes) -> HeldSpan:
        doc = orjson.loads(raw)
        letter = doc.get("unnamed")
        return cls(
            MeteringEvent.model_validate(doc["event"]),
            doc["trace_id"],
            doc["parent_span_id"],
            DeadLetter.model_validate(letter) if letter is not None else None,
        )


class Chain(enum.Enum):
    INCOMPLETE = "incomplete"  # a parent that no export has held yet
    UNNAMED = "unnamed"  # reaches the root (or a cycle) and no span names an agent


def walk(links: Links, parent: str | None) -> str | Chain:
    """The agent the nearest ancestor names, starting at `parent`."""
    hops = 0
    while parent and hops < MAX_HOPS:
        link = links.get(parent)
        if link is None:
            return Chain.INCOMPLETE
        parent, agent = link
        if agent:
            return agent
        hops += 1
    return Chain.UNNAMED


def settle(held: HeldSpan, found: str | Chain, expired: bool) -> MeteringEvent | DeadLetter | None:
    """What a held span becomes now, or None while it still waits."""
    if isinstance(found, str):
        return held.event.model_copy(update={"identity": found})
    if found is Chain.INCOMPLETE and not expired:
        return None
    return held.unnamed if held.unnamed is not None else held.event


def decided(held: HeldSpan, identity: str) -> MeteringEvent:
    """A held span whose identity an earlier settlement decided (a redelivery)."""
    return held.event.model_copy(update={"identity": identity})


@dataclass
class _Trace:
    links: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    parked: dict[str, tuple[datetime, HeldSpan]] = field(default_factory=dict)  # by event_id
    decided: dict[str, str] = field(default_factory=dict)  # event_id -> identity
    seen: datetime | None = None


class TraceAttribution:
    """The in-memory keeper of links and held spans, on a clock its caller advances."""

    def __init__(self, hold: timedelta) -> None:
        self.hold = hold
        self._traces: dict[str, _Trace] = {}

    @property
    def waiting(self) -> int:
        return sum(len(t.parked) for t in self._traces.values())

    def admit(
        self, links: Iterable[SpanLink], held: Iterable[HeldSpan], clock: datetime
    ) -> list[MeteringEvent | DeadLetter]:
        """Record an export's links, settle its held spans where possible, and settle the
        spans that waited on the traces these links complete."""
        touched: set[str] = set()
        for link in links:
            trace = self._trace(link.trace_id, clock)
            trace.links.setdefault(link.span_id, (link.parent_span_id, link.agent))
            touched.add(link.trace_id)
        out: list[MeteringEvent | DeadLetter] = []
        for span in held:
            trace = self._trace(span.trace_id, clock)
            event_id = span.event.event_id
            if event_id in trace.decided:
                out.append(decided(span, trace.decided[event_id]))
                continue
            if event_id in trace.parked:
                continue  # a redelivery of a span still waiting
            trace.parked[event_id] = (clock + self.hold, span)
            touched.add(span.trace_id)
        for trace_id in sorted(touched):
            out.extend(self._settle(self._traces[trace_id], clock, expire=False))
        return out

    def due(self, clock: datetime) -> list[MeteringEvent | DeadLetter]:
        """Settle what waited past its hold; forget traces idle for TRACE_TTL."""
        out: list[MeteringEvent | DeadLetter] = []
        for trace_id in sorted(self._traces):
            trace = self._traces[trace_id]
            out.extend(self._settle(trace, clock, expire=True))
            if not trace.parked and trace.seen is not None and trace.seen + TRACE_TTL < clock:
                del self._traces[trace_id]
        return out

    def drain(self) -> list[MeteringEvent | DeadLetter]:
        """The end of the input: every waiting span settles with what is known."""
        out: list[MeteringEvent | DeadLetter] = []
        for trace_id in sorted(self._traces):
            trace = self._traces[trace_id]
            out.extend(self._settle(trace, None, expire=True))
        return out

    def _trace(self, trace_id: str, clock: datetime) -> _Trace:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = _Trace()
        trace.seen = clock if trace.seen is None else max(trace.seen, clock)
        return trace

    def _settle(
        self, trace: _Trace, clock: datetime | None, expire: bool
    ) -> list[MeteringEvent | DeadLetter]:
        out: list[MeteringEvent | DeadLetter] = []
        for event_id in list(trace.parked):
            deadline, span = trace.parked[event_id]
            expired = expire and (clock is None or deadline <= clock)
            settled = settle(span, walk(trace.links, span.parent_span_id), expired)
            if settled is None:
                continue
            del trace.parked[event_id]
            if isinstance(settled, MeteringEvent):
                trace.decided[event_id] = settled.identity
            out.append(settled)
        return out
