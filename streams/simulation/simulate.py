"""Synthetic LLM metering traffic with labelled incidents.

Pure: no Kafka, no files, no wall clock. Every random draw comes from a generator derived from
(cfg.seed, stream[, minute]), so the same SimConfig always yields the same events and one
minute's traffic does not depend on how many events earlier minutes happened to draw.

Two worlds share this module. The classic one (only `runaway_agent` incidents, no traps) is
what the demo streams; its events never change. The evaluation world (`SimConfig.enriched`:
traps on, or any other incident kind) adds credentials and sources, an agent call graph with
trace context, realistic traps and the other incident kinds; it lives in
streams/simulation/incidents.py and is imported only when used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Independent random streams: adding draws to one never shifts another.
_IDENTITIES, _INCIDENTS, _TRAFFIC = 1, 2, 3

# model: (provider, USD per 1M input tokens, USD per 1M output tokens, ms per output token, share)
# A share of 0: nobody's usual model in the classic world (premium tiers, see sim_incidents).
MODELS: dict[str, tuple[str, float, float, float, float]] = {
    "gpt-4o": ("openai", 2.50, 10.00, 12.0, 0.25),
    "gpt-4o-mini": ("openai", 0.15, 0.60, 7.0, 0.30),
    "claude-sonnet-4-20250514": ("anthropic", 3.00, 15.00, 14.0, 0.20),
    "claude-3-5-haiku-20241022": ("anthropic", 0.80, 4.00, 8.0, 0.15),
    "gemini-2.0-flash": ("google", 0.10, 0.40, 5.0, 0.10),
    "claude-opus-4": ("anthropic", 15.00, 75.00, 25.0, 0.0),
    "gemini-2.5-pro": ("google", 1.25, 10.00, 10.0, 0.0),
}
CATEGORIES = {"svc": 0.35, "agent": 0.25, "ci": 0.15, "key": 0.25}
WORKLOADS = {"svc": "api", "agent": "assistant", "ci": "pipeline", "key": "integration"}
TEAMS = ("billing", "support", "search", "growth", "platform", "data", "risk", "security")
CI_JOBS = ("deploy", "eval", "nightly", "test", "index")
ENVIRONMENTS = {"prod": 0.80, "staging": 0.15, "test": 0.05}
ERROR_TYPES = {"rate_limit": 0.40, "timeout": 0.25, "server_error": 0.25, "invalid_request": 0.10}
ERROR_RATE = 0.01
DIURNAL_AMPLITUDE = 0.5  # (1 + a) / (1 - a) = 3: peak/trough ratio of the daily rhythm
DIURNAL_PEAK_HOUR_UTC = 15.0
BATCH_BURST_MINUTES = 2  # hourly batch jobs do (almost) all their calls in these minutes
BATCH_QUIET_SHARE = 0.02  # ... and trickle the rest of the hour
TRACED_AGENT_SHARE = 0.6  # agent calls carrying trace context and their caller


@dataclass(frozen=True)
class IncidentEffect:
    """What an incident does to its identity's traffic while it lasts."""

    rate_factor: float  # calls per minute multiplied by this
    token_factor: float  # input and output tokens per call multiplied by this
    repeat_share: float  # share of calls repeating one request (same fingerprint)


ALL_INCIDENT_KINDS: tuple[str, ...] = (
    "runaway_agent",  # an agent calling 30x its usual rate, bigger prompts, repeating itself
    "retry_loop",  # one request fingerprint hammered steadily, mostly failing
    "slow_ramp",  # a leaked key used a little more every hour (1x -> 4-8x)
    "agent_chain",  # agents calling agents in a cycle: deep traces, fan-out, new edges
    "drift_model",  # same rate, a much pricier model tier
    "drift_workload",  # the credential used by a new workload from a new source
    "offboarded",  # an identity offboarded before the run calls again
    "budget_burn",  # sustained elevated spend that crosses the daily budget
)

