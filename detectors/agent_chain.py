"""Agent chaining: one agent triggering another, seen from the called identity (pure).

Each traced call arrives with its place in the trace's call tree (streams/ links the spans in
Redis): its depth, whether its identity already appears among its ancestors (a cycle
A -> B -> ... -> A), how many children its parent has (fan-out) and who called it. After
learning its first hour, an identity's findings are:

* cycle: it is being called from inside a chain it already belongs to (3+ in a minute is
  a loop, critical);
* deep chain: depth beyond twice the deepest it was normally called at (and at least 6);
* fan-out explosion: its caller's span has spawned `fanout_limit` children or more;
* new edge: a caller it was never called by before;
* cost amplification (evidence, never alone): the trace it is part of has cost
  `amplification` times what traces through this identity usually cost by the time they
  reach it (geometric mean, learnt).

An alert names the chain behind the minute's findings: of the traces whose calls raised them,
the costliest, by its root identity (who started the chain, once its root span is known) and
its total cost so far (`root_identity`, `trace_id`, `chain_cost_usd` in the evidence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import EventFacts, MinuteWindow
from meterguard.detectors.robust import FirstContact

MAX_CALLERS = 64
STRUCTURAL = frozenset({"cycle", "deep_chain", "fan_out", "new_edge"})


@dataclass(frozen=True)
class ChainConfig:
    learn_minutes: int = 60
    learn_events: int = 30
    depth_floor: int = 6
    depth_factor: float = 2.0
    fanout_limit: int = 15
    loop_cycles: int = 3  # cyclic calls in one minute that make a loop, not a recursion
    finding_score: float = 0.85
    amplification: float = 10.0
    min_amplified_usd: float = 0.05
    loop_score: float = 0.95


class AgentChainDetector(MinuteDetector):
    name = "agent_chain"

    def __init__(self, config: ChainConfig | None = None) -> None:
        self.config = config or ChainConfig()
        self.contact = FirstContact(self.config.learn_minutes, self.config.learn_events)
        self.callers: list[str] = []
        self.normal_depth = 0
        self.log_trace_cost = 0.0  # EW mean of log(trace cost so far, nano-USD) at its spans
        self.trace_costs_seen = 0
        # finding kind -> [count, worst value] since the last scored minute
        self.pending: dict[str, list[Any]] = {}
        # The costliest trace among those findings: [root identity, trace id, cost so far].
        self.chain: list[Any] | None = None

    def observe_one(self, facts: EventFacts) -> None:
        if facts.depth is None and facts.caller is None:
            return
        before = self._findings()
        self._observe(facts)
        if facts.depth is not None and self._findings() > before:
            self._note_chain(facts)

    def _findings(self) -> int:
        return sum(int(entry[0]) for entry in self.pending.values())

    def _note_chain(self, facts: EventFacts) -> None:
        cost = facts.trace_cost_nano_usd
        held = self.chain
        if held is None or cost > held[2] or (cost == held[2] and held[0] is None):
            self.chain = [facts.trace_root, facts.trace_id, cost]

    def _observe(self, facts: EventFacts) -> None:
        learning = self.contact.observe(facts.minute)
        if facts.caller and facts.caller not in self.callers:
            if not learning:
                self._note("new_edge", facts.caller)
            if len(self.callers) < MAX_CALLERS:
                self.callers.append(facts.caller)
        if facts.depth is None:
            return
        self._check_cost(facts.trace_cost_nano_usd, learning)
        if learning:
            self.normal_depth = max(self.normal_depth, facts.depth)
            return
        if facts.cycle:
            self._note("cycle", facts.trace_root or "?")
        if facts.depth > self._depth_limit():
            self._note("deep_chain", facts.depth)
        if facts.fanout >= self.config.fanout_limit:
            self._note("fan_out", facts.fanout)

    def _check_cost(self, cost_nano: int, learning: bool) -> None:
        if cost_nano <= 0:
            return
        log_cost = math.log(cost_nano)
        if not learning and self.trace_costs_seen:
            ratio = math.exp(log_cost - self.log_trace_cost)
            if (
                ratio >= self.config.amplification
                and cost_nano >= self.config.min_amplified_usd * 1e9
            ):
                self._note("cost_amplification", round(ratio))
                return  # an amplified trace does not teach what traces usually cost
        self.trace_costs_seen += 1
        weight = max(0.05, 1.0 / self.trace_costs_seen)
        self.log_trace_cost += weight * (log_cost - self.log_trace_cost)

    def _depth_limit(self) -> float:
        return max(self.config.depth_floor, self.config.depth_factor * self.normal_depth)

    def _note(self, kind: str, value: Any) -> None:
        entry = self.pending.setdefault(kind, [0, value])
        entry[0] += 1
        if isinstance(value, int) and value > entry[1]:
            entry[1] = value

    def score_one(self, window: MinuteWindow) -> Verdict:
        # Cost amplification alone is no finding: normal trace costs are heavy-tailed
        # (measured: 14x swings on ordinary agents). It is evidence for a structural finding.
        if not self.pending.keys() & STRUCTURAL:
            return Verdict(score=0.0)
        cfg = self.config
        cycles = self.pending.get("cycle", [0, None])[0]
        score = cfg.loop_score if cycles >= cfg.loop_cycles else cfg.finding_score
        parts = []
        if cycles:
            root = self.pending["cycle"][1]
            parts.append(f"called {cycles} time(s) from inside a chain it belongs to (root {root})")
        if "deep_chain" in self.pending:
            count, deepest = self.pending["deep_chain"]
            parts.append(f"{count} call(s) at depth up to {deepest} (normally {self.normal_depth})")
        if "fan_out" in self.pending:
            count, widest = self.pending["fan_out"]
            parts.append(f"its caller spawned {widest} calls at once")
        if "cost_amplification" in self.pending:
            parts.append(
                f"its traces cost up to {self.pending['cost_amplification'][1]}x the usual"
            )
        if "new_edge" in self.pending:
            parts.append(f"a new caller {self.pending['new_edge'][1]!r}")
        evidence: dict[str, Any] = {
            kind: {"count": c, "worst": v} for kind, (c, v) in self.pending.items()
        }
        evidence["normal_depth"] = self.normal_depth
        if self.chain is not None:
            root, trace_id, cost = self.chain
            evidence["root_identity"] = root
            evidence["trace_id"] = trace_id
            evidence["chain_cost_usd"] = round(cost / 1e9, 9)
            who = f"chain started by {root!r}" if root else "chain root not known yet"
            parts.append(f"{who}, its trace's cost so far {usd(cost)}")
        return Verdict(score=score, evidence=evidence, reason="; ".join(parts))

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        self.pending = {}  # findings are reported once, with the minute they fell in
        self.chain = None

    def to_state(self) -> dict[str, Any]:
        return {
            **self.contact.to_state(),
            "callers": self.callers,
            "normal_depth": self.normal_depth,
            "log_trace_cost": self.log_trace_cost,
            "trace_costs_seen": self.trace_costs_seen,
            "pending": self.pending,
            "chain": self.chain,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AgentChainDetector:
        d = cls()
        d.contact.restore(state)
        d.callers = list(state["callers"])
        d.normal_depth = int(state["normal_depth"])
        d.log_trace_cost = float(state["log_trace_cost"])
        d.trace_costs_seen = int(state["trace_costs_seen"])
        d.pending = {k: list(v) for k, v in state["pending"].items()}
        chain = state.get("chain")  # absent from checkpoints written before it existed
        d.chain = list(chain) if chain else None
        return d


def usd(nano: int) -> str:
    """A cost for a sentence: cents from a dollar up, three significant digits below."""
    value = nano / 1e9
    return f"${value:,.2f}" if value >= 1 else f"${value:.3g}"
