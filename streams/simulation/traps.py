"""Traps: normal behaviour of the evaluation world that looks odd but must not alert.

Cold starts (identities that first appear mid-run), quiet offboarded decoys (listed as
offboarded, never calling), deploys (traffic doubling for an hour after a gradual ramp),
premium-model users, and calls that fail and are retried with exponential backoff. Planned
once per run from their own random stream (`plan_traps`); the backoff retries are drawn per
minute (`backoff_calls`). With `SimConfig.traps` off there are none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from meterguard.streams.simulation.baseline import MINUTE_MS
from meterguard.streams.simulation.columns import Columns, Factors
from meterguard.streams.simulation.profiles import ERROR_NAMES, MODEL_INDEX, MS_PER_TOKEN
from meterguard.streams.simulation.world import World

BACKOFF_SHARE = 0.004  # traps: calls that fail and are retried with exponential backoff
BACKOFF_GAPS_MS = 1000 * 2 ** np.arange(5)  # 1, 2, 4, 8, 16 s
DEPLOY_SHARE, DEPLOY_RAMP, DEPLOY_HOLD = 0.02, 10, 60  # traps: traffic doubles for an hour
DEPLOY_MIN_RATE = 1.0  # ... on identities busy enough for it to show
PREMIUM_SHARE = 0.02  # traps: identities whose usual model is a premium tier
PREMIUM_MODELS = ("claude-opus-4", "gemini-2.5-pro")
DECOY_SHARE = 0.01  # traps: offboarded identities that stay quiet
RETRYABLE = tuple(ERROR_NAMES.index(e) for e in ("rate_limit", "server_error", "timeout"))


@dataclass(frozen=True)
class Traps:
    """The traps of one run, by identity index."""

    first_minute: np.ndarray  # run minute of the identity's first call (cold starts: > 0)
    quiet: np.ndarray  # bool: offboarded decoys, listed, never call
    deploys: list[tuple[int, int]]  # (identity, first minute of the ramp)
    premium: list[int]  # identities whose usual model is a premium tier ...
    premium_models: list[int]  # ... and that tier's model index


def plan_traps(world: World, rng: np.random.Generator) -> Traps:
    """Which identities carry which trap (none unless SimConfig.traps)."""
    cfg, n = world.cfg, len(world.profiles)
    first_minute = np.zeros(n, dtype=np.int64)
    quiet = np.zeros(n, dtype=bool)
    if not cfg.traps:
        return Traps(first_minute, quiet, [], [], [])
    # Agents stay out: callees would be called before they exist, roots' traces shift.
    busy = world.incident_index | {int(i) for i in np.flatnonzero(world.graph.level >= 0)}
    busy |= {world.index[c] for c in world.callers if c}
    free = [i for i in rng.permutation(n).tolist() if i not in busy]
    n_cold = round(cfg.cold_start_share * n)
    cold, free = free[:n_cold], free[n_cold:]
    lo, hi = max(1, cfg.minutes // 10), max(2, 7 * cfg.minutes // 10)
    first_minute[cold] = rng.integers(lo, hi, len(cold))
    n_decoy = max(1, round(DECOY_SHARE * n))
    quiet[free[:n_decoy]] = True
    free = free[n_decoy:]
    deploys: list[tuple[int, int]] = []
    span = 2 * DEPLOY_RAMP + DEPLOY_HOLD
    if cfg.minutes > span:
        busy_enough = [
            i for i in free if world.plan.rate[i] >= DEPLOY_MIN_RATE and not world.plan.batch[i]
        ]
        chosen = busy_enough[: max(1, round(DEPLOY_SHARE * n))]
        starts = rng.integers(0, cfg.minutes - span, len(chosen)).tolist()
        deploys = list(zip(chosen, starts, strict=True))
        free = [i for i in free if i not in chosen]
    premium = free[: max(1, round(PREMIUM_SHARE * n))]
    picks = rng.integers(0, len(PREMIUM_MODELS), len(premium))
    premium_models = [MODEL_INDEX[PREMIUM_MODELS[k]] for k in picks]
    return Traps(first_minute, quiet, deploys, premium, premium_models)


def deploy_factor(t: int) -> float:
    """Rate multiplier `t` minutes after a deploy's ramp began (1 before and after it)."""
    # up over 10 minutes, an hour at 2x, down over 10
    return float(
        1
        + np.clip(t / DEPLOY_RAMP, 0, 1)
        - np.clip((t - DEPLOY_RAMP - DEPLOY_HOLD) / DEPLOY_RAMP, 0, 1)
    )


def backoff_calls(world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
    """Traps: a failing call retried 2-5 times, gaps 1, 2, 4, 8, 16 s, then success."""
    plan = world.plan
    shape = plan.shape(plan.start_ms + minute * MINUTE_MS)
    counts = rng.poisson(plan.rate * shape * f.rate / f.boost * BACKOFF_SHARE)
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
        1, np.rint(world.in_med[seq_who] * f.tok_in[seq_who] * rng.lognormal(0, 0.5, s))
    )
    tout = np.maximum(
        1, np.rint(world.out_med[who] * f.tok_out[who] * rng.lognormal(0, 0.5, who.size))
    )
    tout = np.where(last, tout, 0)
    model = f.model[who]
    fail_ms = rng.lognormal(math.log(400), 0.6, who.size)
    lat = np.where(
        last, (150 + tout * MS_PER_TOKEN[model]) * rng.lognormal(0, 0.3, who.size), fail_ms
    )
    error = np.array(RETRYABLE)[rng.integers(0, len(RETRYABLE), s)]
    fp = world.fp_offset[seq_who] + (rng.random(s) * world.fp_count[seq_who]).astype(np.int64)
    return Columns.of(
        who=who, off=np.floor(start[seq] + at[seq, j]), tin=tin[seq], tout=tout, model=model,
        err=np.where(last, -1, error[seq]), lat=np.rint(lat), fp=fp[seq],
        src=world.pick_sources(rng, seq_who)[seq],
    )  # fmt: skip
