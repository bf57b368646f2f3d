"""Generated multi-agent traces for root-caller attribution tests, and the cost each root
identity drove, computed here from the spans alone (no Redis, no meterguard code).

Shapes: chains A -> B -> C, fan-outs, identity cycles (A -> B -> A -> B), a chain deeper than
the hop guard, a trace whose root span is never delivered, a loop of span ids, and traces of
one identity only. Every span is one event; ids are unique per span.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from meterguard.models import MeteringEvent

IDENTITIES = ("agent-a", "agent-b", "agent-c", "agent-d", "key-e", "key-f")
HOUR_MS = 3_600_000
Row = list[int]  # calls, input, output, cached, cost_nano, errors


def span(
    rng: random.Random,
    trace: str,
    span_id: str,
    parent: str | None,
    identity: str,
    at: datetime,
) -> MeteringEvent:
    return MeteringEvent(
        event_id=f"{trace}/{span_id}",
        identity=identity,
        event_time=at,
        trace_id=trace,
        span_id=span_id,
        parent_span_id=parent,
        input_tokens=rng.randint(0, 900),
        output_tokens=rng.randint(0, 300),
        cached_tokens=rng.randint(0, 100),
        cost_usd=Decimal(rng.randint(0, 40_000_000)).scaleb(-9),
        status="error" if rng.random() < 0.1 else "ok",
    )


def _tree(rng: random.Random, trace: str, start: datetime, shape: str) -> list[MeteringEvent]:
    """One trace; its spans' times grow down the tree (over up to ~25 minutes)."""
    out: list[MeteringEvent] = []

    def add(parent: str | None, identity: str, depth: int) -> str:
        span_id = f"s{len(out)}"
        at = start + timedelta(seconds=depth * 20 + rng.uniform(0, 300))
        out.append(span(rng, trace, span_id, parent, identity, at))
        return span_id

    root_identity = rng.choice(IDENTITIES)
    if shape == "chain":  # A -> B -> C ..., any identities, repeats allowed
        parent = add(None, root_identity, 0)
        for depth in range(1, rng.randint(2, 7)):
            parent = add(parent, rng.choice(IDENTITIES), depth)
    elif shape == "fan_out":
        root = add(None, root_identity, 0)
        for _ in range(rng.randint(3, 12)):
            child = add(root, rng.choice(IDENTITIES), 1)
            for _ in range(rng.randint(0, 2)):
                add(child, rng.choice(IDENTITIES), 2)
    elif shape == "cycle":  # A -> B -> A -> B ...: A's deeper spans are its own cost
        other = rng.choice([i for i in IDENTITIES if i != root_identity])
        parent = add(None, root_identity, 0)
        for depth in range(1, rng.randint(4, 9)):
            parent = add(parent, other if depth % 2 else root_identity, depth)
    elif shape == "deep":  # past the 64-hop guard: the deepest spans are never credited
        parent = add(None, root_identity, 0)
        for depth in range(1, 71):
            parent = add(parent, IDENTITIES[depth % len(IDENTITIES)], depth)
    elif shape == "rootless":  # its root span is never delivered: nothing to credit
        parent = add("never-sent", rng.choice(IDENTITIES), 1)
        for depth in range(2, 5):
            parent = add(parent, rng.choice(IDENTITIES), depth)
    elif shape == "span_loop":  # two spans each other's parent
        first = span(rng, trace, "x1", "x2", "agent-a", start)
        second = span(rng, trace, "x2", "x1", "agent-b", start)
        out += [first, second]
        add("x1", "agent-c", 2)
    elif shape == "alone":  # one identity calling itself: no cost driven
        parent = add(None, root_identity, 0)
        for depth in range(1, 4):
            parent = add(parent, root_identity, depth)
    else:
        raise ValueError(shape)
    return out


SHAPES = ("chain", "chain", "fan_out", "fan_out", "cycle", "rootless", "span_loop", "alone")


def traces(seed: int, count: int, start: datetime) -> list[MeteringEvent]:
    """`count` traces over ~2 hours (straddling hour boundaries), plus one deep chain."""
    rng = random.Random(seed)
    out: list[MeteringEvent] = []
    for n in range(count):
        at = start + timedelta(seconds=rng.uniform(0, 2 * 3600))
        out += _tree(rng, f"t{seed}-{n}", at, SHAPES[n % len(SHAPES)])
    out += _tree(rng, f"t{seed}-deep", start, "deep")
    return out


def deliveries(events: list[MeteringEvent], seed: int, redeliver: float) -> list[MeteringEvent]:
    """Every event in a random order (children before their roots), then a share again."""
    rng = random.Random(seed)
    shuffled = events[:]
    rng.shuffle(shuffled)
    again = rng.sample(events, int(len(events) * redeliver))
    stream = shuffled + again
    # Some redeliveries come right back, inside the same batches.
    for e in rng.sample(events, len(events) // 10):
        stream.insert(rng.randrange(len(stream)), e)
    return stream


def root_of(spans: dict[str, MeteringEvent], event: MeteringEvent, max_hops: int) -> str | None:
    """The identity of the span at the top of `event`'s chain of parents, if every parent is
    known and the top is at most `max_hops` hops up."""
    current, hops = event, 0
    while current.parent_span_id:
        if hops >= max_hops:
            return None
        parent = spans.get(current.parent_span_id)
        if parent is None:
            return None
        current, hops = parent, hops + 1
    return current.identity


def expected_driven(events: list[MeteringEvent], max_hops: int) -> dict[str, dict[int, Row]]:
    """root identity -> event-time hour -> the row of the other identities' spans under it."""
    by_trace: dict[str, dict[str, MeteringEvent]] = defaultdict(dict)
    for e in events:
        by_trace[e.trace_id or ""].setdefault(e.span_id or "", e)
    out: dict[str, dict[int, Row]] = defaultdict(lambda: defaultdict(lambda: [0] * 6))
    for spans in by_trace.values():
        for e in spans.values():
            root = root_of(spans, e, max_hops)
            if root is None or root == e.identity:
                continue
            row = out[root][e.event_time_ms // HOUR_MS]
            usage = (1, e.input_tokens, e.output_tokens, e.cached_tokens, e.cost_nano_usd)
            for i, v in enumerate((*usage, int(e.status == "error"))):
                row[i] += v
    return {root: dict(hours) for root, hours in out.items()}
