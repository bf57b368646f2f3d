"""Synthetic LLM metering traffic with labelled incidents.

Pure: no Kafka, no files, no wall clock. Every random draw comes from a generator derived from
(cfg.seed, stream[, minute]), so the same SimConfig always yields the same events and one
minute's traffic does not depend on how many events earlier minutes happened to draw.
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
MODELS: dict[str, tuple[str, float, float, float, float]] = {
    "gpt-4o": ("openai", 2.50, 10.00, 12.0, 0.25),
    "gpt-4o-mini": ("openai", 0.15, 0.60, 7.0, 0.30),
    "claude-sonnet-4-20250514": ("anthropic", 3.00, 15.00, 14.0, 0.20),
    "claude-3-5-haiku-20241022": ("anthropic", 0.80, 4.00, 8.0, 0.15),
    "gemini-2.0-flash": ("google", 0.10, 0.40, 5.0, 0.10),
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


# One entry per incident kind: adding a kind is adding a line here.
INCIDENT_EFFECTS: dict[str, IncidentEffect] = {
    "runaway_agent": IncidentEffect(rate_factor=30.0, token_factor=2.0, repeat_share=0.6),
}


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

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("SimConfig.start must be timezone-aware")
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.identities < 1 or self.minutes < 1 or self.seed < 0 or self.incidents < 0:
            raise ValueError("identities and minutes must be >= 1, seed and incidents >= 0")
        if self.incidents and self.incident_after_minutes + self.incident_minutes > self.minutes:
            raise ValueError("no room for an incident: raise minutes or lower incident_*")
        unknown = set(self.incident_kinds) - set(INCIDENT_EFFECTS)
        if unknown or not self.incident_kinds:
            raise ValueError(f"unknown incident kinds {sorted(unknown)}")


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
    models = _pick(rng, {m: spec[4] for m, spec in MODELS.items()}, n)
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
    latest = cfg.minutes - cfg.incident_minutes
    if cfg.incident_latest_start is not None:
        latest = max(cfg.incident_after_minutes, min(latest, cfg.incident_latest_start))
    starts = rng.integers(cfg.incident_after_minutes, latest + 1, cfg.incidents).tolist()
    kinds = cfg.incident_kinds
    incidents = [
        Incident(
            kind=kinds[i % len(kinds)],
            identity=chosen[i],
            start=cfg.start + timedelta(minutes=starts[i]),
            end=cfg.start + timedelta(minutes=starts[i] + cfg.incident_minutes),
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


def _draw(plan: SimPlan, minute: int) -> dict[str, Any]:
    """Per-event columns (Python lists) of one run minute, sorted by time; vectorised."""
    rng = _rng(plan.cfg, _TRAFFIC, minute)
    t0 = plan.start_ms + minute * MINUTE_MS
    rate_f, tok_f, repeat = plan.effects(minute)
    counts = rng.poisson(plan.rate * plan.shape(t0) * rate_f)
    offsets = rng.integers(0, MINUTE_MS, int(counts.sum()))
    order = np.argsort(offsets, kind="stable")
    who, offsets = np.repeat(np.arange(counts.size), counts)[order], offsets[order]
    n = who.size
    error = rng.random(n) < ERROR_RATE
    tok_in = np.maximum(1, np.rint(plan.in_med[who] * tok_f[who] * rng.lognormal(0, 0.5, n)))
    tok_out = np.maximum(1, np.rint(plan.out_med[who] * tok_f[who] * rng.lognormal(0, 0.5, n)))
    tok_out = np.where(error, 0, tok_out)  # a failed call generates nothing
    cost = (tok_in * plan.price_in[who] + tok_out * plan.price_out[who]) / 1e6
    latency = (150 + tok_out * plan.ms_per_token[who]) * rng.lognormal(0, 0.3, n)
    pick = (rng.random(n) * plan.fp_count[who]).astype(np.int64)
    pick = np.where(rng.random(n) < repeat[who], 0, pick)  # a runaway loop repeats itself
    traced = plan.agent[who] & (rng.random(n) < TRACED_AGENT_SHARE)
    return {
        "who": who.tolist(),
        "time": _format_times(t0 + offsets),
        "in": tok_in.astype(np.int64).tolist(),
        "out": tok_out.astype(np.int64).tolist(),
        "cost": np.round(cost, 8).tolist(),
        "latency": np.rint(latency).astype(np.int64).tolist(),
        "error": error.tolist(),
        "traced": traced.tolist(),
        "fp": (plan.fp_offset[who] + pick).tolist(),
        "error_types": iter(_pick(rng, ERROR_TYPES, int(error.sum()))),
        "trace_ids": iter(_trace_ids(rng, int(traced.sum()))),
    }


def generate_minute(plan: SimPlan, minute: int, first_seq: int) -> list[dict[str, Any]]:
    """The events of run minute `minute`, sorted by event_time, ids counted from first_seq."""
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
