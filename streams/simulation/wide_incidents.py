"""The wide world's incidents: labelled, stratified over volume bands, sized for every volume.

`plan_wide_incidents()` assigns incident k to band k // len(kinds) % 5 and kind k % len(kinds)
(so 15 incidents of three kinds put one of each kind in each band, 30 two), a host among the
band's plain identities (no trap; the least booked first, the longest kinds placed first) and
a window after the detectors' warm-up (`SimConfig.incident_after_minutes`) that overlaps no
other incident of that host, with INCIDENT_GAP minutes between them. The sizing rules, each
realistic at every volume:

* runaway_agent: an abrupt step to 3-50x (log-uniform) the identity's usual rate for 5-120
  minutes (log-uniform): a loop that calls the model again and again.
* retry_loop: one request, 75-97 % failing, at a steady rate: a client retrying without (or
  with a capped) backoff. Its rate is 3-50x the identity's usual rate, but at least
  RETRY_FLOOR calls/min (a retry loop is a loop: even the slowest one, a capped exponential
  backoff retrying forever, retries about once a minute; at 3x a 0.01 calls/min key it would
  be a call every half hour, which is no loop at all). It lasts 10-120 minutes (a handful of
  minutes of retries is the transient a backoff is for, not an incident).
* slow_ramp: the rate grows geometrically to 5-10x over 60-120 minutes: a leaked key used a
  little more every few minutes.
* Every rate is capped at RATE_CEILING calls/min, a per-key provider limit (Anthropic's tier
  4: 4,000 requests per minute); beyond it calls are refused, not metered. So a runaway of a
  500 calls/min identity reaches 8x at most.
* Affordability: a runaway or a retry loop adds at most EXTRA_CALLS calls (its duration is
  cut, never below its minimum), so a busy identity's incident does not multiply the run's
  size. Detection happens in the first minutes, so the cut changes no recall and no TTD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from meterguard.streams.simulation.config import Incident, SimConfig
from meterguard.streams.simulation.random_streams import WIDE_INCIDENT_STREAM, random_stream
from meterguard.streams.simulation.volume_bands import BAND_LABELS
from meterguard.streams.simulation.wide_population import PLAIN, Population, log_uniform

RATE_CEILING = 4000.0  # calls/min: a per-key provider limit
RETRY_FLOOR = 1.0  # calls/min: the slowest retry loop
EXTRA_CALLS = 20_000  # most calls a runaway or retry loop adds (affordability)
INCIDENT_GAP = 60  # minutes between two incidents of one identity
MAGNITUDE = (3.0, 50.0)  # runaway_agent and retry_loop: multiple of the usual rate
DURATION = {"runaway_agent": (5, 120), "retry_loop": (10, 120), "slow_ramp": (60, 120)}
RAMP_PEAK = (5.0, 10.0)
START_TRIES = 200


@dataclass(frozen=True)
class WideIncident:
    """One planned incident: its label, host, run-minute window and size."""

    label: Incident
    who: int  # identity index
    first: int  # run minutes [first, end)
    end: int
    magnitude: float  # rate multiple: runaway, retry (its own rate / usual), ramp (peak)
    retry_rate: float = 0.0  # retry_loop: calls per minute of the loop
    retry_error_share: float = 0.0
    retry_fingerprint: str = ""
    retry_tokens: int = 0  # retry_loop: input tokens of the repeated request

    def active(self, minute: int) -> bool:
        return self.first <= minute < self.end

    def details(self, pop: Population) -> dict[str, object]:
        """What the labels file carries besides the label: the host's band and the size."""
        out: dict[str, object] = {
            "base_rate": round(float(pop.rate[self.who]), 4),
            "band": BAND_LABELS[int(pop.band[self.who])],
            "magnitude": round(self.magnitude, 2),
        }
        if self.retry_rate:
            out["retry_rate"] = round(self.retry_rate, 3)
        return out


