"""Ordinary (Poisson) metering traffic, and the classic world's events.

Pure: no Kafka, no files, no wall clock. `BaselinePlan` turns the population and the incident
labels into per-identity numpy columns once per run; `base_calls()` draws one run minute's
ordinary calls from the (seed, TRAFFIC_STREAM, minute) stream in a fixed order, so a minute
rebuilt on its own matches the full run. `classic_minute_events()` renders them as the classic
world's events (only `runaway_agent` incidents, no traps), which never change; the evaluation
world (streams/simulation/world_traffic.py) builds its events on the same ordinary calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from meterguard.streams.simulation.config import INCIDENT_EFFECTS, SimConfig
from meterguard.streams.simulation.incident_plan import incidents_for
from meterguard.streams.simulation.profiles import (
    BATCH_BURST_MINUTES,
    BATCH_QUIET_SHARE,
    DIURNAL_AMPLITUDE,
    DIURNAL_PEAK_HOUR_UTC,
    ERROR_RATE,
    ERROR_TYPES,
    MODELS,
    TRACED_AGENT_SHARE,
    plan_identities,
)
from meterguard.streams.simulation.random_streams import (
    TRAFFIC_STREAM,
    pick_weighted,
    random_stream,
)

MINUTE_MS = 60_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BaselinePlan:
    """Per-identity numpy columns and per-event string lookups, built once per run."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg, self.profiles = cfg, plan_identities(cfg)
        self.incidents = incidents_for(cfg, self.profiles)
        start_us = (cfg.start - EPOCH) // timedelta(microseconds=1)
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


def format_times(epoch_ms: np.ndarray) -> list[str]:
    """RFC 3339 UTC with milliseconds and Z; one strftime per wall minute, not per event."""
    prefixes: dict[int, str] = {}
    out = []
    for t in epoch_ms.tolist():
        wall_minute, rem = divmod(t, MINUTE_MS)
        prefix = prefixes.get(wall_minute)
        if prefix is None:
            moment = EPOCH + timedelta(minutes=wall_minute)
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
    fp: np.ndarray  # index into BaselinePlan.fingerprints
    traced: np.ndarray  # bool: carries trace context
    error_types: list[str]  # one per error, in event order
    rng: np.random.Generator  # the minute's traffic stream, for any draw after these


def base_calls(
    plan: BaselinePlan,
    minute: int,
    rate_f: np.ndarray,
    tok_in_f: np.ndarray,
    tok_out_f: np.ndarray,
    repeat: np.ndarray,
) -> BaseCalls:
    """The ordinary traffic of one run minute; the draw order is fixed (classic output)."""
    rng = random_stream(plan.cfg, TRAFFIC_STREAM, minute)
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
    error_types = pick_weighted(rng, ERROR_TYPES, int(error.sum()))
    return BaseCalls(
        who, offsets, error, tok_in, tok_out, noise, plan.fp_offset[who] + pick, traced,
        error_types, rng,
    )  # fmt: skip


def _draw(plan: BaselinePlan, minute: int) -> dict[str, Any]:
    """Per-event columns (Python lists) of one classic run minute, sorted by time."""
    rate_f, tok_f, repeat = plan.effects(minute)
    calls = base_calls(plan, minute, rate_f, tok_f, tok_f, repeat)
    who, tok_in, tok_out = calls.who, calls.tok_in, calls.tok_out
    cost = (tok_in * plan.price_in[who] + tok_out * plan.price_out[who]) / 1e6
    latency = (150 + tok_out * plan.ms_per_token[who]) * calls.latency_noise
    return {
        "who": who.tolist(),
        "time": format_times(plan.start_ms + minute * MINUTE_MS + calls.offsets),
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


def classic_minute_events(plan: BaselinePlan, minute: int, first_seq: int) -> list[dict[str, Any]]:
    """The classic world's events of run minute `minute`, sorted by event_time."""
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
