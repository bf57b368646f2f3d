"""The generated agent chains and their known root costs (`meterguard simulate --chains-out`).

The evaluation world draws traced calls down the agent call graph (call_graph.py,
world_traffic.py) and, for agent_chain incidents, loops of agents calling each other
(load_incidents.AgentChain): every trace has one root span (no parent), whose identity started
the chain. `ChainLedger` follows the generated events and labels each trace with its root
identity and what the chain cost *other* identities: the calls, tokens, cost and errors of its
spans whose identity is not the root's (the root's own spans deeper in a cycle, A -> B -> A,
are its own cost). That is the cost driven the pipeline must credit to the root
(streams/store/driven.py), whatever order the spans arrive in. A trace whose root span was
never generated (the classic world's traced calls name a caller span that is not metered)
has no root: nothing to credit.

Pure: the labels follow from the generated spans alone, not from meterguard's stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

USAGE_FIELDS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_nano_usd",
    "errors",
)
Usage = tuple[int, int, int, int, int, int]  # in USAGE_FIELDS order
NO_USAGE: Usage = (0, 0, 0, 0, 0, 0)


def nano_usd(value: Any) -> int:
    """A cost in integer nano-USD, as MeteringEvent.cost_nano_usd computes it."""
    exact = Decimal(str(value)) if not isinstance(value, Decimal) else value
    return int((exact * 1_000_000_000).to_integral_value())


def usage_of(event: Mapping[str, Any]) -> Usage:
    return (
        1,
        int(event.get("input_tokens", 0)),
        int(event.get("output_tokens", 0)),
        int(event.get("cached_tokens", 0)),
        nano_usd(event.get("cost_usd", 0)),
        int(event.get("status") == "error"),
    )


def add(a: Usage, b: Usage) -> Usage:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5])


@dataclass(frozen=True)
class ChainLabel:
    """One trace: its root identity (None: no root span) and the cost it drove."""

    trace_id: str
    root: str | None
    spans: int
    depth: int  # hops from the root to the deepest span
    cycle: bool  # some span's identity already appears among its ancestors
    root_own_spans: int  # the root's own spans below the root span (a cycle back to it)
    driven: Usage

    @property
    def driven_cost_usd(self) -> Decimal:
        return Decimal(self.driven[4]).scaleb(-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "root": self.root,
            "spans": self.spans,
            "depth": self.depth,
            "cycle": self.cycle,
            "root_own_spans": self.root_own_spans,
            "driven": dict(zip(USAGE_FIELDS, self.driven, strict=True)),
            "driven_cost_usd": f"{self.driven_cost_usd:.9f}",
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ChainLabel:
        d = doc["driven"]
        driven: Usage = (
            int(d["calls"]), int(d["input_tokens"]), int(d["output_tokens"]),
            int(d["cached_tokens"]), int(d["cost_nano_usd"]), int(d["errors"]),
        )  # fmt: skip
        return cls(
            doc["trace_id"], doc["root"], int(doc["spans"]), int(doc["depth"]),
            bool(doc["cycle"]), int(doc["root_own_spans"]), driven,
        )  # fmt: skip


@dataclass
class _Span:
    parent: str | None
    identity: str
    usage: Usage


@dataclass
class ChainLedger:
    """Feed it the generated events (`add`, any order); `labels()` per trace, in first-seen
    order. The first event of a span id wins, as in the pipeline."""

    traces: dict[str, dict[str, _Span]] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any]) -> None:
        trace, span = event.get("trace_id"), event.get("span_id")
        if not trace or not span:
            return
        spans = self.traces.setdefault(trace, {})
        if span not in spans:
            spans[span] = _Span(
                event.get("parent_span_id") or None, event["identity"], usage_of(event)
            )

    def observe(self, events: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        """The events, unchanged, each added on the way."""
        for event in events:
            self.add(event)
            yield event

    def labels(self) -> list[ChainLabel]:
        return [_label(trace, spans) for trace, spans in self.traces.items()]


def _label(trace: str, spans: dict[str, _Span]) -> ChainLabel:
    driven, depth, cycle, own, root = NO_USAGE, 0, False, 0, None
    for span in spans.values():
        path = _path_to_root(spans, span)
        if path is None:
            continue
        top = path[-1].identity
        root = top
        depth = max(depth, len(path) - 1)
        identities = [s.identity for s in path]
        cycle = cycle or span.identity in identities[1:]
        if len(path) == 1:
            continue
        if span.identity == top:
            own += 1
        else:
            driven = add(driven, span.usage)
    return ChainLabel(trace, root, len(spans), depth, cycle, own, driven)


def _path_to_root(spans: dict[str, _Span], span: _Span) -> list[_Span] | None:
    """The span and its ancestors up to the root span; None if an ancestor is missing or the
    parents loop."""
    path, seen = [span], {id(span)}
    while path[-1].parent is not None:
        parent = spans.get(path[-1].parent)
        if parent is None or id(parent) in seen:
            return None
        path.append(parent)
        seen.add(id(parent))
    return path


def chains_jsonl(labels: Iterable[ChainLabel]) -> bytes:
    """The labels as JSON Lines, one trace a line (`simulate --chains-out`, evaluate's
    chains.jsonl)."""
    return b"".join(orjson.dumps(label.to_dict()) + b"\n" for label in labels)


def root_costs(labels: Iterable[ChainLabel]) -> dict[str, Usage]:
    """Root identity -> the cost its chains drove (traces with a root and any driven call)."""
    out: dict[str, Usage] = {}
    for label in labels:
        if label.root is not None and label.driven[0]:
            out[label.root] = add(out.get(label.root, NO_USAGE), label.driven)
    return out
