"""Incident kinds that add load: more calls, bigger prompts, more spend on one identity.

runaway_agent (30x its rate, repeating itself), retry_loop (one request hammered steadily,
mostly failing), slow_ramp (a leaked key used a little more every hour), agent_chain (agents
calling each other in a loop: deep, costly traces) and budget_burn (sustained spend that
crosses the daily budget). Each is a `Spec` whose knobs are drawn at plan time.
"""

from __future__ import annotations

import math

import numpy as np

from meterguard.streams.simulation.baseline import MINUTE_MS
from meterguard.streams.simulation.columns import Columns, Factors, SpanContext
from meterguard.streams.simulation.config import INCIDENT_EFFECTS, Incident
from meterguard.streams.simulation.incident_spec import Spec
from meterguard.streams.simulation.profiles import (
    ERROR_NAMES,
    ERROR_P,
    ERROR_RATE,
    MS_PER_TOKEN,
    PRICE_IN,
    PRICE_OUT,
)
from meterguard.streams.simulation.world import World

LOOP_ERRORS = tuple(ERROR_NAMES.index(e) for e in ("rate_limit", "server_error", "invalid_request"))
BUDGET_CROSSING = 0.65  # a budget_burn crosses its budget this far into its window
MAX_PROMPT_TOKENS = 100_000  # budget_burn prompts grow up to a median of this
CHAIN_COST = 15.0  # an agent_chain loop trace costs at least this x the root's normal trace


class RunawayAgent(Spec):
    # The classic effect (BaselinePlan.effects) already scales rate, tokens and repeats.
    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            f.boost[self.who] *= INCIDENT_EFFECTS["runaway_agent"].rate_factor


class RetryLoop(Spec):
    """One fingerprint at a steady 20-120 calls/min, >= 75 % failing, tiny prompts."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        self.period = 60_000 / rng.uniform(20, 120)
        self.phase = rng.uniform(0, self.period)
        usual = world.fp_offset[self.who] + int(rng.integers(world.fp_count[self.who]))
        self.fp = usual if rng.random() < 0.5 else world.new_fingerprints(rng, 1)[0]
        self.tokens_in = int(rng.integers(60, 400))
        self.error_share = rng.uniform(0.75, 0.97)
        self.error = LOOP_ERRORS[int(rng.integers(len(LOOP_ERRORS)))]
        self.src = world.src_offset[self.who]

    def extra(self, world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        if not self.active(minute):
            return Columns.empty()
        g0 = (minute - self.first) * MINUTE_MS
        k = np.arange(
            max(0, math.floor((g0 - self.phase) / self.period) - 1),
            math.ceil((g0 + MINUTE_MS - self.phase) / self.period) + 1,
        )
        # A loop with a fixed sleep: steady period, jitter a pure function of the call number.
        jitter = ((k * 2654435761) % 2**32) / 2**32 - 0.5
        t = self.phase + (k + 0.3 * jitter) * self.period
        t = t[(t >= g0) & (t < g0 + MINUTE_MS)]
        n = t.size
        failed = rng.random(n) < self.error_share
        other = rng.choice(len(ERROR_NAMES), n, p=ERROR_P)
        err = np.where(failed, np.where(rng.random(n) < 0.9, self.error, other), -1)
        tout = np.where(failed, 0, rng.integers(5, 40, n))
        model = f.model[np.full(n, self.who)]
        fail_ms = rng.lognormal(math.log(90), 0.4, n)
        lat = np.where(
            failed, fail_ms, (150 + tout * MS_PER_TOKEN[model]) * rng.lognormal(0, 0.3, n)
        )
        return Columns.of(
            who=np.full(n, self.who), off=np.floor(t - g0), tin=np.full(n, self.tokens_in),
            tout=tout, model=model, err=err, lat=np.rint(lat), fp=np.full(n, self.fp),
            src=np.full(n, self.src),
        )  # fmt: skip


class SlowRamp(Spec):
    """The rate grows geometrically from 1x to 4-8x over the window: ~2 % a minute."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        self.peak = rng.uniform(4, 8)

    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            factor = self.peak ** ((minute - self.first + 0.5) / (self.end - self.first))
            f.rate[self.who] *= factor
            f.boost[self.who] *= factor


