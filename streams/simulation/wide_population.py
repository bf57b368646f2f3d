"""The wide world's population: who calls, how much, how noisily, when, and its benign traps.

`plan_population()` draws every identity from the seed alone (WIDE_PEOPLE_STREAM):

* **Rates by band.** Base rates (calls/min, a weekday's mean) are log-uniform over 0.01-500,
  but stratified by band (streams/simulation/volume_bands.py) instead of drawn from one
  log-uniform: the two busiest bands are capped (BAND_CAPS: 8 identities above 100
  calls/min, 12 at 10-100) because one identity there sends as many events as hundreds of
  quiet ones, and the rest of the population is split over the quieter bands. Within a band
  the rates are log-uniform, one draw per equal slice of its log-range, so a band's volume
  barely varies with the seed. Every band gets its traps and incident hosts.
* **Calls and tokens.** Tokens per call log-uniform 50-50,000 (median, per identity), varied
  log-normally per call; a model (and so a price per token) drawn from realistic price tiers;
  an error rate of 0.2-3 %; a few to a few hundred distinct requests (fingerprints).
* **Bursty noise.** Calls come in sessions (compound Poisson: sessions per minute are
  Poisson, a session's size is geometric with a per-identity mean of 1-6 calls, its calls one
  after the other, ~4 s apart, spilling into the next minutes), on top of a slowly wandering
  level (log-normal AR(1), 5-25 % over 5-30 minutes: `level_noise`). A minute's count is
  therefore over-dispersed, most at low volume, where a session of 4 calls is the whole hour.
* **Rhythms.** A diurnal sine (amplitude 10-50 %, peak in business hours for half, at any
  hour for the others) and a weekend factor (30-100 % of a weekday, eased over 4 hours around
  midnight): `rhythm`. The run starts at a weekday and hour drawn from the seed (`wide_start`).
* **Traps** (`SimConfig.traps`), in every band: a deploy step up (1.5-2x) and one down,
  sustained to the end of the run; an hourly batch (90 % of the hour's calls at a fixed minute
  of the hour); a cold start (first call mid-run, steady after). Quiet keys in the lowest band
  call in bursts of exactly 3-5 calls (0 -> 3 calls in one minute, then nothing for hours).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.profiles import MODEL_INDEX, TEAMS
from meterguard.streams.simulation.random_streams import (
    WIDE_LEVEL_STREAM,
    WIDE_PEOPLE_STREAM,
    WIDE_START_STREAM,
    random_stream,
)
from meterguard.streams.simulation.volume_bands import BAND_RANGES

BAND_CAPS: tuple[int | None, ...] = (None, None, None, 12, 8)  # affordability, see above
UPPER_SHARES = (0.08, 0.04)  # bands 10-100 and >100 before their caps
LOWER_SHARES = (0.40, 0.33, 0.27)  # the rest, over the three quieter bands
MIN_PER_BAND = 7  # four traps and three incident hosts
# Usual models and their shares: cheap and mid tiers mostly, a few premium users.
MODEL_SHARES = {
    "gpt-4o": 0.20, "gpt-4o-mini": 0.25, "claude-sonnet-4-20250514": 0.18,
    "claude-3-5-haiku-20241022": 0.12, "gemini-2.0-flash": 0.15, "claude-opus-4": 0.04,
    "gemini-2.5-pro": 0.06,
}  # fmt: skip
CATEGORIES = ("svc", "agent", "ci")
# Trap roles (PLAIN identities host the incidents).
PLAIN, DEPLOY_UP, DEPLOY_DOWN, CRON, COLD, QUIET = range(6)
ROLE_NAMES = ("plain", "deploy_up", "deploy_down", "cron", "cold_start", "quiet_key")
QUIET_KEY_SHARE = 0.1  # of the lowest band, at least 2
CRON_SHARE = 0.9  # an hourly batch makes this share of the hour's calls in its minute(s)
DEPLOY_TAIL = 60  # a deploy step leaves at least this many minutes of the run after it
WEEKEND_EASE_H = 4.0  # the weekend factor eases in and out over this many hours


@dataclass(frozen=True)
class Population:
    """Per-identity columns (numpy, indexed by identity) and strings."""

    names: list[str]
    teams: list[str]
    workloads: list[str]
    band: np.ndarray
    rate: np.ndarray  # calls/min: a weekday's mean (the band's rate)
    tokens: np.ndarray  # median tokens per call (input + output)
    out_share: np.ndarray  # share of a call's tokens that are output
    tok_sigma: np.ndarray  # log-normal sigma of tokens per call
    model: np.ndarray  # index into profiles.MODEL_NAMES
    error_rate: np.ndarray
    session: np.ndarray  # mean calls per session (geometric), or the fixed size of quiet keys
    fixed_session: np.ndarray  # bool: quiet keys' sessions are exactly `session` calls
    amplitude: np.ndarray  # diurnal
    peak_hour: np.ndarray  # UTC
    weekend: np.ndarray  # weekend rate / weekday rate
    level_sigma: np.ndarray
    level_tau: np.ndarray  # minutes
    fp_offset: np.ndarray  # into `fingerprints`
    fp_count: np.ndarray
    fingerprints: list[str]
    role: np.ndarray  # PLAIN, DEPLOY_UP, ...
    step_minute: np.ndarray  # deploys: run minute of the step; cold starts: first minute
    step_factor: np.ndarray  # deploys: rate factor from step_minute on
    cron_minute: np.ndarray  # hourly batches: minute of the hour of the burst
    cron_span: np.ndarray  # ... and how many minutes it lasts (1 or 2)

    @property
    def size(self) -> int:
        return len(self.names)


def band_counts(n: int) -> list[int]:
    """Identities per band: the busy bands capped, the rest split over the quiet ones."""
    upper = [
        max(MIN_PER_BAND, min(cap or n, round(share * n)))
        for share, cap in zip(UPPER_SHARES, BAND_CAPS[3:], strict=True)
    ]
    rest = n - sum(upper)
    lower = [max(MIN_PER_BAND, math.floor(share * rest)) for share in LOWER_SHARES]
    lower[0] += rest - sum(lower)
    if min(lower) < MIN_PER_BAND:
        raise ValueError(f"{n} identities are too few for five volume bands")
    return [*lower, *upper]


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _stratified(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """n log-uniform draws over [lo, hi), one per equal slice of the log-range, shuffled."""
    u = (rng.permutation(n) + rng.random(n)) / n
    return np.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def wide_start(cfg: SimConfig) -> datetime:
    """The run's start: the latest moment at or before cfg.start on the weekday and at the hour
    drawn from the seed (minutes and seconds of cfg.start kept)."""
    rng = random_stream(cfg, WIDE_START_STREAM)
    weekday, hour = int(rng.integers(7)), int(rng.integers(24))
    at = cfg.start.replace(hour=hour) - timedelta(days=(cfg.start.weekday() - weekday) % 7)
    return at - timedelta(days=7) if at > cfg.start else at


def plan_population(cfg: SimConfig) -> Population:
    """The wide world's identities, deterministic from cfg (see the module docstring)."""
    rng, counts = random_stream(cfg, WIDE_PEOPLE_STREAM), band_counts(cfg.identities)
    band = np.repeat(np.arange(len(counts)), counts)
    rate = np.concatenate(
        [_stratified(rng, lo, hi, c) for (lo, hi), c in zip(BAND_RANGES, counts, strict=True)]
    )
    n = band.size
    models = list(MODEL_SHARES)
    model = np.array(
        [MODEL_INDEX[m] for m in rng.choice(models, n, p=list(MODEL_SHARES.values())).tolist()]
    )
    fp_count = np.rint(log_uniform(rng, 2, 200, n)).astype(np.int64)
    blob = rng.bytes(16 * int(fp_count.sum())).hex()
    pop = Population(
        names=[], teams=[str(t) for t in rng.choice(TEAMS, n).tolist()], workloads=[],
        band=band, rate=rate, tokens=log_uniform(rng, 50, 50_000, n),
        out_share=rng.uniform(0.05, 0.5, n), tok_sigma=rng.uniform(0.3, 1.0, n), model=model,
        error_rate=log_uniform(rng, 0.002, 0.03, n), session=log_uniform(rng, 1.0, 6.0, n),
        fixed_session=np.zeros(n, dtype=bool), amplitude=rng.uniform(0.1, 0.5, n),
        peak_hour=np.where(rng.random(n) < 0.5, rng.uniform(12, 18, n), rng.uniform(0, 24, n)),
        weekend=rng.uniform(0.3, 1.0, n), level_sigma=rng.uniform(0.05, 0.25, n),
        level_tau=rng.uniform(5, 30, n), fp_offset=np.cumsum(fp_count) - fp_count,
        fp_count=fp_count, fingerprints=[blob[k : k + 32] for k in range(0, len(blob), 32)],
        role=np.full(n, PLAIN), step_minute=np.zeros(n, dtype=np.int64), step_factor=np.ones(n),
        cron_minute=np.zeros(n, dtype=np.int64), cron_span=np.ones(n, dtype=np.int64),
    )  # fmt: skip
    categories = rng.choice(CATEGORIES, n).tolist()
    if cfg.traps:
        _plan_traps(cfg, pop, rng)
    for i in range(n):
        category = "key" if pop.role[i] == QUIET else categories[i]
        pop.names.append(f"{category}-{pop.teams[i]}-w{i:04d}")
        pop.workloads.append(f"{pop.teams[i]}-{category}")
    return pop


