"""The generated population's identity registry (streams/policy/registry.py): who owns each
simulated identity, as a service catalogue would say, with the gaps real ones have.

Each listed identity gets its events' team, environment and workload, the business unit of
its team (profiles.TEAM_BUSINESS_UNITS) and its team's on-call address as owner. On purpose, a
few identities are left out (*unregistered*: counted under their events' team and environment,
business unit "(unassigned)", and listed as unregistered) and a few are listed under another
team than their events name (*moved*: the registry wins, so their cost counts for the
registry's team and its business unit). Deterministic from the run's seed (REGISTRY_STREAM),
for either world; the traffic itself is not changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from meterguard.streams.policy.registry import Ownership, Registry
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.profiles import TEAM_BUSINESS_UNITS, TEAMS, plan_identities
from meterguard.streams.simulation.random_streams import REGISTRY_STREAM, random_stream
from meterguard.streams.simulation.wide_population import plan_population

UNREGISTERED_SHARE = 0.05  # of the population, at least one (with two identities or more)
MOVED_SHARE = 0.05  # likewise


@dataclass(frozen=True)
class Member:
    """One simulated identity as its events describe it."""

    identity: str
    team: str
    environment: str
    workload: str


@dataclass(frozen=True)
class PopulationRegistry:
    """The registry of a run, and where it departs from the events on purpose."""

    registry: Registry
    unregistered: tuple[str, ...]  # sorted
    moved: dict[str, tuple[str, str]]  # identity -> (its events' team, the registry's team)

    def document(self) -> dict[str, Any]:
        """The registry file's content (YAML-ready, identities sorted)."""
        return {
            "identities": {
                name: entry.model_dump(exclude_none=True)
                for name, entry in sorted(self.registry.identities.items())
            }
        }

    def to_yaml(self) -> str:
        moved = [f"{i} ({a} -> {b})" for i, (a, b) in sorted(self.moved.items())]
        head = [
            "# The simulated population's owners (meterguard simulate --registry-out).",
            "# Left out on purpose (unregistered):",
            *(f"#   {i}" for i in self.unregistered),
            "# Listed under another team than their events say (the registry wins):",
            *(f"#   {m}" for m in moved),
        ]
        return "\n".join(head) + "\n" + yaml.safe_dump(self.document(), sort_keys=False)


def business_unit_of(team: str) -> str:
    return TEAM_BUSINESS_UNITS.get(team, "other")


def population(cfg: SimConfig) -> list[Member]:
    """The run's identities with the team, environment and workload their events carry."""
    if cfg.world == "wide":
        pop = plan_population(cfg)
        return [
            Member(name, pop.teams[i], "prod", pop.workloads[i]) for i, name in enumerate(pop.names)
        ]
    return [Member(p.name, p.team, p.environment, p.workload) for p in plan_identities(cfg)]


def population_registry(cfg: SimConfig) -> PopulationRegistry:
    members = population(cfg)
    rng, n = random_stream(cfg, REGISTRY_STREAM), len(members)
    order = rng.permutation(n).tolist()
    left_out = min(max(1, round(UNREGISTERED_SHARE * n)), n - 1) if n > 1 else 0
    moved_count = min(max(1, round(MOVED_SHARE * n)), n - left_out - 1) if n > 2 else 0
    out = {members[i].identity for i in order[:left_out]}
    moving = {members[i].identity for i in order[left_out : left_out + moved_count]}
    identities: dict[str, Ownership] = {}
    moved: dict[str, tuple[str, str]] = {}
    for m in members:
        if m.identity in out:
            continue
        team = m.team
        if m.identity in moving:
            team = str(rng.choice([t for t in TEAMS if t != m.team]))
            moved[m.identity] = (m.team, team)
        identities[m.identity] = Ownership(
            team=team,
            business_unit=business_unit_of(team),
            environment=m.environment,
            owner=f"{team}-oncall@example.com",
            workload=m.workload,
        )
    return PopulationRegistry(Registry(identities=identities), tuple(sorted(out)), moved)
