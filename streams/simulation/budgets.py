"""Expected spend and daily budgets of the simulated identities.

Computed from the profiles (rate, token sizes, model prices, daily rhythm), never from the
random draw: the budgets handed to the policy, and the expected spend that the budget_burn
incident sizes itself on to cross its identity's budget.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from meterguard.streams.simulation.baseline import MINUTE_MS, BaselinePlan
from meterguard.streams.simulation.profiles import (
    BATCH_BURST_MINUTES,
    BATCH_QUIET_SHARE,
    DIURNAL_AMPLITUDE,
    DIURNAL_PEAK_HOUR_UTC,
    ERROR_RATE,
    MODEL_INDEX,
    PRICE_IN,
    PRICE_OUT,
)

LOGNORMAL_MEAN = math.exp(0.5**2 / 2)  # mean of the per-call token noise lognormal(0, 0.5)
BUDGET_HEADROOM = 3.0  # daily budget = this x expected spend in a UTC day of the run


class ExpectedSpend(Protocol):
    """An identity's expected calls per minute and USD per call (the evaluation world's)."""

    def plan_rate(self, i: int) -> float: ...

    def cost_per_call(self, i: int) -> float: ...


def expected_cost_parts(in_med: float, out_med: float, model: int) -> tuple[float, float]:
    """Expected USD of an ordinary call's (prompt, answer) given its medians and model."""
    tokens_in, tokens_out = in_med * LOGNORMAL_MEAN, out_med * LOGNORMAL_MEAN * (1 - ERROR_RATE)
    return float(tokens_in * PRICE_IN[model]) / 1e6, float(tokens_out * PRICE_OUT[model]) / 1e6


def _shapes(plan: BaselinePlan) -> tuple[np.ndarray, np.ndarray]:
    """(daily rhythm, hourly batch) rate multipliers per run minute, as BaselinePlan.shape."""
    t0 = plan.start_ms + np.arange(plan.cfg.minutes) * MINUTE_MS
    hour = (t0 / 3_600_000) % 24
    diurnal = 1 + DIURNAL_AMPLITUDE * np.sin(2 * np.pi * (hour - DIURNAL_PEAK_HOUR_UTC + 6) / 24)
    burst = 60 * (1 - BATCH_QUIET_SHARE) / BATCH_BURST_MINUTES
    batch = np.where((t0 // MINUTE_MS) % 60 < BATCH_BURST_MINUTES, burst, BATCH_QUIET_SHARE)
    return diurnal, batch


def shape_by_minute(plan: BaselinePlan, i: int) -> np.ndarray:
    diurnal, batch = _shapes(plan)
    return batch if plan.batch[i] else diurnal


def daily_budget(plan: BaselinePlan, rate: float, per_call: float, i: int) -> float:
    """BUDGET_HEADROOM x identity i's expected spend in the busiest UTC day of the run."""
    diurnal, batch = _shapes(plan)
    t0 = plan.start_ms + np.arange(plan.cfg.minutes) * MINUTE_MS
    day = t0 // 86_400_000 - t0[0] // 86_400_000
    busiest = np.bincount(day, batch if plan.batch[i] else diurnal).max()
    return BUDGET_HEADROOM * rate * per_call * float(busiest)


def budgets_for(plan: BaselinePlan, world: ExpectedSpend | None) -> dict[str, float]:
    """The daily budget of every identity, from its profile (see simulate.budgets).

    `world` is the evaluation world of an enriched run (its agents also carry child spans,
    its premium users call a premium tier), None for the classic world.
    """
    out = {}
    for i, p in enumerate(plan.profiles):
        if world is not None:
            rate, per_call = world.plan_rate(i), world.cost_per_call(i)
        else:
            rate = p.rate_per_min
            per_call = sum(
                expected_cost_parts(p.input_median, p.output_median, MODEL_INDEX[p.model])
            )
        out[p.name] = round(daily_budget(plan, rate, per_call, i), 6)
    return out
