"""Budget burn of one identity against its daily / monthly budget (pure, event time).

Spend is summed from final minutes per UTC day and month of event time. The score warns
before the cap: at the policy's `budget_warn_at` of the budget, or earlier when the recent
burn rate would reach the cap before the period ends (the forecast says when); at the cap it
is 1.0 with a block.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterguard.detectors.base import MinuteDetector, Verdict
from meterguard.detectors.features import IdentityContext, MinuteWindow

DAY_MINUTES = 24 * 60


@dataclass(frozen=True)
class BudgetConfig:
    warn_score: float = 0.85
    burn_span_minutes: int = 30  # burn rate = EW mean cost per minute over ~this span
    forecast_min_fraction: float = 0.5  # forecasts only count past half the budget


class BudgetDetector(MinuteDetector):
    name = "budget"

    def __init__(self, config: BudgetConfig | None = None) -> None:
        self.config = config or BudgetConfig()
        self.context = IdentityContext()
        self.day: int | None = None  # epoch day of the running total
        self.month: str | None = None  # "YYYY-MM"
        self.spent_day = 0.0
        self.spent_month = 0.0
        self.burn_per_minute = 0.0

    def configure(self, context: IdentityContext) -> None:
        self.context = context

    def score_one(self, window: MinuteWindow) -> Verdict:
        day, month = _periods(window.minute)
        spent_day = window.cost_usd + (self.spent_day if day == self.day else 0.0)
        spent_month = window.cost_usd + (self.spent_month if month == self.month else 0.0)
        burn = self._burn_after(window.cost_usd)
        checks = []
        minutes_left_day = DAY_MINUTES - window.minute % DAY_MINUTES - 1
        if self.context.daily_budget_usd:
            checks.append(("daily", spent_day, self.context.daily_budget_usd, minutes_left_day))
        if self.context.monthly_budget_usd:
            left = _minutes_left_in_month(window.minute)
            checks.append(("monthly", spent_month, self.context.monthly_budget_usd, left))
        best = Verdict(score=0.0)
        for period, spent, budget, minutes_left in checks:
            verdict = self._judge(period, spent, budget, burn, minutes_left)
            if verdict.score > best.score:
                best = verdict
        return best

    def _judge(
        self, period: str, spent: float, budget: float, burn: float, minutes_left: int
    ) -> Verdict:
        fraction = spent / budget
        to_cap = (budget - spent) / burn if burn > 0 else None
        evidence = {
            "period": period,
            "spent_usd": round(spent, 6),
            "budget_usd": budget,
            "fraction": round(fraction, 4),
            "burn_usd_per_min": round(burn, 6),
            "minutes_to_cap": round(to_cap, 1) if to_cap is not None else None,
        }
        if fraction >= 1.0:
            return Verdict(
                1.0,
                evidence,
                f"{period} budget exhausted: ${spent:,.2f} of ${budget:,.2f}",
                action="block",
            )
        forecast_hits = (
            to_cap is not None
            and to_cap < minutes_left
            and fraction >= self.config.forecast_min_fraction
        )
        if fraction >= self.context.budget_warn_at or forecast_hits:
            when = f", cap in ~{to_cap:.0f} min at the current rate" if to_cap else ""
            return Verdict(
                self.config.warn_score,
                evidence,
                f"{fraction:.0%} of the {period} budget spent (${spent:,.2f} of "
                f"${budget:,.2f}){when}",
            )
        return Verdict(0.0, evidence)

    def _burn_after(self, cost: float) -> float:
        alpha = 2.0 / (self.config.burn_span_minutes + 1)
        return self.burn_per_minute + alpha * (cost - self.burn_per_minute)

    def learn_one(self, window: MinuteWindow, *, anomalous: bool = False) -> None:
        # Spend is spend: counted whether or not the minute looked anomalous.
        day, month = _periods(window.minute)
        if day != self.day:
            self.day, self.spent_day = day, 0.0
        if month != self.month:
            self.month, self.spent_month = month, 0.0
        self.spent_day += window.cost_usd
        self.spent_month += window.cost_usd
        self.burn_per_minute = self._burn_after(window.cost_usd)

    def to_state(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "month": self.month,
            "spent_day": self.spent_day,
            "spent_month": self.spent_month,
            "burn": self.burn_per_minute,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BudgetDetector:
        d = cls()
        d.day, d.month = state["day"], state["month"]
        d.spent_day, d.spent_month = float(state["spent_day"]), float(state["spent_month"])
        d.burn_per_minute = float(state["burn"])
        return d


def _periods(minute: int) -> tuple[int, str]:
    moment = datetime.fromtimestamp(minute * 60, UTC)
    return minute // DAY_MINUTES, f"{moment.year:04d}-{moment.month:02d}"


def _minutes_left_in_month(minute: int) -> int:
    moment = datetime.fromtimestamp(minute * 60, UTC)
    days = calendar.monthrange(moment.year, moment.month)[1]
    end = datetime(moment.year, moment.month, days, tzinfo=UTC).timestamp() // 60 + DAY_MINUTES
    return int(end - minute - 1)
