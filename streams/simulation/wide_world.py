"""The wide world: identities from 0.01 to 500 calls/min, bursty, with rhythms, traps and
incidents at every volume (`SimConfig(world="wide")`, `meterguard evaluate --world wide`).

The classic world (streams/simulation/baseline.py and world_traffic.py) draws its rates around
1.5 calls/min and its incident hosts from 2-15 calls/min, so a detector that only works on
busy identities scores perfectly there. This world spreads the population over five decades
of volume (streams/simulation/wide_population.py: bands, noise, rhythms, traps) and the
incidents evenly over them (streams/simulation/wide_incidents.py: stratified, with the sizing
rules). `WidePlan` plans a run once; `minute_events()` draws one run minute from
(seed, WIDE_TRAFFIC_STREAM, minute) and the sessions that reach into it from
(seed, WIDE_SESSION_STREAM, minute of their start), so a minute rebuilt on its own matches the
full run and `generate()` stays lazy. Deterministic for a seed: no wall clock anywhere.

Size: at the defaults (WIDE_DEFAULT_IDENTITIES x WIDE_DEFAULT_MINUTES, 30 incidents) a seed is
0.7-1.45 million events (`expected_events`, over seeds 1-60; seed 11: 0.88 million), most of
them from the busiest band. To stay there the busiest bands are capped in identities rather
than drawn purely log-uniformly (streams/simulation/wide_population.py), and the busiest
incidents in the calls they add (streams/simulation/wide_incidents.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import numpy as np

from meterguard.streams.simulation.baseline import EPOCH, MINUTE_MS, format_times
from meterguard.streams.simulation.config import Incident, SimConfig
from meterguard.streams.simulation.profiles import (
    ERROR_NAMES,
    ERROR_P,
    MODEL_NAMES,
    MS_PER_TOKEN,
    PRICE_IN,
    PRICE_OUT,
    PROVIDERS,
)
from meterguard.streams.simulation.random_streams import (
    WIDE_SESSION_STREAM,
    WIDE_TRAFFIC_STREAM,
    random_stream,
)
from meterguard.streams.simulation.wide_incidents import WideIncident, plan_wide_incidents
from meterguard.streams.simulation.wide_population import (
    level_noise,
    plan_population,
    rhythm,
    trap_factor,
    wide_start,
)

WIDE_DEFAULT_IDENTITIES = 300
WIDE_DEFAULT_MINUTES = 360  # warm-up (90) + room for a 2-hour incident, and a 6-hour rhythm
WIDE_INCIDENTS_PER_CELL = 2  # default incidents per (kind, band)
MAX_INPUT_TOKENS = 1_000_000  # the largest context windows
MAX_OUTPUT_TOKENS = 32_000  # the largest answers a model gives in one call
# A session's calls follow one another: the next starts when the previous answered (LLM
# latency, a few seconds) plus a little work. A long session spills into the next minutes.
SESSION_GAP_MS = 4000.0  # median gap between the calls of one session
SESSION_SPAN_MINUTES = 5  # a session's calls end within this many minutes of its start
LOOP_ERRORS = ("rate_limit", "server_error", "invalid_request")


class WidePlan:
    """A wide run planned once: start, population, level noise, incidents."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.start = wide_start(cfg)
        start_us = (self.start - EPOCH) // timedelta(microseconds=1)
        self.start_ms = -(-start_us // 1000)  # ceil: no event before the start
        self.pop = pop = plan_population(cfg)
        self.incidents: list[WideIncident] = plan_wide_incidents(cfg, pop, self.start)
        self.levels = level_noise(cfg, pop)
        self.price_in, self.price_out = PRICE_IN[pop.model], PRICE_OUT[pop.model]
        self.ms_per_token = MS_PER_TOKEN[pop.model]
        self._sessions_of: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # recent minutes
        self.static = [
            {
                "identity": name,
                "kind": "llm.call",
                "team": pop.teams[i],
                "environment": "prod",
                "workload": pop.workloads[i],
                "model": MODEL_NAMES[pop.model[i]],
                "provider": PROVIDERS[pop.model[i]],
                "credential_id": f"cred-{i:04d}-{cfg.seed}",
            }
            for i, name in enumerate(pop.names)
        ]

    @property
    def labels(self) -> list[Incident]:
        return [w.label for w in self.incidents]

    def base_rates(self) -> dict[str, float]:
        """Each identity's usual rate (calls/min, a weekday's mean): what its band is."""
        return {name: float(r) for name, r in zip(self.pop.names, self.pop.rate, strict=True)}

    def mean_calls(self, minute: int) -> np.ndarray:
        """Expected ordinary calls per identity in this run minute (incidents included, retry
        loops apart: they add calls of their own)."""
        t0 = self.start_ms + minute * MINUTE_MS
        mu = self.pop.rate * rhythm(self.pop, np.array([t0]))[:, 0] * self.levels[:, minute]
        mu *= trap_factor(self.pop, minute, t0)
        for w in self.incidents:
            if not w.active(minute):
                continue
            if w.label.kind == "runaway_agent":
                mu[w.who] *= w.magnitude
            elif w.label.kind == "slow_ramp":
                mu[w.who] *= w.magnitude ** ((minute - w.first + 0.5) / (w.end - w.first))
        result: np.ndarray = mu
        return result

    def expected_events(self) -> float:
        """Expected events of the whole run (no traffic drawn): its affordability."""
        ordinary = sum(float(self.mean_calls(m).sum()) for m in range(self.cfg.minutes))
        loops = sum(w.retry_rate * (w.end - w.first) for w in self.incidents)
        return ordinary + loops

    def minute_events(self, minute: int, first_seq: int) -> list[dict[str, Any]]:
        """The events of one run minute, sorted by event_time, ids counted from first_seq."""
        rng = random_stream(self.cfg, WIDE_TRAFFIC_STREAM, minute)
        who, off = self._calls(minute)
        n, pop = who.size, self.pop
        failed = rng.random(n) < pop.error_rate[who]
        sigma = pop.tok_sigma[who]
        tin = pop.tokens[who] * (1 - pop.out_share[who]) * np.exp(sigma * rng.normal(0, 1, n))
        tout = pop.tokens[who] * pop.out_share[who] * np.exp(sigma * rng.normal(0, 1, n))
        tin = np.clip(np.rint(tin), 1, MAX_INPUT_TOKENS)
        tout = np.where(failed, 0, np.clip(np.rint(tout), 1, MAX_OUTPUT_TOKENS))
        err = np.where(failed, rng.choice(len(ERROR_NAMES), n, p=ERROR_P), -1)
        pick = pop.fp_offset[who] + (rng.random(n) * pop.fp_count[who]).astype(np.int64)
        fps = [pop.fingerprints[k] for k in pick.tolist()]
        lat = (150 + tout * self.ms_per_token[who]) * rng.lognormal(0, 0.3, n)
        lat = np.where(failed, rng.lognormal(math.log(300), 0.5, n), lat)
        cols = [who, off, tin, tout, err, lat]
        for w in self.incidents:
            if w.label.kind == "retry_loop" and w.active(minute):
                loop, loop_fps = self._retry_calls(w, minute, rng)
                cols = [np.concatenate([a, b]) for a, b in zip(cols, loop, strict=True)]
                fps.extend(loop_fps)
        return self._render(minute, first_seq, cols, fps)

    def _calls(self, minute: int) -> tuple[np.ndarray, np.ndarray]:
        """(identity, ms into the minute) of the ordinary calls made in this run minute: those
        of the sessions that started in it or in the SESSION_SPAN_MINUTES before."""
        first = max(0, minute - SESSION_SPAN_MINUTES)
        for old in [m for m in self._sessions_of if m < first]:
            del self._sessions_of[old]
        parts = [self._sessions(m) for m in range(first, minute + 1)]
        who = np.concatenate([p[0] for p in parts])
        at = np.concatenate([p[1] for p in parts]) - minute * MINUTE_MS
        now = (at >= 0) & (at < MINUTE_MS)
        return who[now], at[now]

    def _sessions(self, minute: int) -> tuple[np.ndarray, np.ndarray]:
        """Compound Poisson: the sessions starting in this run minute, each identity's at its
        mean rate / mean session size, and their calls (identity, ms since the run's start)."""
        cached = self._sessions_of.get(minute)
        if cached is not None:
            return cached
        rng, pop = random_stream(self.cfg, WIDE_SESSION_STREAM, minute), self.pop
        sessions = rng.poisson(self.mean_calls(minute) / pop.session)
        s_who = np.repeat(np.arange(pop.size), sessions)
        geometric = rng.geometric(1.0 / pop.session[s_who])
        size = np.where(pop.fixed_session[s_who], np.rint(pop.session[s_who]), geometric)
        size = size.astype(np.int64)
        seq = np.repeat(np.arange(s_who.size), size)
        first = np.cumsum(size) - size
        gaps = rng.lognormal(math.log(SESSION_GAP_MS), 0.6, seq.size)
        gaps[first] = 0.0  # a session's first call starts it
        total = np.cumsum(gaps)
        rel = total - np.repeat(total[first], size)
        longest = SESSION_SPAN_MINUTES * MINUTE_MS - 1.0
        squeeze = np.minimum(1.0, longest / np.maximum(rel[first + size - 1], 1.0))
        begin = minute * MINUTE_MS + rng.random(s_who.size) * MINUTE_MS
        calls = (s_who[seq], np.floor(begin[seq] + rel * squeeze[seq]))
        self._sessions_of[minute] = calls
        return calls

    def _retry_calls(
        self, w: WideIncident, minute: int, rng: np.random.Generator
    ) -> tuple[list[np.ndarray], list[str]]:
        """A retry loop's calls this minute: a steady period, jitter a function of the call."""
        period = MINUTE_MS / w.retry_rate
        phase = period * ((w.first * 0.6180339887) % 1.0)
        g0 = (minute - w.first) * MINUTE_MS
        k = np.arange(
            max(0, math.floor((g0 - phase) / period) - 1),
            math.ceil((g0 + MINUTE_MS - phase) / period) + 1,
        )
        jitter = ((k * 2654435761) % 2**32) / 2**32 - 0.5
        t = phase + (k + 0.2 * jitter) * period
        t = t[(t >= g0) & (t < g0 + MINUTE_MS)]
        n = t.size
        failed = rng.random(n) < w.retry_error_share
        loop_error = ERROR_NAMES.index(LOOP_ERRORS[w.first % len(LOOP_ERRORS)])
        err = np.where(failed, loop_error, -1)
        tout = np.where(failed, 0, rng.integers(5, 200, n))
        lat = np.where(
            failed,
            rng.lognormal(math.log(120), 0.4, n),
            (150 + tout * self.ms_per_token[w.who]) * rng.lognormal(0, 0.3, n),
        )
        cols = [np.full(n, w.who), np.floor(t - g0), np.full(n, float(w.retry_tokens)), tout]
        return [*cols, err, lat], [w.retry_fingerprint] * n

    def _render(
        self, minute: int, first_seq: int, cols: list[np.ndarray], fps: list[str]
    ) -> list[dict[str, Any]]:
        who, off, tin, tout, err, lat = cols
        order = np.argsort(off, kind="stable")
        who, tin, tout, err = who[order], tin[order], tout[order], err[order]
        cost = np.round((tin * self.price_in[who] + tout * self.price_out[who]) / 1e6, 8)
        times = format_times(self.start_ms + minute * MINUTE_MS + off[order].astype(np.int64))
        rows = zip(
            who.tolist(), times, tin.astype(np.int64).tolist(), tout.astype(np.int64).tolist(),
            cost.tolist(), err.tolist(), np.rint(lat[order]).astype(np.int64).tolist(),
            [fps[k] for k in order.tolist()], strict=True,
        )  # fmt: skip
        prefix, static = f"wide{self.cfg.seed}-", self.static
        events = []
        for k, (i, time, t_in, t_out, usd, e, ms, fp) in enumerate(rows):
            event = {
                "event_id": f"{prefix}{first_seq + k:09d}",
                **static[i],
                "event_time": time,
                "input_tokens": t_in,
                "output_tokens": t_out,
                "cost_usd": usd,
                "status": "ok" if e < 0 else "error",
                "latency_ms": ms,
                "request_fingerprint": fp,
            }
            if e >= 0:
                event["error_type"] = ERROR_NAMES[e]
            events.append(event)
        return events


def generate(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """All events of a wide run, lazily, minute by minute, in non-decreasing event_time."""
    plan = WidePlan(cfg)
    seq = 0
    for minute in range(cfg.minutes):
        events = plan.minute_events(minute, seq)
        seq += len(events)
        yield from events