# The uniform scaling of an identity's ordinary traffic while its incident lasts. Only the
# runaway agent is pure scaling; the other kinds are shaped in streams/simulation/incidents.py.
INCIDENT_EFFECTS: dict[str, IncidentEffect] = {
    "runaway_agent": IncidentEffect(rate_factor=30.0, token_factor=2.0, repeat_share=0.6),
    **{kind: IncidentEffect(1.0, 1.0, 0.0) for kind in ALL_INCIDENT_KINDS[1:]},
}
# Kinds that need more than SimConfig.incident_minutes to unfold: their own minimum duration.
MIN_INCIDENT_MINUTES = {"slow_ramp": 90, "budget_burn": 120}
OFFBOARDED_QUIET_MINUTES = 60  # an offboarded identity is silent at least this long before


@dataclass(frozen=True)
class Incident:
    """Ground-truth label: `identity` misbehaves as `kind` during [start, end)."""

    kind: str
    identity: str
    start: datetime
    end: datetime


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    identities: int = 300
    start: datetime  # UTC aware; required so that nothing reads the wall clock
    minutes: int = 240
    seed: int = 7
    incidents: int = 3  # how many incidents to inject
    incident_after_minutes: int = 40  # no incident starts before this: baselines come first
    incident_minutes: int = 15  # duration of each incident
    incident_latest_start: int | None = None  # minute; default: any time that fits the run
    incident_kinds: tuple[str, ...] = ("runaway_agent",)  # assigned round-robin
    # Normal behaviour that must not alert (cold starts, backoff retries, deploy traffic
    # shifts, premium-model users, quiet offboarded identities); batch bursts, the daily
    # rhythm and the agent call graph are there anyway.
    traps: bool = False
    cold_start_share: float = 0.05  # with traps: identities that first appear mid-run

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("SimConfig.start must be timezone-aware")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.identities < 1 or self.minutes < 1 or self.seed < 0 or self.incidents < 0:
            raise ValueError("identities and minutes must be >= 1, seed and incidents >= 0")
        if not 0.0 <= self.cold_start_share < 1.0:
            raise ValueError("cold_start_share must be in [0, 1)")
        kinds = self.incident_kinds
        for kind in dict.fromkeys(kinds[i % len(kinds)] for i in range(self.incidents)):
            if incident_earliest_start(self, kind) + incident_duration(self, kind) > self.minutes:
                detail = "" if kind == "runaway_agent" else f" ({kind} needs"
                if detail:
                    need = incident_earliest_start(self, kind) + incident_duration(self, kind)
                    detail += f" {need} minutes)"
                raise ValueError(
                    f"no room for an incident: raise minutes or lower incident_*{detail}"
                )
        unknown = set(kinds) - set(INCIDENT_EFFECTS)
        if unknown or not kinds:
            raise ValueError(f"unknown incident kinds {sorted(unknown)}")

    @property
    def enriched(self) -> bool:
        """Whether the run uses the evaluation world of streams/simulation/incidents.py.

        False for the classic configuration (runaway_agent only, no traps), whose events are
        kept exactly as they always were.
        """
        return self.traps or any(kind != "runaway_agent" for kind in self.incident_kinds)


def incident_duration(cfg: SimConfig, kind: str) -> int:
    """Minutes an incident of this kind lasts."""
    return max(cfg.incident_minutes, MIN_INCIDENT_MINUTES.get(kind, 0))


def incident_earliest_start(cfg: SimConfig, kind: str) -> int:
    """First run minute an incident of this kind may start."""
    quiet = OFFBOARDED_QUIET_MINUTES if kind == "offboarded" else 0
    return max(cfg.incident_after_minutes, quiet)


@dataclass(frozen=True)
class IdentityProfile:
    """One simulated non-human identity and its normal behaviour."""

    name: str
    category: str  # svc | agent | ci | key
    team: str
    environment: str
    workload: str
    model: str
    rate_per_min: float  # mean calls per minute over a day
    input_median: float  # tokens per call
    output_median: float
    batch: bool  # hourly batch job: a burst at the top of each hour, quiet otherwise
    fingerprints: tuple[str, ...]  # the few distinct requests it sends
    caller: str | None  # agents: the identity that usually triggers them


