"""The simulator's random streams: one numpy generator per (cfg.seed, stream[, minute]).

Every random draw of a run comes from one of these, so the same SimConfig always yields the
same events, and one minute's traffic does not depend on how many events earlier minutes
happened to draw. The stream numbers are part of the generated output: never renumber them.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from meterguard.streams.simulation.config import SimConfig

# Independent random streams: adding draws to one never shifts another.
IDENTITY_STREAM, INCIDENT_STREAM, TRAFFIC_STREAM = 1, 2, 3
# The evaluation world's streams, after the classic ones.
GRAPH_STREAM, WORLD_STREAM, SPEC_STREAM, EXTRA_STREAM = 4, 5, 6, 7
# The generated identity registry (registry_plan.py) and delivery faults (delivery_faults.py),
# for every world: they never touch the traffic's own streams.
REGISTRY_STREAM, FAULT_STREAM = 8, 9
# The wide world's streams (streams/simulation/wide_*.py): start time, population, its
# level noise, incidents, each minute's calls, and the sessions starting in each minute.
WIDE_START_STREAM, WIDE_PEOPLE_STREAM, WIDE_LEVEL_STREAM = 20, 21, 22
WIDE_INCIDENT_STREAM, WIDE_TRAFFIC_STREAM, WIDE_SESSION_STREAM = 23, 24, 25


def random_stream(cfg: SimConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, *stream])


def pick_weighted(rng: np.random.Generator, weights: dict[str, float], n: int) -> list[str]:
    picks = rng.choice(list(weights), size=n, p=list(weights.values()))
    # ndarray.tolist() is typed Any (its items depend on the dtype): here they are the str keys.
    return cast(list[str], picks.tolist())
