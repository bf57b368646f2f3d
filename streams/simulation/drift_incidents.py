"""Incident kinds that change who, what or where, not how much.

drift_model (same calls on a much pricier model tier), drift_workload (the identity's
credential also used by a new workload from a new source) and offboarded (an identity
offboarded before the run calls again). Each is a `Spec` whose knobs are drawn at plan time.
"""

from __future__ import annotations

import numpy as np

from meterguard.streams.simulation.baseline import MINUTE_MS
from meterguard.streams.simulation.columns import Columns, Factors
from meterguard.streams.simulation.config import Incident
from meterguard.streams.simulation.incident_spec import Spec
from meterguard.streams.simulation.profiles import MODEL_INDEX, MODEL_NAMES, TEAMS
from meterguard.streams.simulation.world import World

# drift_model: the much pricier tier a developer switches to (3.75x to 25x per token).
PRICIER_TIER = {
    "gpt-4o-mini": "gpt-4o",
    "gpt-4o": "claude-opus-4",
    "claude-3-5-haiku-20241022": "claude-sonnet-4-20250514",
    "claude-sonnet-4-20250514": "claude-opus-4",
    "gemini-2.0-flash": "gemini-2.5-pro",
}
NEW_WORKLOADS = ("notebook", "scraper", "backfill", "sandbox", "eval", "prototype")


class DriftModel(Spec):
    """Same calls, same rate, on a much pricier model tier."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        usual = MODEL_NAMES[world.base_model[self.who]]
        self.model = MODEL_INDEX[PRICIER_TIER.get(usual, "claude-opus-4")]

    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            f.model[self.who] = self.model


class DriftWorkload(Spec):
    """The identity's credential also used by a new workload from a new source."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        profile = world.profiles[self.who]
        self.share = rng.uniform(0.6, 1.2)  # of the identity's own rate
        self.in_scale = rng.uniform(0.5, 2.5)
        workloads = sorted({p.workload for p in world.profiles} - {profile.workload})
        if workloads and rng.random() < 0.5:
            workload = str(rng.choice(workloads))  # a workload that exists, just not here
        else:
            workload = f"{rng.choice(TEAMS)}-{rng.choice(NEW_WORKLOADS)}"
        self.workload = world.add_workload(workload)
        own = set(world.sources_of(self.who))
        while (source := world.random_source(rng, str(rng.choice(["ext", "ci", "int"])))) in own:
            pass
        self.src = world.add_source(source)
        self.fps = np.array(world.new_fingerprints(rng, int(rng.integers(2, 5))))

    def extra(self, world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        if not self.active(minute):
            return Columns.empty()
        shape = world.plan.shape(world.plan.start_ms + minute * MINUTE_MS)[self.who]
        n = int(rng.poisson(world.plan.rate[self.who] * shape * self.share))
        who = np.full(n, self.who)
        return world.ordinary(
            rng, who, rng.integers(0, MINUTE_MS, n), f, in_scale=self.in_scale,
            fp=self.fps[rng.integers(0, self.fps.size, n)], src=np.full(n, self.src),
            wl=np.full(n, self.workload),
        )  # fmt: skip


class Offboarded(Spec):
    """Silent from the run start (offboarded before it), calls again during the window."""

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        super().__init__(world, incident, rng)
        self.factor = rng.uniform(0.3, 1.0)

    def scale(self, minute: int, f: Factors) -> None:
        if self.active(minute):
            f.rate[self.who] *= self.factor
            f.boost[self.who] *= self.factor
        else:
            f.rate[self.who] = 0.0
