"""Detection quality by volume band: recall and time to detect per band and per kind x band.

Pure. Every incident's identity has a usual rate (calls/min), hence a band
(streams/simulation/volume_bands.py); an average over bands hides a detector that misses
every quiet identity, so the targets hold per band too: recall >= RECALL_TARGET in every band,
and for the fast kinds (runaway_agent, retry_loop) a median time to detect of at most 3 minutes
in every band from 0.1 calls/min up and 10 minutes below it (a key that calls twice an hour
gives the pipeline little to see in 3 minutes: its minutes close only when it calls again).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from meterguard.streams.simulation.volume_bands import BAND_LABELS, band_of

RECALL_TARGET = 0.95


class Targets:
    """Whether a row of recall and time to detect meets its targets (kind and band rows)."""

    incidents: int
    recall: float | None
    median_ttd_s: float | None
    ttd_target_s: float | None

    @property
    def recall_ok(self) -> bool | None:
        return None if self.recall is None else self.recall >= RECALL_TARGET

    @property
    def ttd_ok(self) -> bool | None:
        if self.ttd_target_s is None or not self.incidents:
            return None
        return self.median_ttd_s is not None and self.median_ttd_s <= self.ttd_target_s


FAST_KINDS = ("runaway_agent", "retry_loop")
FAST_TTD_S = 180.0  # bands from 0.1 calls/min up
QUIET_TTD_S = 600.0  # the band below 0.1 calls/min


def ttd_target_s(kind: str | None, band: int) -> float | None:
    """The median TTD target of this kind in this band (None: not judged)."""
    if kind not in FAST_KINDS:
        return None
    return QUIET_TTD_S if band == 0 else FAST_TTD_S


@dataclass(frozen=True)
class Detection:
    """What the band rows need of one incident outcome."""

    kind: str
    base_rate: float | None  # the identity's usual calls/min; None: unknown (no band)
    ttd_s: float | None  # None: missed


@dataclass(frozen=True)
class BandRow(Targets):
    band: str
    kind: str | None  # None: every kind of the band
    incidents: int
    detected: int
    recall: float | None
    median_ttd_s: float | None
    p90_ttd_s: float | None
    ttd_target_s: float | None = None


def summarize(ttds: Sequence[float | None]) -> tuple[int, float | None, float | None, float | None]:
    """(detected, recall, median TTD, p90 TTD by nearest rank) of these outcomes' TTDs."""
    found = sorted(t for t in ttds if t is not None)
    recall = len(found) / len(ttds) if ttds else None
    if not found:
        return 0, recall, None, None
    p90 = found[math.ceil(0.9 * len(found)) - 1]
    return len(found), recall, statistics.median(found), p90


def band_rows(detections: Sequence[Detection], kinds: Sequence[str] = ()) -> list[BandRow]:
    """One row per band (all kinds), then one per kind x band; bands without any incident
    are shown empty (n = 0) so a table always has every band."""
    banded = [(d, band_of(d.base_rate)) for d in detections if d.base_rate is not None]
    order = list(dict.fromkeys([*kinds, *(d.kind for d in detections)]))
    rows = []
    for kind in [None, *order]:
        for b, label in enumerate(BAND_LABELS):
            mine = [d.ttd_s for d, db in banded if db == b and kind in (None, d.kind)]
            detected, recall, median, p90 = summarize(mine)
            target = ttd_target_s(kind, b)
            rows.append(BandRow(label, kind, len(mine), detected, recall, median, p90, target))
    return rows


def false_by_detector(detectors: Sequence[str]) -> dict[str, int]:
    """False alerts per detector (one entry per false episode's detector), largest first."""
    return dict(sorted(Counter(detectors).items(), key=lambda kv: (-kv[1], kv[0])))
