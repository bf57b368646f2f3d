"""What detectors see: one closed event-time minute of one identity (pure data)."""

from __future__ import annotations

from dataclasses import dataclass


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
