"""The simulator's evaluation world: attribution, an agent call graph, traps, incident kinds.

simulation.simulate uses this module when `SimConfig.enriched` is true (traps on, or any incident
kind besides runaway_agent); the classic runaway-only run never touches it. On top of the
classic traffic, every event here carries `credential_id` and `source`, and agents' traced
calls are real traces: a root span and the child spans of a stable caller -> callee graph
(depth 2-4). Incidents are shaped per kind by a `Spec`; the traps are normal behaviour that
must not alert.

Determinism as in simulate: plan-time draws come from their own streams, per-minute draws from
(seed, _EXTRA, minute) after the classic traffic's own stream, so a minute rebuilt on its own
matches the full run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from meterguard.streams.simulation.simulate import (
    BATCH_BURST_MINUTES,
    BATCH_QUIET_SHARE,
    DIURNAL_AMPLITUDE,
    DIURNAL_PEAK_HOUR_UTC,
    ERROR_RATE,
    ERROR_TYPES,
    INCIDENT_EFFECTS,
    MINUTE_MS,
    MODELS,
    TEAMS,
    TRACED_AGENT_SHARE,
    IdentityProfile,
    Incident,
    SimConfig,
    _base_calls,
    _format_times,
    _rng,
)

if TYPE_CHECKING:
    from meterguard.streams.simulation.simulate import SimPlan

_GRAPH, _WORLD, _SPECS, _EXTRA = 4, 5, 6, 7  # random streams after simulate's 1-3

SpanContext = tuple[str, str, str | None, str | None]  # trace, span, parent span, caller

MODEL_NAMES = tuple(MODELS)
MODEL_INDEX = {name: k for k, name in enumerate(MODEL_NAMES)}
PROVIDERS = [spec[0] for spec in MODELS.values()]
PRICE_IN = np.array([spec[1] for spec in MODELS.values()])
PRICE_OUT = np.array([spec[2] for spec in MODELS.values()])
MS_PER_TOKEN = np.array([spec[3] for spec in MODELS.values()])
# drift_model: the much pricier tier a developer switches to (3.75x to 25x per token).
PRICIER_TIER = {
    "gpt-4o-mini": "gpt-4o",
    "gpt-4o": "claude-opus-4",
    "claude-3-5-haiku-20241022": "claude-sonnet-4-20250514",
    "claude-sonnet-4-20250514": "claude-opus-4",
    "gemini-2.0-flash": "gemini-2.5-pro",
}
PREMIUM_MODELS = ("claude-opus-4", "gemini-2.5-pro")
ERROR_NAMES = tuple(ERROR_TYPES)
ERROR_P = np.array(list(ERROR_TYPES.values()))
RETRYABLE = tuple(ERROR_NAMES.index(e) for e in ("rate_limit", "server_error", "timeout"))
LOOP_ERRORS = tuple(ERROR_NAMES.index(e) for e in ("rate_limit", "server_error", "invalid_request"))
LOGNORMAL_MEAN = math.exp(0.5**2 / 2)  # mean of the per-call token noise lognormal(0, 0.5)

BUDGET_HEADROOM = 3.0  # daily budget = this x expected spend in a UTC day of the run
BUDGET_CROSSING = 0.65  # a budget_burn crosses its budget this far into its window
MAX_PROMPT_TOKENS = 100_000  # budget_burn prompts grow up to a median of this

CHAIN_COST = 15.0  # an agent_chain loop trace costs at least this x the root's normal trace
MAX_INCOMING_SHARE = 0.25  # incident identities: child spans at most this x their own calls
MAX_INCIDENT_RATE = 15.0  # ... and at most this many calls per minute in all
MAX_TRACE_DEPTH = 4  # normal call graph: entry agents (level 0) down to level 3
HOP_DELAY_MS = 1500.0  # median delay between a span and its child
BACKOFF_SHARE = 0.004  # traps: calls that fail and are retried with exponential backoff
BACKOFF_GAPS_MS = 1000 * 2 ** np.arange(5)  # 1, 2, 4, 8, 16 s
DEPLOY_SHARE, DEPLOY_RAMP, DEPLOY_HOLD = 0.02, 10, 60  # traps: traffic doubles for an hour
DEPLOY_MIN_RATE = 1.0  # ... on identities busy enough for it to show
PREMIUM_SHARE = 0.02  # traps: identities whose usual model is a premium tier
DECOY_SHARE = 0.01  # traps: offboarded identities that stay quiet
CI_RUNNERS = 40
NEW_WORKLOADS = ("notebook", "scraper", "backfill", "sandbox", "eval", "prototype")


@dataclass
class Factors:
    """Per-identity knobs of one minute (numpy arrays indexed by identity)."""

    rate: np.ndarray  # calls per minute multiplied by this
    boost: np.ndarray  # the part of `rate` due to incidents (not normal traffic)
    tok_in: np.ndarray
    tok_out: np.ndarray
    repeat: np.ndarray
    model: np.ndarray  # model index of the identity's ordinary calls


# -- the agent call graph ------------------------------------------------------------------------


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
    rng, n = _rng(cfg, _GRAPH), len(profiles)
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


def choose_incident_identities(
    cfg: SimConfig,
    profiles: list[IdentityProfile],
    kinds: list[str],
    chosen: list[str],
    rng: np.random.Generator,
) -> list[str]:
    """One distinct identity per incident, from the eligible `chosen` (agents first).

    Agents that other agents call also carry child spans: only those whose traffic is still
    mostly their own stay eligible (an incident scales the identity's own calls). Then
    runaway_agent keeps the classic agents-first order; agent_chain needs an entry agent of
    the call graph; offboarded a non-agent nobody depends on; the others any eligible
    identity in a fresh shuffle (so they land on every category).
    """
    index = {p.name: i for i, p in enumerate(profiles)}
    mixed = rng.permutation(chosen).tolist()
    graph = build_call_graph(cfg, profiles)
    own = np.array([p.rate_per_min for p in profiles])
    incoming = incoming_span_rate(graph, own)
    mostly_own = (incoming <= MAX_INCOMING_SHARE * own) & (own + incoming <= MAX_INCIDENT_RATE)
    chosen = [c for c in chosen if mostly_own[index[c]]]
    mixed = [c for c in mixed if mostly_own[index[c]]]
    roots = graph.roots
    # A chain does not scale the root's own calls: quieter entry agents will do as well.
    quieter = sorted(profiles[i].name for i in roots if 0.5 <= own[i] < 2.0)
    callers = {p.caller for p in profiles if p.caller}
    pools = {
        "runaway_agent": chosen,
        "agent_chain": [c for c in chosen if index[c] in roots] + quieter,
        "offboarded": [
            c for c in mixed if profiles[index[c]].category != "agent" and c not in callers
        ],
    }
    used: set[str] = set()
    out = []
    for kind in kinds:
        pick = next((c for c in pools.get(kind, mixed) if c not in used), None)
        if pick is None:
            raise ValueError(f"no identity left that is eligible for an incident of kind {kind}")
        used.add(pick)
        out.append(pick)
    return out


# -- incident kinds ------------------------------------------------------------------------------


class Spec:
    """One planned incident: identity index, run-minute window [first, end), kind's knobs."""

    bystanders: tuple[int, ...] = ()

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        self.incident = incident
        self.who = world.index[incident.identity]
        self.first = world.run_minute(incident.start)
        self.end = world.run_minute(incident.end)

    def active(self, minute: int) -> bool:
        return self.first <= minute < self.end

    def scale(self, minute: int, f: Factors) -> None:
        """Adjust the minute's per-identity factors (called for every minute)."""

    def extra(self, world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        """Calls added to the ordinary traffic this minute."""
        return Columns.empty()


class RunawayAgent(Spec):
    # The classic effect (SimPlan.effects) already scales rate, tokens and repeats.
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


class DriftModel(Spec):
    """Same calls, same rate, on a much pricier model tier."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        usual = MODEL_NAMES[world.base_model[self.who]]
        self.model = MODEL_INDEX[PRICIER_TIER.get(usual, "claude-opus-4")]

    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            f.model[self.who] = self.model


class DriftWorkload(Spec):
    """The identity's credential also used by a new workload from a new source."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        profile = world.profiles[self.who]
        self.share = rng.uniform(0.6, 1.2)  # of the identity's own rate
        self.in_scale = rng.uniform(0.5, 2.5)
        workloads = sorted({p.workload for p in world.profiles} - {profile.workload})
        if workloads and rng.random() < 0.5:
            workload = str(rng.choice(workloads))  # a workload that exists, just not here
        else:
            workload = f"{rng.choice(TEAMS)}-{rng.choice(NEW_WORKLOADS)}"
        self.workload = world.add_workload(workload)
        own = set(world.sources_of(self.who))
        while (source := world.random_source(rng, str(rng.choice(["ext", "ci", "int"])))) in own:
            pass
        self.src = world.add_source(source)
        self.fps = np.array(world.new_fingerprints(rng, int(rng.integers(2, 5))))

    def extra(self, world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        if not self.active(minute):
            return Columns.empty()
        shape = world.plan.shape(world.plan.start_ms + minute * MINUTE_MS)[self.who]
        n = int(rng.poisson(world.plan.rate[self.who] * shape * self.share))
        who = np.full(n, self.who)
        return world.ordinary(
            rng, who, rng.integers(0, MINUTE_MS, n), f, in_scale=self.in_scale,
            fp=self.fps[rng.integers(0, self.fps.size, n)], src=np.full(n, self.src),
            wl=np.full(n, self.workload),
        )  # fmt: skip


class Offboarded(Spec):
    """Silent from the run start (offboarded before it), calls again during the window."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        self.factor = rng.uniform(0.3, 1.0)

    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            f.rate[self.who] *= self.factor
            f.boost[self.who] *= self.factor
        else:
            f.rate[self.who] = 0.0


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


SPECS: dict[str, type[Spec]] = {
    "runaway_agent": RunawayAgent,
    "retry_loop": RetryLoop,
    "slow_ramp": SlowRamp,
    "agent_chain": AgentChain,
    "drift_model": DriftModel,
    "drift_workload": DriftWorkload,
    "offboarded": Offboarded,
    "budget_burn": BudgetBurn,
}


# -- per-event columns ---------------------------------------------------------------------------


@dataclass
class Columns:
    """Calls as numpy columns, plus their trace context (a tuple per traced call)."""

    who: np.ndarray
    off: np.ndarray  # ms into the minute
    tin: np.ndarray
    tout: np.ndarray
    model: np.ndarray  # model index
    err: np.ndarray  # ERROR_NAMES index, -1 for ok
    lat: np.ndarray  # ms
    fp: np.ndarray  # World.fingerprints index
    src: np.ndarray  # World.sources index
    wl: np.ndarray  # World.workloads index, -1 for the identity's own
    trace: list[SpanContext | None]

    NAMES = ("who", "off", "tin", "tout", "model", "err", "lat", "fp", "src", "wl")

    @classmethod
    def of(
        cls,
        traces: list[SpanContext | None] | None = None,
        wl: np.ndarray | None = None,
        **cols: np.ndarray,
    ) -> Columns:
        n = cols["who"].size
        ints = {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}
        wl_col = np.full(n, -1, dtype=np.int64) if wl is None else np.asarray(wl, dtype=np.int64)
        return cls(**ints, wl=wl_col, trace=traces if traces is not None else [None] * n)

    @classmethod
    def empty(cls) -> Columns:
        z = np.zeros(0, dtype=np.int64)
        return cls.of(who=z, off=z, tin=z, tout=z, model=z, err=z, lat=z, fp=z, src=z)

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        if not parts:
            return cls.empty()
        cols = {k: np.concatenate([getattr(p, k) for p in parts]) for k in cls.NAMES}
        return cls(**cols, trace=[t for p in parts for t in p.trace])


# -- the world -----------------------------------------------------------------------------------


class World:
    """Everything the evaluation world adds to a SimPlan, built once per run."""

    def __init__(self, plan: SimPlan) -> None:
        self.plan, cfg = plan, plan.cfg
        self.cfg, self.profiles = cfg, plan.profiles
        self.names = [p.name for p in self.profiles]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.callers = [p.caller for p in self.profiles]
        self.in_med, self.out_med = plan.in_med, plan.out_med
        self.base_model = np.array([MODEL_INDEX[p.model] for p in self.profiles])
        self.graph = build_call_graph(cfg, self.profiles)
        self._attribution(_rng(cfg, _WORLD, 0))
        self.incident_index = {self.index[inc.identity] for inc in plan.incidents}
        self._traps(_rng(cfg, _WORLD, 1))
        self.incoming_rate = incoming_span_rate(self.graph, self.plan.rate)
        minutes = np.arange(cfg.minutes)
        self.minute_day = (plan.start_ms + minutes * MINUTE_MS) // 86_400_000
        self.specs = [
            SPECS[inc.kind](self, inc, _rng(cfg, _SPECS, k)) for k, inc in enumerate(plan.incidents)
        ]
        self.static = [
            {
                "identity": p.name,
                "kind": "llm.call",
                "team": p.team,
                "environment": p.environment,
                "workload": p.workload,
                "model": MODEL_NAMES[self.base_model[i]],
                "provider": PROVIDERS[self.base_model[i]],
                "credential_id": self.credentials[i],
                "source": "",  # set per call: one of the identity's sources
            }
            for i, p in enumerate(self.profiles)
        ]

    # plan-time pieces

    def _attribution(self, rng: np.random.Generator) -> None:
        n = len(self.profiles)
        blob = rng.bytes(6 * n).hex()
        self.credentials = [f"cred-{blob[12 * i : 12 * i + 12]}" for i in range(n)]
        family = {"ci": "ci", "key": "partner"}
        self.sources: list[str] = []
        offsets, counts = [], []
        for p in self.profiles:
            own = dict.fromkeys(
                self.random_source(rng, family.get(p.category, "int"))
                for _ in range(int(rng.integers(1, 4)))
            )
            offsets.append(len(self.sources))
            counts.append(len(own))
            self.sources.extend(own)
        self._source_index = {s: k for k, s in enumerate(self.sources)}
        self.src_offset, self.src_count = np.array(offsets), np.array(counts)
        self.fingerprints = list(self.plan.fingerprints)
        self.fp_offset, self.fp_count = self.plan.fp_offset, self.plan.fp_count
        self.workloads: list[str] = []

    def _traps(self, rng: np.random.Generator) -> None:
        cfg, n = self.cfg, len(self.profiles)
        self.first_minute = np.zeros(n, dtype=np.int64)
        self.quiet = np.zeros(n, dtype=bool)  # offboarded decoys: listed, never call
        self.deploys: list[tuple[int, int]] = []  # (identity, first minute of the ramp)
        if not cfg.traps:
            return
        # Agents stay out: callees would be called before they exist, roots' traces shift.
        busy = self.incident_index | {int(i) for i in np.flatnonzero(self.graph.level >= 0)}
        busy |= {self.index[c] for c in self.callers if c}
        free = [i for i in rng.permutation(n).tolist() if i not in busy]
        n_cold = round(cfg.cold_start_share * n)
        cold, free = free[:n_cold], free[n_cold:]
        lo, hi = max(1, cfg.minutes // 10), max(2, 7 * cfg.minutes // 10)
        self.first_minute[cold] = rng.integers(lo, hi, len(cold))
        n_decoy = max(1, round(DECOY_SHARE * n))
        self.quiet[free[:n_decoy]] = True
        free = free[n_decoy:]
        span = 2 * DEPLOY_RAMP + DEPLOY_HOLD
        if cfg.minutes > span:
            busy_enough = [
                i for i in free if self.plan.rate[i] >= DEPLOY_MIN_RATE and not self.plan.batch[i]
            ]
            chosen = busy_enough[: max(1, round(DEPLOY_SHARE * n))]
            starts = rng.integers(0, cfg.minutes - span, len(chosen)).tolist()
            self.deploys = list(zip(chosen, starts, strict=True))
            free = [i for i in free if i not in chosen]
        premium = free[: max(1, round(PREMIUM_SHARE * n))]
        picks = rng.integers(0, len(PREMIUM_MODELS), len(premium))
        self.base_model[premium] = [MODEL_INDEX[PREMIUM_MODELS[k]] for k in picks]

    # helpers for specs

    def run_minute(self, at: Any) -> int:
        return int((at - self.cfg.start).total_seconds() // 60)

    def random_source(self, rng: np.random.Generator, family: str) -> str:
        a, b, c = rng.integers(0, 256, 3).tolist()
        if family == "ci":
            return f"ci-runner-{int(rng.integers(1, CI_RUNNERS + 1)):02d}"
        if family == "partner":
            return f"198.51.100.{c}"
        if family == "ext":
            return f"203.0.113.{c}"
        return f"10.{a}.{b}.{c}"

    def sources_of(self, i: int) -> list[str]:
        return self.sources[self.src_offset[i] : self.src_offset[i] + self.src_count[i]]

    def add_source(self, source: str) -> int:
        if source not in self._source_index:
            self._source_index[source] = len(self.sources)
            self.sources.append(source)
        return self._source_index[source]

    def add_workload(self, workload: str) -> int:
        self.workloads.append(workload)
        return len(self.workloads) - 1

    def new_fingerprints(self, rng: np.random.Generator, count: int) -> list[int]:
        first = len(self.fingerprints)
        self.fingerprints.extend(rng.bytes(16).hex() for _ in range(count))
        return list(range(first, first + count))

    def expected_spend_per_minute(self, i: int) -> np.ndarray:
        """Expected USD per run minute of identity i's normal traffic (no draw involved)."""
        return self.plan_rate(i) * self.cost_per_call(i) * shape_by_minute(self.plan, i)

    def plan_rate(self, i: int) -> float:
        return float(self.plan.rate[i] + self.incoming_rate[i])

    def cost_per_call(self, i: int) -> float:
        return sum(self.cost_parts(i))

    def cost_parts(self, i: int) -> tuple[float, float]:
        """Expected USD of an ordinary call's (prompt, answer)."""
        return expected_cost_parts(self.in_med[i], self.out_med[i], self.base_model[i])

    def expected_trace_cost(self, i: int) -> float:
        """Expected USD of a normal trace rooted at agent i (its span and its subtree)."""
        g = self.graph
        edges = range(g.out_start[i], g.out_start[i] + g.out_count[i])
        below = sum(g.prob[e] * self.expected_trace_cost(int(g.dst[e])) for e in edges)
        return self.cost_per_call(i) + float(below)

    def budget_of(self, i: int) -> float:
        return daily_budget(self.plan, self.plan_rate(i), self.cost_per_call(i), i)

    # queries

    def offboarded_identities(self) -> list[str]:
        names = {self.names[i] for i in np.flatnonzero(self.quiet)}
        names |= {s.incident.identity for s in self.specs if isinstance(s, Offboarded)}
        return sorted(names)

    def bystanders(self) -> dict[Incident, tuple[str, ...]]:
        return {s.incident: tuple(self.names[b] for b in s.bystanders) for s in self.specs}

    # per minute

    def factors(self, minute: int) -> Factors:
        rate_f, tok_f, repeat = self.plan.effects(minute)
        live = (self.first_minute <= minute) & ~self.quiet
        f = Factors(
            rate=rate_f * live, boost=np.ones_like(rate_f), tok_in=tok_f.copy(),
            tok_out=tok_f.copy(), repeat=repeat, model=self.base_model.copy(),
        )  # fmt: skip
        for i, first in self.deploys:  # up over 10 minutes, an hour at 2x, down over 10
            t = minute - first
            f.rate[i] *= (
                1
                + np.clip(t / DEPLOY_RAMP, 0, 1)
                - np.clip((t - DEPLOY_RAMP - DEPLOY_HOLD) / DEPLOY_RAMP, 0, 1)
            )
        for spec in self.specs:
            spec.scale(minute, f)
        return f

    def pick_sources(self, rng: np.random.Generator, who: np.ndarray) -> np.ndarray:
        return self.src_offset[who] + (rng.random(who.size) * self.src_count[who]).astype(np.int64)

    def ordinary(
        self,
        rng: np.random.Generator,
        who: np.ndarray,
        off: np.ndarray,
        f: Factors,
        *,
        in_scale: float | np.ndarray = 1.0,
        fp: np.ndarray | None = None,
        src: np.ndarray | None = None,
        wl: np.ndarray | None = None,
        traces: list[SpanContext | None] | None = None,
    ) -> Columns:
        """Calls of these identities drawn like their ordinary traffic."""
        n = who.size
        failed = rng.random(n) < ERROR_RATE
        noise_in, noise_out = rng.lognormal(0, 0.5, n), rng.lognormal(0, 0.5, n)
        tin = np.maximum(1, np.rint(self.in_med[who] * f.tok_in[who] * in_scale * noise_in))
        tout = np.maximum(1, np.rint(self.out_med[who] * f.tok_out[who] * noise_out))
        tout = np.where(failed, 0, tout)
        model = f.model[who]
        lat = np.rint((150 + tout * MS_PER_TOKEN[model]) * rng.lognormal(0, 0.3, n))
        err = np.where(failed, rng.choice(len(ERROR_NAMES), n, p=ERROR_P), -1)
        if fp is None:
            fp = self.fp_offset[who] + (rng.random(n) * self.fp_count[who]).astype(np.int64)
        return Columns.of(
            who=who, off=off, tin=tin, tout=tout, model=model, err=err, lat=lat, fp=fp,
            src=self.pick_sources(rng, who) if src is None else src, wl=wl, traces=traces,
        )  # fmt: skip

    def _base(self, minute: int, rng: np.random.Generator, f: Factors) -> list[Columns]:
        """The classic Poisson traffic, whose traced agent calls start real traces."""
        calls = _base_calls(self.plan, minute, f.rate, f.tok_in, f.tok_out, f.repeat)
        who, n = calls.who, calls.who.size
        err = np.full(n, -1, dtype=np.int64)
        err[calls.error] = [ERROR_NAMES.index(e) for e in calls.error_types]
        model = f.model[who]
        # Calls added by an incident (runaway, ramp, ...) are not agent executions: only the
        # normal share of the calls starts a trace, so callees see their usual load.
        roots = np.flatnonzero(calls.traced & (rng.random(n) * f.boost[who] < 1.0))
        ids = rng.bytes(24 * roots.size).hex()
        trace_ids = [ids[48 * k : 48 * k + 32] for k in range(roots.size)]
        span_ids = [ids[48 * k + 32 : 48 * k + 48] for k in range(roots.size)]
        traces: list[SpanContext | None] = [None] * n
        for k, r in enumerate(roots.tolist()):
            traces[r] = (trace_ids[k], span_ids[k], None, self.callers[who[r]])
        base = Columns.of(
            who=who, off=calls.offsets, tin=calls.tok_in, tout=calls.tok_out, model=model,
            err=err, lat=np.rint((150 + calls.tok_out * MS_PER_TOKEN[model]) * calls.latency_noise),
            fp=calls.fp, src=self.pick_sources(rng, who), traces=traces,
        )  # fmt: skip
        return [base, self._children(rng, who[roots], calls.offsets[roots], trace_ids, span_ids, f)]

    def _children(
        self,
        rng: np.random.Generator,
        who: np.ndarray,
        off: np.ndarray,
        trace_ids: list[str],
        span_ids: list[str],
        f: Factors,
    ) -> Columns:
        """Child spans of these root spans down the call graph, level by level."""
        g = self.graph
        p_who, p_rel, p_root, p_span = who, np.zeros(who.size), np.arange(who.size), span_ids
        out_who, out_rel, out_root = [], [], []
        out_trace: list[SpanContext | None] = []
        for _ in range(MAX_TRACE_DEPTH - 1):
            counts = g.out_count[p_who]
            total = int(counts.sum())
            if total == 0:
                break
            rep = np.repeat(np.arange(p_who.size), counts)
            edge = (
                g.out_start[p_who][rep]
                + np.arange(total)
                - np.repeat(np.cumsum(counts) - counts, counts)
            )
            keep = rng.random(total) < g.prob[edge]
            rep, edge = rep[keep], edge[keep]
            c_who = g.dst[edge]
            c_rel = p_rel[rep] + rng.lognormal(math.log(HOP_DELAY_MS), 0.5, rep.size)
            ids = rng.bytes(8 * rep.size).hex()
            c_span = [ids[16 * k : 16 * k + 16] for k in range(rep.size)]
            c_root = p_root[rep]
            for k, (r, root) in enumerate(zip(rep.tolist(), c_root.tolist(), strict=True)):
                out_trace.append((trace_ids[root], c_span[k], p_span[r], self.names[p_who[r]]))
            out_who.append(c_who)
            out_rel.append(c_rel)
            out_root.append(c_root)
            p_who, p_rel, p_root, p_span = c_who, c_rel, c_root, c_span
        if not out_trace:
            return Columns.empty()
        c_who, rel, root = (
            np.concatenate(out_who),
            np.concatenate(out_rel),
            np.concatenate(out_root),
        )
        # A trace that starts late in the minute runs faster, so it ends inside the minute.
        longest = np.zeros(who.size)
        np.maximum.at(longest, root, rel)
        room = (MINUTE_MS - 1 - off).astype(float)
        squeeze = np.minimum(1.0, room / np.maximum(longest, 1.0))
        c_off = off[root] + np.floor(rel * squeeze[root])
        return self.ordinary(rng, c_who, c_off, f, traces=out_trace)

    def _backoffs(self, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        """Traps: a failing call retried 2-5 times, gaps 1, 2, 4, 8, 16 s, then success."""
        shape = self.plan.shape(self.plan.start_ms + minute * MINUTE_MS)
        counts = rng.poisson(self.plan.rate * shape * f.rate / f.boost * BACKOFF_SHARE)
        seq_who = np.repeat(np.arange(counts.size), counts)
        s = seq_who.size
        if s == 0:
            return Columns.empty()
        attempts = rng.integers(3, 7, s)
        gaps = BACKOFF_GAPS_MS * rng.uniform(0.9, 1.1, (s, BACKOFF_GAPS_MS.size))
        at = np.concatenate([np.zeros((s, 1)), np.cumsum(gaps, axis=1)], axis=1)
        start = rng.random(s) * (MINUTE_MS - 1 - at[np.arange(s), attempts - 1])
        seq = np.repeat(np.arange(s), attempts)
        j = np.arange(seq.size) - np.repeat(np.cumsum(attempts) - attempts, attempts)
        last = j == attempts[seq] - 1
        who = seq_who[seq]
        tin = np.maximum(
            1, np.rint(self.in_med[seq_who] * f.tok_in[seq_who] * rng.lognormal(0, 0.5, s))
        )
        tout = np.maximum(
            1, np.rint(self.out_med[who] * f.tok_out[who] * rng.lognormal(0, 0.5, who.size))
        )
        tout = np.where(last, tout, 0)
        model = f.model[who]
        fail_ms = rng.lognormal(math.log(400), 0.6, who.size)
        lat = np.where(
            last, (150 + tout * MS_PER_TOKEN[model]) * rng.lognormal(0, 0.3, who.size), fail_ms
        )
        error = np.array(RETRYABLE)[rng.integers(0, len(RETRYABLE), s)]
        fp = self.fp_offset[seq_who] + (rng.random(s) * self.fp_count[seq_who]).astype(np.int64)
        return Columns.of(
            who=who, off=np.floor(start[seq] + at[seq, j]), tin=tin[seq], tout=tout, model=model,
            err=np.where(last, -1, error[seq]), lat=np.rint(lat), fp=fp[seq],
            src=self.pick_sources(rng, seq_who)[seq],
        )  # fmt: skip

    def minute_events(self, minute: int, first_seq: int) -> list[dict[str, Any]]:
        """The events of one run minute, sorted by event_time, ids counted from first_seq."""
        f = self.factors(minute)
        rng = _rng(self.cfg, _EXTRA, minute)
        parts = self._base(minute, rng, f)
        if self.cfg.traps:
            parts.append(self._backoffs(minute, rng, f))
        parts.extend(spec.extra(self, minute, rng, f) for spec in self.specs)
        c = Columns.concat(parts)
        order = np.argsort(c.off, kind="stable")
        return self._events(minute, first_seq, c, order)

    def _events(
        self, minute: int, first_seq: int, c: Columns, order: np.ndarray
    ) -> list[dict[str, Any]]:
        who, model = c.who[order], c.model[order]
        cost = np.round(
            (c.tin[order] * PRICE_IN[model] + c.tout[order] * PRICE_OUT[model]) / 1e6, 8
        )
        times = _format_times(self.plan.start_ms + minute * MINUTE_MS + c.off[order])
        usual = (model == self.base_model[who]).tolist()
        cols = zip(
            who.tolist(), times, c.tin[order].tolist(), c.tout[order].tolist(), cost.tolist(),
            c.err[order].tolist(), c.lat[order].tolist(), c.fp[order].tolist(),
            c.src[order].tolist(), c.wl[order].tolist(), model.tolist(), usual,
            [c.trace[k] for k in order.tolist()], strict=True,
        )  # fmt: skip
        prefix, static, fps, sources = (
            f"sim{self.cfg.seed}-",
            self.static,
            self.fingerprints,
            self.sources,
        )
        events = []
        for k, (i, time, tin, tout, cost_k, err, lat, fp, src, wl, m, same, trace) in enumerate(
            cols
        ):
            event = {
                "event_id": f"{prefix}{first_seq + k:09d}",
                **static[i],
                "event_time": time,
                "input_tokens": tin,
                "output_tokens": tout,
                "cost_usd": cost_k,
                "status": "ok" if err < 0 else "error",
                "latency_ms": lat,
                "request_fingerprint": fps[fp],
            }
            event["source"] = sources[src]
            if not same:
                event["model"], event["provider"] = MODEL_NAMES[m], PROVIDERS[m]
            if wl >= 0:
                event["workload"] = self.workloads[wl]
            if err >= 0:
                event["error_type"] = ERROR_NAMES[err]
            if trace is not None:
                event["trace_id"], event["span_id"], parent, caller = trace
                if parent is not None:
                    event["parent_span_id"] = parent
                if caller is not None:
                    event["caller_identity"] = caller
            events.append(event)
        return events


# -- expected spend and budgets ------------------------------------------------------------------


def expected_cost_parts(in_med: float, out_med: float, model: int) -> tuple[float, float]:
    """Expected USD of an ordinary call's (prompt, answer) given its medians and model."""
    tokens_in, tokens_out = in_med * LOGNORMAL_MEAN, out_med * LOGNORMAL_MEAN * (1 - ERROR_RATE)
    return float(tokens_in * PRICE_IN[model]) / 1e6, float(tokens_out * PRICE_OUT[model]) / 1e6


def _shapes(plan: SimPlan) -> tuple[np.ndarray, np.ndarray]:
    """(daily rhythm, hourly batch) rate multipliers per run minute, as SimPlan.shape."""
    t0 = plan.start_ms + np.arange(plan.cfg.minutes) * MINUTE_MS
    hour = (t0 / 3_600_000) % 24
    diurnal = 1 + DIURNAL_AMPLITUDE * np.sin(2 * np.pi * (hour - DIURNAL_PEAK_HOUR_UTC + 6) / 24)
    burst = 60 * (1 - BATCH_QUIET_SHARE) / BATCH_BURST_MINUTES
    batch = np.where((t0 // MINUTE_MS) % 60 < BATCH_BURST_MINUTES, burst, BATCH_QUIET_SHARE)
    return diurnal, batch


def shape_by_minute(plan: SimPlan, i: int) -> np.ndarray:
    diurnal, batch = _shapes(plan)
    return batch if plan.batch[i] else diurnal


def daily_budget(plan: SimPlan, rate: float, per_call: float, i: int) -> float:
    """BUDGET_HEADROOM x identity i's expected spend in the busiest UTC day of the run."""
    diurnal, batch = _shapes(plan)
    t0 = plan.start_ms + np.arange(plan.cfg.minutes) * MINUTE_MS
    day = t0 // 86_400_000 - t0[0] // 86_400_000
    busiest = np.bincount(day, batch if plan.batch[i] else diurnal).max()
    return BUDGET_HEADROOM * rate * per_call * float(busiest)


def budgets_for(plan: SimPlan) -> dict[str, float]:
    """The daily budget of every identity, from its profile (see simulate.budgets)."""
    world = plan.world
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