def plan_wide_incidents(cfg: SimConfig, pop: Population, start: datetime) -> list[WideIncident]:
    """The incidents of a wide run, deterministic from cfg, sorted by start."""
    rng = random_stream(cfg, WIDE_INCIDENT_STREAM)
    kinds, bands = cfg.incident_kinds, int(pop.band.max()) + 1
    windows: dict[int, list[tuple[int, int]]] = {}
    out = []
    cells = [(kinds[k % len(kinds)], (k // len(kinds)) % bands) for k in range(cfg.incidents)]
    # The longest kinds first: they need the most room on a host.
    for k in sorted(range(cfg.incidents), key=lambda k: (-DURATION[cells[k][0]][0], k)):
        kind, band = cells[k]
        members = rng.permutation(np.flatnonzero((pop.band == band) & (pop.role == PLAIN)))
        # The least booked host first (a host's incidents never overlap: see _place).
        hosts = sorted(members.tolist(), key=lambda i: sum(b - a for a, b in windows.get(i, [])))
        placed = _place(cfg, rng, hosts, pop, windows, kind)
        if placed is None:
            raise ValueError(
                f"no room for incident {k} ({kind}) in band {BAND_LABELS[band]}: "
                "raise minutes or identities, or lower incidents"
            )
        who, first, (duration, magnitude, retry_rate) = placed
        windows.setdefault(who, []).append((first, first + duration))
        label = Incident(
            kind,
            pop.names[who],
            start + timedelta(minutes=first),
            start + timedelta(minutes=first + duration),
        )
        incident = WideIncident(label, who, first, first + duration, magnitude)
        if kind == "retry_loop":
            fp = pop.fp_offset[who] + int(rng.integers(pop.fp_count[who]))
            own = rng.random() < 0.5  # one of its usual requests, or a new one (a new code path)
            prompt = pop.tokens[who] * (1 - pop.out_share[who]) * rng.lognormal(0, 0.3)
            incident = replace(
                incident,
                retry_rate=retry_rate,
                retry_error_share=float(rng.uniform(0.75, 0.97)),
                retry_fingerprint=pop.fingerprints[fp] if own else rng.bytes(16).hex(),
                retry_tokens=max(1, round(float(prompt))),
            )
        out.append(incident)
    return sorted(out, key=lambda w: (w.first, w.label.identity))


def _size(kind: str, rng: np.random.Generator, rate: float) -> tuple[int, float, float]:
    """(duration in minutes, magnitude, retry calls/min) of an incident on a `rate` identity."""
    lo, hi = DURATION[kind]
    if kind == "slow_ramp":
        return int(rng.integers(lo, hi + 1)), float(rng.uniform(*RAMP_PEAK)), 0.0
    duration = float(log_uniform(rng, lo, hi, 1)[0])
    multiple = float(log_uniform(rng, *MAGNITUDE, 1)[0])
    if kind == "runaway_agent":
        multiple = min(multiple, RATE_CEILING / rate)
        added = (multiple - 1) * rate
        return _cut(duration, added, lo), multiple, 0.0
    retry_rate = min(max(multiple * rate, RETRY_FLOOR), RATE_CEILING)
    return _cut(duration, retry_rate, lo), retry_rate / rate, retry_rate


def _cut(duration: float, added_per_minute: float, shortest: int) -> int:
    longest = EXTRA_CALLS / max(added_per_minute, 1e-9)
    return max(shortest, math.floor(min(duration, longest)))


def _place(
    cfg: SimConfig,
    rng: np.random.Generator,
    hosts: list[int],
    pop: Population,
    windows: dict[int, list[tuple[int, int]]],
    kind: str,
) -> tuple[int, int, tuple[int, float, float]] | None:
    """(host, first minute, size) of a window that fits the run and clears the host's other
    incidents. Each try draws the size (for the host's own rate) and the start anew, so in a
    crowded band (few hosts, long incidents) a shorter window may be what fits."""
    for who in hosts:
        taken = windows.get(who, [])
        for _ in range(START_TRIES):
            size = _size(kind, rng, float(pop.rate[who]))
            low, high = cfg.incident_after_minutes, cfg.minutes - size[0]
            if cfg.incident_latest_start is not None:
                high = min(high, cfg.incident_latest_start)
            if high < low:
                continue
            first = int(rng.integers(low, high + 1))
            end = first + size[0]
            if all(end + INCIDENT_GAP <= a or b + INCIDENT_GAP <= first for a, b in taken):
                return who, first, size
    return None
