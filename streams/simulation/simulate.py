"""Synthetic LLM metering traffic with labelled incidents: the simulator's entry points.

Pure: no Kafka, no files, no wall clock. Every random draw comes from a generator derived from
(cfg.seed, stream[, minute]) (streams/simulation/random_streams.py), so the same SimConfig
always yields the same events and one minute's traffic does not depend on how many events
earlier minutes happened to draw.

Two worlds share the simulator. The classic one (only `runaway_agent` incidents, no traps) is
what the demo streams; its events never change (streams/simulation/baseline.py). The
evaluation world (`SimConfig.enriched`: traps on, or any other incident kind) adds credentials
and sources, an agent call graph with trace context, realistic traps and the other incident
kinds (streams/simulation/world_traffic.py and the modules it builds on). A third, the wide
world (`SimConfig.world == "wide"`), spreads identities over five decades of volume, with
bursty noise, weekly rhythm, its own traps and incidents in every volume band
(streams/simulation/wide_world.py); the functions below answer for whichever world cfg names.

The layers, bottom up: config (SimConfig, Incident), random_streams, profiles (the
population), call_graph, incident_plan (the labels), baseline (ordinary traffic), budgets,
columns, world, traps, incident_spec, load_incidents, drift_incidents, world_traffic, and this
module on top.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from meterguard.streams.simulation.baseline import BaselinePlan, classic_minute_events
from meterguard.streams.simulation.budgets import budgets_for
from meterguard.streams.simulation.config import Incident, SimConfig
from meterguard.streams.simulation.detectability import oracle_nats
from meterguard.streams.simulation.incident_plan import plan_incidents
from meterguard.streams.simulation.profiles import plan_identities
from meterguard.streams.simulation.wide_population import wide_start
from meterguard.streams.simulation.wide_world import WidePlan
from meterguard.streams.simulation.wide_world import generate as generate_wide
from meterguard.streams.simulation.world_traffic import WorldTraffic


class SimPlan(BaselinePlan):
    """A run planned once: the BaselinePlan, plus the evaluation world for enriched runs."""

    def __init__(self, cfg: SimConfig) -> None:
        super().__init__(cfg)
        self.world: WorldTraffic | None = WorldTraffic(self) if cfg.enriched else None


def generate_minute(plan: SimPlan, minute: int, first_seq: int) -> list[dict[str, Any]]:
    """The events of run minute `minute`, sorted by event_time, ids counted from first_seq."""
    if plan.world is not None:
        return plan.world.minute_events(minute, first_seq)
    return classic_minute_events(plan, minute, first_seq)


def generate(cfg: SimConfig) -> Iterator[dict[str, Any]]:
    """All events of the run, lazily, in non-decreasing event_time order."""
    if cfg.world == "wide":
        yield from generate_wide(cfg)
        return
    plan = SimPlan(cfg)
    seq = 0
    for minute in range(cfg.minutes):
        events = generate_minute(plan, minute, seq)
        seq += len(events)
        yield from events


def offboarded_identities(cfg: SimConfig) -> list[str]:
    """Identities the policy should list as offboarded (sorted); none in the classic and the
    wide world."""
    if cfg.world == "wide":
        return []
    world = SimPlan(cfg).world
    return world.offboarded_identities() if world is not None else []


def budgets(cfg: SimConfig) -> dict[str, float]:
    """Daily USD budget per identity: 3x its expected spend in a UTC day of this run.

    Computed from the profiles (rate, token sizes, model prices, daily rhythm), not from the
    random draw. Only the part of a day the run covers counts, as the pipeline's windows
    start empty: normal identities end the day near a third of their budget, a budget_burn
    incident crosses it about two thirds of the way through its window. None in the wide world
    (it has no budget_burn incidents).
    """
    if cfg.world == "wide":
        return {}
    plan = SimPlan(cfg)
    return budgets_for(plan, plan.world)


def incident_bystanders(cfg: SimConfig) -> dict[Incident, tuple[str, ...]]:
    """Identities other than the labelled one whose traffic an incident also changes.

    Only agent_chain has any: the other agents of the cycle. Alerts on them during the
    incident are consequences of it, not false alerts of a normal identity.
    """
    if cfg.world == "wide":
        return {}
    world = SimPlan(cfg).world
    return world.bystanders() if world is not None else {}


def incidents(cfg: SimConfig) -> list[Incident]:
    """The run's ground truth, sorted by start, for either world."""
    return WidePlan(cfg).labels if cfg.world == "wide" else plan_incidents(cfg)


def incident_details(cfg: SimConfig) -> list[dict[str, object]]:
    """Per incident of `incidents(cfg)` (same order): the host's base rate and band, the size
    and the evidence an oracle could gather (wide world: detectability.py); empty dicts in the
    classic world."""
    if cfg.world != "wide":
        return [{} for _ in plan_incidents(cfg)]
    plan = WidePlan(cfg)
    return [
        {**w.details(plan.pop), "oracle_nats": round(oracle_nats(plan, w), 1)}
        for w in plan.incidents
    ]


def base_rates(cfg: SimConfig) -> dict[str, float]:
    """Each identity's usual calls per minute (its volume band), for either world."""
    if cfg.world == "wide":
        return WidePlan(cfg).base_rates()
    return {p.name: p.rate_per_min for p in plan_identities(cfg)}


def run_start(cfg: SimConfig) -> datetime:
    """When the run's first minute begins: cfg.start, or the wide world's seeded weekday and
    hour at or before it."""
    return wide_start(cfg) if cfg.world == "wide" else cfg.start
