"""What detectors see: one closed event-time minute of one identity (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class MinuteWindow:
    minute: int  # epoch minute (event time // 60 000 ms)
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nano_usd: int = 0
    errors: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float:
        return self.cost_nano_usd / 1e9

    def metric(self, name: str) -> float:
        """The per-minute figures detectors score, by name."""
        if name == "calls":
            return float(self.calls)
        if name == "tokens":
            return float(self.tokens)
        if name == "cost_usd":
            return self.cost_usd
        if name == "errors":
            return float(self.errors)
        raise KeyError(f"unknown metric {name!r}")


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What event-level detectors see of one new (not duplicate) event, in arrival order."""

    time_ms: int
    minute: int
    is_error: bool
    fingerprint: str | None = None  # request fingerprint, or the failing operation
    model: str | None = None
    workload: str | None = None
    source: str | None = None
    credential_id: str | None = None
    caller: str | None = None
    tokens: int = 0
    cost_nano_usd: int = 0
    # Traced calls only: the span's place in its trace's call tree (see streams/store/trace.lua).
    depth: int | None = None
    cycle: bool = False
    fanout: int = 0
    trace_root: str | None = None
    trace_cost_nano_usd: int = 0  # the trace's cost so far, every identity's spans included
    trace_id: str | None = None


@dataclass(frozen=True)
class IdentityContext:
    """Per-identity facts from the policy that some detectors need (budgets, offboarding)."""

    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None
    offboarded: bool = False
    budget_warn_at: float = 0.8  # fraction of a budget that raises the warning
    # Per-detector parameters of the identity's environment (policy file, `detection:`),
    # detector name -> {config field: value}; a detector applies them over its defaults.
    detector_params: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Typical per-minute rates of the identity's peers (same team and environment), by
    # metric, plus "<metric>_phi" (their dispersion): a new identity's only yardstick.
    peer_rates: Mapping[str, float] | None = None
