"""Volume bands: an identity's usual rate in calls per minute, by decade.

The wide world (streams/simulation/wide_world.py) draws its population band by band, and the
evaluation (streams/evaluation/bands.py) reports recall and time to detect per band, so a
detector that only works on busy identities cannot hide behind an average. Pure constants and
one lookup; no random draw.
"""

from __future__ import annotations

import bisect

# Upper edges (calls/min) of every band but the last; a rate on an edge belongs to the band
# above it (0.1 calls/min is "0.1–1").
BAND_EDGES: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
BAND_LABELS: tuple[str, ...] = ("<0.1", "0.1–1", "1–10", "10–100", ">100")
# The wide world's rates: log-uniform over 0.01-500 calls/min, band by band.
WIDE_RATE_RANGE = (0.01, 500.0)
BAND_RANGES: tuple[tuple[float, float], ...] = tuple(
    zip((WIDE_RATE_RANGE[0], *BAND_EDGES), (*BAND_EDGES, WIDE_RATE_RANGE[1]), strict=True)
)


def band_of(rate_per_min: float) -> int:
    """Index into BAND_LABELS of an identity whose usual rate is `rate_per_min` calls/min."""
    return bisect.bisect_right(BAND_EDGES, rate_per_min)


def band_label(rate_per_min: float) -> str:
    return BAND_LABELS[band_of(rate_per_min)]