def _rng(cfg: SimConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *stream])


def _pick(rng: np.random.Generator, weights: dict[str, float], n: int) -> list[str]:
    return rng.choice(list(weights), size=n, p=list(weights.values())).tolist()


def _name(rng: np.random.Generator, category: str, label: str, seen: set[str]) -> str:
    # The number range grows with the population, so a free name always exists.
    upper = 1000 * (1 + len(seen) // 1000)
    while True:
        if category == "key":
            name = f"key-{int(rng.integers(0, 2**48)):012x}"
        else:
            name = f"{category}-{label}-{int(rng.integers(1, upper)):03d}"
        if name not in seen:
            seen.add(name)
            return name


def plan_identities(cfg: SimConfig) -> list[IdentityProfile]:
    """The simulated population, deterministic from cfg."""
    rng, n = _rng(cfg, _IDENTITIES), cfg.identities
    cats = _pick(rng, CATEGORIES, n)
    # Log-normal rates: median 1.5/min, a few heavy at 20-60/min, many light well under 1/min.
    rates = np.clip(rng.lognormal(math.log(1.5), 1.3, n), 0.03, 60.0)
    batch = (np.array(cats) == "ci") & (rng.random(n) < 0.5)
    rates = np.where(batch, np.clip(rates, 0.5, 5.0), rates)  # bursts big enough to see
    # Agents carry long conversation contexts, hence larger prompts.
    in_med = rng.lognormal(math.log(800), 0.8, n) * np.where(np.array(cats) == "agent", 3.0, 1.0)
    out_med = rng.lognormal(math.log(250), 0.7, n)
    teams, jobs = rng.choice(TEAMS, n).tolist(), rng.choice(CI_JOBS, n).tolist()
    labels = [jobs[i] if cats[i] == "ci" else teams[i] for i in range(n)]
    envs = _pick(rng, ENVIRONMENTS, n)
    models = _pick(rng, {m: spec[4] for m, spec in MODELS.items() if spec[4] > 0}, n)
    n_fps = rng.integers(2, 7, n).tolist()
    seen: set[str] = set()
    names = [_name(rng, cats[i], labels[i], seen) for i in range(n)]
    services = [names[i] for i in range(n) if cats[i] == "svc"] or names
    return [
        IdentityProfile(
            name=names[i],
            category=cats[i],
            team=teams[i],
            environment=envs[i],
            workload=f"{labels[i]}-{WORKLOADS[cats[i]]}",
            model=models[i],
            rate_per_min=float(rates[i]),
            input_median=float(in_med[i]),
            output_median=float(out_med[i]),
            batch=bool(batch[i]),
            fingerprints=tuple(rng.bytes(16).hex() for _ in range(n_fps[i])),
            caller=str(rng.choice(services)) if cats[i] == "agent" else None,
        )
        for i in range(n)
    ]


def plan_incidents(cfg: SimConfig) -> list[Incident]:
    """The injected incidents (ground truth), deterministic from cfg, sorted by start."""
    return _incidents_for(cfg, plan_identities(cfg))


def _incidents_for(cfg: SimConfig, profiles: list[IdentityProfile]) -> list[Incident]:
    if not cfg.incidents:
        return []
    rng = _rng(cfg, _INCIDENTS)
    # Ordinary identities busy enough that 30x is unmistakable; agents first, they run away.
    eligible = [p for p in profiles if not p.batch and 2.0 <= p.rate_per_min <= 15.0]
    agents = [p.name for p in eligible if p.category == "agent"]
    others = [p.name for p in eligible if p.category != "agent"]
    chosen = [*rng.permutation(agents).tolist(), *rng.permutation(others).tolist()]
    if len(chosen) < cfg.incidents:
        raise ValueError(f"only {len(chosen)} identities are eligible for an incident")
    kinds = [cfg.incident_kinds[i % len(cfg.incident_kinds)] for i in range(cfg.incidents)]
    lows = [incident_earliest_start(cfg, kind) for kind in kinds]
    highs = []
    for kind, low in zip(kinds, lows, strict=True):
        latest = cfg.minutes - incident_duration(cfg, kind)
        if cfg.incident_latest_start is not None:
            latest = max(low, min(latest, cfg.incident_latest_start))
        highs.append(latest + 1)
    if len(set(lows)) == 1 and len(set(highs)) == 1:  # the classic single-bound draw
        starts = rng.integers(lows[0], highs[0], cfg.incidents).tolist()
    else:
        starts = rng.integers(lows, highs).tolist()
    if not cfg.enriched:
        identities = chosen[: cfg.incidents]
    else:
        from meterguard.streams.simulation.incidents import choose_incident_identities

        identities = choose_incident_identities(cfg, profiles, kinds, chosen, rng)
    incidents = [
        Incident(
            kind=kinds[i],
            identity=identities[i],
            start=cfg.start + timedelta(minutes=starts[i]),
            end=cfg.start + timedelta(minutes=starts[i] + incident_duration(cfg, kinds[i])),
        )
        for i in range(cfg.incidents)
    ]
    return sorted(incidents, key=lambda inc: (inc.start, inc.identity))


class SimPlan:
    """Per-identity numpy columns and per-event string lookups, built once per run."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg, self.profiles = cfg, plan_identities(cfg)
        self.incidents = _incidents_for(cfg, self.profiles)
        start_us = (cfg.start - _EPOCH) // timedelta(microseconds=1)
        self.start_ms = -(-start_us // 1000)  # ceil: no event before cfg.start
        ps = self.profiles
        self.rate = np.array([p.rate_per_min for p in ps])
        self.batch = np.array([p.batch for p in ps])
        self.agent = np.array([p.category == "agent" for p in ps])
        self.in_med = np.array([p.input_median for p in ps])
        self.out_med = np.array([p.output_median for p in ps])
        self.price_in = np.array([MODELS[p.model][1] for p in ps])
        self.price_out = np.array([MODELS[p.model][2] for p in ps])
        self.ms_per_token = np.array([MODELS[p.model][3] for p in ps])
        self.fp_count = np.array([len(p.fingerprints) for p in ps])
        self.fp_offset = np.cumsum(self.fp_count) - self.fp_count
        self.fingerprints = [fp for p in ps for fp in p.fingerprints]
        self.callers = [p.caller for p in ps]
        self.static = [
            {
                "identity": p.name,
                "kind": "llm.call",
                "team": p.team,
                "environment": p.environment,
                "workload": p.workload,
                "model": p.model,
                "provider": MODELS[p.model][0],
            }
            for p in ps
        ]
        index, minute = {p.name: i for i, p in enumerate(ps)}, timedelta(minutes=1)
        self.windows = [  # (identity index, first minute, end minute, effect)
            (
                index[inc.identity],
                (inc.start - cfg.start) // minute,
                (inc.end - cfg.start) // minute,
                INCIDENT_EFFECTS[inc.kind],
            )
            for inc in self.incidents
        ]
        self.world: Any = None  # sim_incidents.World for enriched runs
        if cfg.enriched:
            from meterguard.streams.simulation.incidents import World

            self.world = World(self)

    def effects(self, minute: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-identity (rate factor, token factor, repeat share) during this minute."""
        n = self.rate.size
        rate_f, tok_f, repeat = np.ones(n), np.ones(n), np.zeros(n)
        for i, first, end, effect in self.windows:
            if first <= minute < end:
                rate_f[i] *= effect.rate_factor
                tok_f[i] *= effect.token_factor
                repeat[i] = max(repeat[i], effect.repeat_share)
        return rate_f, tok_f, repeat

    def shape(self, t0_ms: int) -> np.ndarray:
        """Per-identity rate multiplier at this minute: daily rhythm, or the hourly batch."""
        hour = (t0_ms / 3_600_000) % 24
        phase = 2 * math.pi * (hour - DIURNAL_PEAK_HOUR_UTC + 6) / 24  # sin peaks at the peak hour
        diurnal = 1 + DIURNAL_AMPLITUDE * math.sin(phase)
        in_burst = (t0_ms // MINUTE_MS) % 60 < BATCH_BURST_MINUTES
        # Keep the batch job's hourly mean at its base rate.
        burst = 60 * (1 - BATCH_QUIET_SHARE) / BATCH_BURST_MINUTES
        return np.where(self.batch, burst if in_burst else BATCH_QUIET_SHARE, diurnal)


def _format_times(epoch_ms: np.ndarray) -> list[str]:
    """RFC 3339 UTC with milliseconds and Z; one strftime per wall minute, not per event."""
    prefixes: dict[int, str] = {}
    out = []
    for t in epoch_ms.tolist():
        wall_minute, rem = divmod(t, MINUTE_MS)
        prefix = prefixes.get(wall_minute)
        if prefix is None:
            moment = _EPOCH + timedelta(minutes=wall_minute)
            prefix = prefixes[wall_minute] = moment.strftime("%Y-%m-%dT%H:%M:")
        out.append(f"{prefix}{rem // 1000:02d}.{rem % 1000:03d}Z")
    return out


def _trace_ids(rng: np.random.Generator, count: int) -> list[tuple[str, str, str]]:
    """(trace_id, span_id, parent_span_id) hex triples, drawn in one call for speed."""
    blob = rng.bytes(32 * count).hex()
    return [
        (blob[k : k + 32], blob[k + 32 : k + 48], blob[k + 48 : k + 64])
        for k in range(0, 64 * count, 64)
    ]


@dataclass(frozen=True)
class BaseCalls:
    """Numpy columns of one minute's ordinary (Poisson) traffic, sorted by offset."""

    who: np.ndarray  # identity index
    offsets: np.ndarray  # ms into the minute
    error: np.ndarray  # bool
    tok_in: np.ndarray
    tok_out: np.ndarray
    latency_noise: np.ndarray  # multiplies (150 + output tokens * ms per token)
    fp: np.ndarray  # index into SimPlan.fingerprints
    traced: np.ndarray  # bool: carries trace context
    error_types: list[str]  # one per error, in event order
    rng: np.random.Generator  # the minute's traffic stream, for any draw after these


def _base_calls(
    plan: SimPlan,
    minute: int,
    rate_f: np.ndarray,
    tok_in_f: np.ndarray,
    tok_out_f: np.ndarray,
    repeat: np.ndarray,
) -> BaseCalls:
    """The ordinary traffic of one run minute; the draw order is fixed (classic output)."""
    rng = _rng(plan.cfg, _TRAFFIC, minute)
    t0 = plan.start_ms + minute * MINUTE_MS
    counts = rng.poisson(plan.rate * plan.shape(t0) * rate_f)
    offsets = rng.integers(0, MINUTE_MS, int(counts.sum()))
    order = np.argsort(offsets, kind="stable")
    who, offsets = np.repeat(np.arange(counts.size), counts)[order], offsets[order]
    n = who.size
    error = rng.random(n) < ERROR_RATE
    tok_in = np.maximum(1, np.rint(plan.in_med[who] * tok_in_f[who] * rng.lognormal(0, 0.5, n)))
    tok_out = np.maximum(1, np.rint(plan.out_med[who] * tok_out_f[who] * rng.lognormal(0, 0.5, n)))
    tok_out = np.where(error, 0, tok_out)  # a failed call generates nothing
    noise = rng.lognormal(0, 0.3, n)
    pick = (rng.random(n) * plan.fp_count[who]).astype(np.int64)
    pick = np.where(rng.random(n) < repeat[who], 0, pick)  # a runaway loop repeats itself
    traced = plan.agent[who] & (rng.random(n) < TRACED_AGENT_SHARE)
    error_types = _pick(rng, ERROR_TYPES, int(error.sum()))
    return BaseCalls(
        who, offsets, error, tok_in, tok_out, noise, plan.fp_offset[who] + pick, traced,
        error_types, rng,
    )  # fmt: skip


def _draw(plan: SimPlan, minute: int) -> dict[str, Any]:
    """Per-event columns (Python lists) of one classic run minute, sorted by time."""
    rate_f, tok_f, repeat = plan.effects(minute)
    calls = _base_calls(plan, minute, rate_f, tok_f, tok_f, repeat)
    who, tok_in, tok_out = calls.who, calls.tok_in, calls.tok_out
    cost = (tok_in * plan.price_in[who] + tok_out * plan.price_out[who]) / 1e6
    latency = (150 + tok_out * plan.ms_per_token[who]) * calls.latency_noise
    return {
        "who": who.tolist(),
        "time": _format_times(plan.start_ms + minute * MINUTE_MS + calls.offsets),
        "in": tok_in.astype(np.int64).tolist(),
        "out": tok_out.astype(np.int64).tolist(),
        "cost": np.round(cost, 8).tolist(),
        "latency": np.rint(latency).astype(np.int64).tolist(),
        "error": calls.error.tolist(),
        "traced": calls.traced.tolist(),
        "fp": calls.fp.tolist(),
        "error_types": iter(calls.error_types),
        "trace_ids": iter(_trace_ids(calls.rng, int(calls.traced.sum()))),
    }


def generate_minute(plan: SimPlan, minute: int, first_seq: int) -> list[dict[str, Any]]:
    """The events of run minute `minute`, sorted by event_time, ids counted from first_seq."""
    if plan.world is not None:
        return plan.world.minute_events(minute, first_seq)
    col = _draw(plan, minute)
    prefix = f"sim{plan.cfg.seed}-"
    events = []
    for k, i in enumerate(col["who"]):
        failed = col["error"][k]
        event = {
            "event_id": f"{prefix}{first_seq + k:09d}",
            **plan.static[i],
            "event_time": col["time"][k],
            "input_tokens": col["in"][k],
            "output_tokens": col["out"][k],
            "cost_usd": col["cost"][k],
            "status": "error" if failed else "ok",
            "latency_ms": col["latency"][k],
            "request_fingerprint": plan.fingerprints[col["fp"][k]],
        }
        if failed:
            event["error_type"] = next(col["error_types"])
        if col["traced"][k]:
            event["trace_id"], event["span_id"], event["parent_span_id"] = next(col["trace_ids"])
            if plan.callers[i]:
                event["caller_identity"] = plan.callers[i]
        events.append(event)
    return events


def generate(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """All events of the run, lazily, in non-decreasing event_time order."""
    plan = SimPlan(cfg)
    seq = 0
    for minute in range(cfg.minutes):
        events = generate_minute(plan, minute, seq)
        seq += len(events)
        yield from events


def offboarded_identities(cfg: SimConfig) -> list[str]:
    """Identities the policy should list as offboarded (sorted); none in the classic world."""
    world = SimPlan(cfg).world
    return world.offboarded_identities() if world is not None else []


def budgets(cfg: SimConfig) -> dict[str, float]:
    """Daily USD budget per identity: 3x its expected spend in a UTC day of this run.

    Computed from the profiles (rate, token sizes, model prices, daily rhythm), not from the
    random draw. Only the part of a day the run covers counts, as the pipeline's windows
    start empty: normal identities end the day near a third of their budget, a budget_burn
    incident crosses it about two thirds of the way through its window.
    """
    from meterguard.streams.simulation.incidents import budgets_for

    return budgets_for(SimPlan(cfg))


def incident_bystanders(cfg: SimConfig) -> dict[Incident, tuple[str, ...]]:
    """Identities other than the labelled one whose traffic an incident also changes.

    Only agent_chain has any: the other agents of the cycle. Alerts on them during the
    incident are consequences of it, not false alerts of a normal identity.
    """
    world = SimPlan(cfg).world
    return world.bystanders() if world is not None else {}
