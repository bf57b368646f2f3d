"""`Spec`: the interface of every incident kind, as the evaluation world runs it.

One planned incident: its identity and run-minute window, and two hooks the world calls every
minute: `scale()` adjusts the per-identity factors before the ordinary traffic is drawn,
`extra()` adds calls of its own. Each kind is a subclass with its own knobs, drawn at plan
time from the kind's random stream (streams/simulation/load_incidents.py,
streams/simulation/drift_incidents.py).
"""

from __future__ import annotations

import numpy as np

from meterguard.streams.simulation.columns import Columns, Factors
from meterguard.streams.simulation.config import Incident
from meterguard.streams.simulation.world import World


class Spec:
    """One planned incident: identity index, run-minute window [first, end), kind's knobs."""

    bystanders: tuple[int, ...] = ()

    def __init__(self, world: World, incident: Incident, rng: np.random.Generator) -> None:
        self.incident = incident
        self.who = world.index[incident.identity]
        self.first = world.run_minute(incident.start)
        self.end = world.run_minute(incident.end)

    def active(self, minute: int) -> bool:
        return self.first <= minute < self.end

    def scale(self, minute: int, f: Factors) -> None:
        """Adjust the minute's per-identity factors (called for every minute)."""

    def extra(self, world: World, minute: int, rng: np.random.Generator, f: Factors) -> Columns:
        """Calls added to the ordinary traffic this minute."""
        return Columns.empty()