def _plan_traps(cfg: SimConfig, pop: Population, rng: np.random.Generator) -> None:
    """Per band: a deploy step up, one down, an hourly batch, a cold start; quiet keys."""
    lo = min(cfg.incident_after_minutes, cfg.minutes // 2)
    hi = max(lo + 1, cfg.minutes - DEPLOY_TAIL)
    for b in range(int(pop.band.max()) + 1):
        members = rng.permutation(np.flatnonzero(pop.band == b)).tolist()
        up, down, cron, cold = members[:4]
        pop.role[[up, down, cron, cold]] = [DEPLOY_UP, DEPLOY_DOWN, CRON, COLD]
        pop.step_minute[[up, down]] = rng.integers(lo, hi, 2)
        pop.step_factor[up], pop.step_factor[down] = rng.uniform(1.5, 2.0, 2) ** [1, -1]
        pop.cron_minute[cron], pop.cron_span[cron] = rng.integers(60), rng.integers(1, 3)
        pop.amplitude[cron] = 0.1  # a batch runs on the clock, not on its users' day
        pop.step_minute[cold] = rng.integers(max(1, cfg.minutes // 10), 6 * cfg.minutes // 10)
        if b == 0:
            quiet = members[4 : 4 + max(2, round(QUIET_KEY_SHARE * len(members)))]
            pop.role[quiet] = QUIET
            pop.fixed_session[quiet] = True
            pop.session[quiet] = rng.integers(3, 6, len(quiet))


def rhythm(pop: Population, t_ms: np.ndarray) -> np.ndarray:
    """Diurnal x weekly rate factor, shape (identities, len(t_ms)); 1 on a weekday's average."""
    hours = np.asarray(t_ms, dtype=np.float64) / 3_600_000
    hour = hours % 24
    phase = 2 * np.pi * (hour[None, :] - pop.peak_hour[:, None]) / 24
    diurnal = 1 + pop.amplitude[:, None] * np.cos(phase)
    # Epoch day 0 was a Thursday: Monday 00:00 was 3 days earlier. Hours since Saturday 00:00
    # (-24 on Friday 00:00, 48 on Monday 00:00), eased over WEEKEND_EASE_H around midnights.
    into = (hours + 3 * 24 - 5 * 24 + 24) % (7 * 24) - 24
    ease = WEEKEND_EASE_H / 2
    weekend_share = np.clip(np.minimum(into + ease, 48 + ease - into) / WEEKEND_EASE_H, 0, 1)
    weekly = 1 - weekend_share[None, :] * (1 - pop.weekend[:, None])
    factor: np.ndarray = diurnal * weekly
    return factor


def level_noise(cfg: SimConfig, pop: Population) -> np.ndarray:
    """Log-normal AR(1) level per identity and run minute, mean 1: shape (identities, minutes)."""
    rng = random_stream(cfg, WIDE_LEVEL_STREAM)
    rho = np.exp(-1.0 / pop.level_tau)
    innovation = pop.level_sigma * np.sqrt(1 - rho**2)
    x = rng.normal(0, 1, pop.size) * pop.level_sigma
    out = np.empty((pop.size, cfg.minutes))
    steps = rng.normal(0, 1, (cfg.minutes, pop.size))
    for m in range(cfg.minutes):
        out[:, m] = x
        x = rho * x + innovation * steps[m]
    levels: np.ndarray = np.exp(out - pop.level_sigma[:, None] ** 2 / 2)
    return levels


def trap_factor(pop: Population, minute: int, t0_ms: int) -> np.ndarray:
    """Per-identity rate factor of the traps at this run minute (1 for plain identities)."""
    f = np.ones(pop.size)
    stepped = (pop.role == DEPLOY_UP) | (pop.role == DEPLOY_DOWN)
    stepped &= minute >= pop.step_minute
    f[stepped] = pop.step_factor[stepped]
    f[(pop.role == COLD) & (minute < pop.step_minute)] = 0.0
    cron = pop.role == CRON
    of_hour = (t0_ms // 60_000) % 60
    in_burst = (of_hour - pop.cron_minute) % 60 < pop.cron_span
    burst = 60 * CRON_SHARE / pop.cron_span
    trickle = 60 * (1 - CRON_SHARE) / (60 - pop.cron_span)
    f[cron] = np.where(in_burst, burst, trickle)[cron]
    return f