class AgentChain(Spec):
    """Traces of the entry agent A looping A -> B [-> C] -> A ..., 8-20 deep, one fan-out."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        g = world.graph
        agents = [int(i) for i in np.flatnonzero(g.level >= 0) if i != self.who]
        calm = [i for i in agents if i not in world.incident_index] or agents
        callees = [int(d) for d in g.dst[g.src == self.who] if int(d) in calm]
        b = int(rng.choice(callees or calm))
        others = [i for i in calm if i != b]
        cycle = [self.who, b]
        if others and rng.random() < 0.6:
            cycle.append(int(rng.choice(others)))
        self.cycle = cycle
        self.bystanders = tuple(cycle[1:])
        self.traces_per_minute = rng.uniform(2, 4)
        # Each hop passes the conversation on (prompts grow with depth); size the growth so
        # that even the smallest loop (8 deep, 20 fanned out) costs CHAIN_COST x a normal trace.
        depth, fan = 8, 20
        members = [cycle[p % len(cycle)] for p in range(depth)] + [self.who] * fan
        context = np.concatenate([1 + 0.3 * np.arange(depth), np.ones(fan)])
        prompt = sum(world.cost_parts(m)[0] * c for m, c in zip(members, context, strict=True))
        answer = sum(world.cost_parts(m)[1] for m in members)
        target = CHAIN_COST * world.expected_trace_cost(self.who)
        self.growth = max(1.0, (target - answer) / prompt)

    def extra(self, world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        if not self.active(minute):
            return Columns.empty()
        parts = [
            self._trace(world, rng, f) for _ in range(int(rng.poisson(self.traces_per_minute)))
        ]
        return Columns.concat(parts)

    def _trace(self, world: World, rng: np.random.Generator, f: Factors) -> Columns:
        depth, cycle = int(rng.integers(8, 21)), self.cycle
        fan_at = len(cycle) * int(rng.integers(0, (depth - 1) // len(cycle) + 1))  # a span of A
        fan = int(rng.integers(20, 41))
        who = [cycle[p % len(cycle)] for p in range(depth)] + [self.who] * fan
        parent = [p - 1 for p in range(depth)] + [fan_at] * fan
        hops = np.concatenate([[0.0], np.cumsum(rng.lognormal(math.log(700), 0.4, depth - 1))])
        rel = np.concatenate([hops, hops[fan_at] + rng.uniform(20, 1500, fan)])
        context = np.concatenate([1 + 0.3 * np.arange(depth), np.full(fan, 1 + 0.3 * fan_at)])
        context = np.minimum(context * self.growth, MAX_PROMPT_TOKENS / world.in_med[who])
        start = rng.random() * max(0.0, MINUTE_MS - 1 - rel.max())
        off = np.minimum(MINUTE_MS - 1, np.floor(start + rel))
        ids = rng.bytes(16 + 8 * len(who)).hex()
        trace_id, spans = ids[:32], [ids[32 + 16 * k : 48 + 16 * k] for k in range(len(who))]
        traces: list[SpanContext | None] = [
            (trace_id, spans[k], None, world.callers[self.who])
            if parent[k] < 0
            else (trace_id, spans[k], spans[parent[k]], world.names[who[parent[k]]])
            for k in range(len(who))
        ]
        return world.ordinary(rng, np.array(who), off, f, in_scale=context, traces=traces)


class BudgetBurn(Spec):
    """Spend several times the usual (bigger prompts, a few more calls) until over budget."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        i = self.who
        # Spend factor that crosses the budget BUDGET_CROSSING into the window (expected).
        per_minute = world.expected_spend_per_minute(i)
        day = world.minute_day
        in_day = day == day[self.first]
        before = per_minute[(np.arange(day.size) < self.first) & in_day].sum()
        during = per_minute[self.first : self.end][in_day[self.first : self.end]].sum()
        budget = world.budget_of(i)
        spend = max(3.0, (budget - before) / (BUDGET_CROSSING * max(during, 1e-12)))
        # Split it into more calls, longer answers and (mostly) bigger prompts.
        a = world.in_med[i] * PRICE_IN[world.base_model[i]]
        b = world.out_med[i] * PRICE_OUT[world.base_model[i]] * (1 - ERROR_RATE)
        self.rate, self.tok_out = 1.5, 2.0
        per_call = spend / self.rate
        self.tok_in = max(1.0, (per_call * (a + b) - self.tok_out * b) / a)
        if world.in_med[i] * self.tok_in > MAX_PROMPT_TOKENS:
            self.tok_in = MAX_PROMPT_TOKENS / world.in_med[i]
            self.rate = spend * (a + b) / (self.tok_in * a + self.tok_out * b)
        self.spend_factor = spend

    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            f.rate[self.who] *= self.rate
            f.boost[self.who] *= self.rate
            f.tok_in[self.who] *= self.tok_in
            f.tok_out[self.who] *= self.tok_out
