"""The agent call graph of the evaluation world: which agents call which, and how often.

Stable caller -> callee edges between agents, by level (entry agents at level 0), so the graph
is acyclic and traces are at most MAX_TRACE_DEPTH deep. Built from its own random stream, so
planning incidents and building the world draw the same graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.profiles import TRACED_AGENT_SHARE, IdentityProfile
from meterguard.streams.simulation.random_streams import GRAPH_STREAM, random_stream

MAX_TRACE_DEPTH = 4  # normal call graph: entry agents (level 0) down to level 3


@dataclass(frozen=True)
class CallGraph:
    """Stable caller -> callee edges between agents, by level (so acyclic, depth <= 4)."""

    level: np.ndarray  # per identity: 0 entry agent ... 3; -1 for non-agents
    src: np.ndarray  # edges, sorted by caller
    dst: np.ndarray
    prob: np.ndarray  # chance that a span of src calls dst
    out_start: np.ndarray  # per identity: index of its first edge
    out_count: np.ndarray

    @property
    def roots(self) -> set[int]:
        return {int(i) for i in np.flatnonzero((self.level == 0) & (self.out_count > 0))}

    @property
    def callees(self) -> set[int]:
        return {int(i) for i in self.dst}

    @property
    def edges(self) -> set[tuple[int, int]]:
        return set(zip(self.src.tolist(), self.dst.tolist(), strict=True))


def build_call_graph(cfg: SimConfig, profiles: list[IdentityProfile]) -> CallGraph:
    rng, n = random_stream(cfg, GRAPH_STREAM), len(profiles)
    agents = np.array([i for i, p in enumerate(profiles) if p.category == "agent"], dtype=np.int64)
    level = np.full(n, -1)
    src: list[int] = []
    dst: list[int] = []
    prob: list[float] = []
    if agents.size >= 2:
        order, m = rng.permutation(agents), agents.size
        b0 = max(1, round(0.4 * m))
        b1 = min(m, max(b0 + 1, round(0.7 * m)))
        bounds = [b0, b1, min(m, max(b1, round(0.9 * m)))]
        level[order] = np.searchsorted(bounds, np.arange(m), side="right")
        for a in order.tolist():
            below = order[level[order] == level[a] + 1]
            if level[a] >= MAX_TRACE_DEPTH - 1 or below.size == 0:
                continue
            k = min(int(rng.integers(1, 4) if level[a] == 0 else rng.integers(0, 3)), below.size)
            picks, probs = rng.choice(below, k, replace=False), rng.uniform(0.4, 0.9, k)
            for b, p in zip(picks, probs, strict=True):
                src.append(a)
                dst.append(int(b))
                prob.append(float(p))
    s, d, p = np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), np.array(prob)
    order = np.argsort(s, kind="stable")
    s, d, p = s[order], d[order], p[order]
    return CallGraph(level, s, d, p, np.searchsorted(s, np.arange(n)), np.bincount(s, minlength=n))


def incoming_span_rate(graph: CallGraph, rate: np.ndarray) -> np.ndarray:
    """Expected child spans per minute each agent receives (at the daily mean)."""
    spans = np.where(graph.level >= 0, rate * TRACED_AGENT_SHARE, 0.0)
    incoming = np.zeros_like(spans)
    edges = zip(graph.src, graph.dst, graph.prob, strict=True)
    for a, b, p in sorted(edges, key=lambda e: graph.level[e[0]]):  # callers before callees
        incoming[b] += spans[a] * p
        spans[b] += spans[a] * p
    return incoming
