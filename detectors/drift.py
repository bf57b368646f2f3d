"""Behaviour drift of one identity (pure): what it uses and from where, not how much.

* offboarded: any call by an identity the policy lists as offboarded (block at once);
* model tier: a model whose observed price per token is far above what this identity
  normally pays (a jump from a mini model to a frontier one);
* workload / source: the identity (its credential) used by a workload or from a source it
  has never used, once its usual ones are known (a key shared with something new).

Prices are learnt from the events themselves (cost / tokens per model), so no price list is
needed and a new model is judged by what it actually costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import EventFacts, IdentityContext, MinuteWindow
from meterguard.detectors.robust import FirstContact

MAX_REMEMBERED = 64  # distinct workloads / sources / models remembered per identity


@dataclass(frozen=True)
class DriftConfig:
    learn_minutes: int = 60  # first hour of an identity: learn its habits, never alert
    learn_events: int = 30
    price_jump: float = 3.0  # new model costing this many times the usual price per token
    drift_score: float = 0.85  # a warning: worth a look, not a throttle by itself


class DriftDetector(MinuteDetector):
    name = "drift"

    def __init__(self, config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        self.contact = FirstContact(self.config.learn_minutes, self.config.learn_events)
        self.models: dict[str, float] = {}  # model -> nano-USD per token (EW)
        self.usual_price = 0.0  # nano-USD per token over all calls (EW)
        self.workloads: list[str] = []
        self.sources: list[str] = []
        self.offboarded = False
        self.pending: list[dict[str, Any]] = []  # findings since the last scored minute

    def configure(self, context: IdentityContext) -> None:
        self.offboarded = context.offboarded

    def observe_one(self, facts: EventFacts) -> None:
        learning = self.contact.observe(facts.minute)
        if self.offboarded:
            self._flag("offboarded", "calls after offboarding", 1.0, facts)
        if facts.model and facts.tokens > 0:
            self._check_model(facts, learning)
        for kind, value, known in (
            ("workload", facts.workload, self.workloads),
            ("source", facts.source, self.sources),
        ):
            if value and value not in known:
                if not learning:
                    self._flag(
                        f"new_{kind}",
                        f"first call from {kind} {value!r}",
                        self.config.drift_score,
                        facts,
                    )
                if len(known) < MAX_REMEMBERED:
                    known.append(value)

    def _check_model(self, facts: EventFacts, learning: bool) -> None:
        price = facts.cost_nano_usd / facts.tokens
        model = facts.model or ""
        if model not in self.models:
            if (
                not learning
                and self.usual_price > 0
                and price >= self.config.price_jump * self.usual_price
            ):
                ratio = price / self.usual_price
                # drift_score at the threshold, +0.1 per doubling beyond it (capped at 0.95).
                jump = self.config.drift_score + 0.1 * math.log2(ratio / self.config.price_jump)
                self._flag(
                    "pricier_model",
                    f"switched to {model!r} at {ratio:.1f}x the usual price per token",
                    min(0.95, jump),
                    facts,
                )
            if len(self.models) < MAX_REMEMBERED:
                self.models[model] = price
        else:
            self.models[model] += 0.1 * (price - self.models[model])
        weight = max(0.02, 1.0 / self.contact.seen)
        self.usual_price += weight * (price - self.usual_price)

    def _flag(self, kind: str, reason: str, score: float, facts: EventFacts) -> None:
        if len(self.pending) < 8 and not any(p["kind"] == kind for p in self.pending):
            self.pending.append(
                {"kind": kind, "reason": reason, "score": score, "time_ms": facts.time_ms}
            )

    def score_one(self, window: MinuteWindow) -> Verdict:
        if not self.pending:
            return Verdict(score=0.0)
        top = max(self.pending, key=lambda p: p["score"])
        action = "block" if top["kind"] == "offboarded" else None
        evidence = {"findings": [dict(p) for p in self.pending], "kind": top["kind"]}
        return Verdict(score=top["score"], evidence=evidence, reason=top["reason"], action=action)

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        self.pending = []  # findings are reported once, with the minute they fell in

    def to_state(self) -> dict[str, Any]:
        return {
            **self.contact.to_state(),
            "models": self.models,
            "usual_price": self.usual_price,
            "workloads": self.workloads,
            "sources": self.sources,
            "pending": self.pending,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DriftDetector:
        d = cls()
        d.contact.restore(state)
        d.models = {k: float(v) for k, v in state["models"].items()}
        d.usual_price = float(state["usual_price"])
        d.workloads, d.sources = list(state["workloads"]), list(state["sources"])
        d.pending = list(state["pending"])
        return d
