"""The ground truth of a run: which identity misbehaves, as which kind, and when.

`plan_incidents()` draws the start of every incident from its own random stream and picks
one distinct eligible identity per incident: the classic agents-first order for a classic run,
and for the evaluation world an identity that suits each kind (see
`choose_incident_identities`).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from meterguard.streams.simulation.call_graph import build_call_graph, incoming_span_rate
from meterguard.streams.simulation.config import (
    Incident,
    SimConfig,
    incident_duration,
    incident_earliest_start,
)
from meterguard.streams.simulation.profiles import IdentityProfile, plan_identities
from meterguard.streams.simulation.random_streams import INCIDENT_STREAM, random_stream

MAX_INCOMING_SHARE = 0.25  # incident identities: child spans at most this x their own calls
MAX_INCIDENT_RATE = 15.0  # ... and at most this many calls per minute in all


def plan_incidents(cfg: SimConfig) -> list[Incident]:
    """The injected incidents (ground truth), deterministic from cfg, sorted by start."""
    return incidents_for(cfg, plan_identities(cfg))


def incidents_for(cfg: SimConfig, profiles: list[IdentityProfile]) -> list[Incident]:
    """plan_incidents() for an already planned population."""
    if not cfg.incidents:
        return []
    rng = random_stream(cfg, INCIDENT_STREAM)
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
