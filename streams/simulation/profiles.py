"""Who the simulated identities are and how they normally behave.

The model price list, the population's categories, teams (and the business unit of each),
environments, the error mix, the daily rhythm and hourly batch bursts, and
`plan_identities()`: the deterministic population of a run, one `IdentityProfile` per
non-human identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.random_streams import (
    IDENTITY_STREAM,
    pick_weighted,
    random_stream,
)

# model: (provider, USD per 1M input tokens, USD per 1M output tokens, ms per output token, share)
# A share of 0: nobody's usual model in the classic world (premium tiers, see traps.py and
# drift_incidents.py).
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
# The business unit each team reports to: the generated registry's (registry_plan.py).
TEAM_BUSINESS_UNITS = {
    "billing": "finance",
    "risk": "finance",
    "support": "customer",
    "growth": "customer",
    "search": "product",
    "data": "product",
    "platform": "engineering",
    "security": "engineering",
}
CI_JOBS = ("deploy", "eval", "nightly", "test", "index")
ENVIRONMENTS = {"prod": 0.80, "staging": 0.15, "test": 0.05}
ERROR_TYPES = {"rate_limit": 0.40, "timeout": 0.25, "server_error": 0.25, "invalid_request": 0.10}
ERROR_RATE = 0.01
DIURNAL_AMPLITUDE = 0.5  # (1 + a) / (1 - a) = 3: peak/trough ratio of the daily rhythm
DIURNAL_PEAK_HOUR_UTC = 15.0
BATCH_BURST_MINUTES = 2  # hourly batch jobs do (almost) all their calls in these minutes
BATCH_QUIET_SHARE = 0.02  # ... and trickle the rest of the hour
TRACED_AGENT_SHARE = 0.6  # agent calls carrying trace context and their caller

# MODELS and ERROR_TYPES by index, for numpy columns that hold a model or error index.
MODEL_NAMES = tuple(MODELS)
MODEL_INDEX = {name: k for k, name in enumerate(MODEL_NAMES)}
PROVIDERS = [spec[0] for spec in MODELS.values()]
PRICE_IN = np.array([spec[1] for spec in MODELS.values()])
PRICE_OUT = np.array([spec[2] for spec in MODELS.values()])
MS_PER_TOKEN = np.array([spec[3] for spec in MODELS.values()])
ERROR_NAMES = tuple(ERROR_TYPES)
ERROR_P = np.array(list(ERROR_TYPES.values()))


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
    rng, n = random_stream(cfg, IDENTITY_STREAM), cfg.identities
    cats = pick_weighted(rng, CATEGORIES, n)
    # Log-normal rates: median 1.5/min, a few heavy at 20-60/min, many light well under 1/min.
    rates = np.clip(rng.lognormal(math.log(1.5), 1.3, n), 0.03, 60.0)
    batch = (np.array(cats) == "ci") & (rng.random(n) < 0.5)
    rates = np.where(batch, np.clip(rates, 0.5, 5.0), rates)  # bursts big enough to see
    # Agents carry long conversation contexts, hence larger prompts.
    in_med = rng.lognormal(math.log(800), 0.8, n) * np.where(np.array(cats) == "agent", 3.0, 1.0)
    out_med = rng.lognormal(math.log(250), 0.7, n)
    teams, jobs = rng.choice(TEAMS, n).tolist(), rng.choice(CI_JOBS, n).tolist()
    labels = [jobs[i] if cats[i] == "ci" else teams[i] for i in range(n)]
    envs = pick_weighted(rng, ENVIRONMENTS, n)
    models = pick_weighted(rng, {m: spec[4] for m, spec in MODELS.items() if spec[4] > 0}, n)
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
