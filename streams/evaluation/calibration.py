"""What a score threshold means: false episodes per identity-hour and incidents detected, at
thresholds from 0.5 to 0.95, from the replay's per-event scores. Pure, no I/O.

The replay's scores output (`replay --scores-out`) has one line per event: the detectors'
scores of its identity's latest *final* minute, as of just after that event. `minute_scores()`
turns the lines back into scored minutes: a minute m is final once the identity's watermark
(its latest event time) reaches (m + 1) min + the allowed lateness, so the line's snapshot is
the scores of minute floor((watermark - lateness) / 1 min) - 1. Several minutes closed by one
event show only the last one's scores: an identity that calls every few minutes has minutes
nobody sees here (`Calibration.coverage` says how many were seen), though the policy saw them.

`calibrate()` counts, per threshold and detector, *episodes*: runs of an identity's seen
minutes at or above the threshold, a run broken by a seen minute below it or by more than
MAX_UNSEEN_GAP unseen minutes (the policy resolves an episode after that many calm minutes).
An episode is false unless one of its minutes ends within an incident of its identity
± grace (budget: at or after an incident's start, as the scoring excuses it). An incident is
detected at a threshold when a seen minute of its identity ending within [start, end + grace]
scores at least that much on some detector, as alerts are matched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from meterguard.streams.simulation.config import Incident

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
MAX_UNSEEN_GAP = 5  # minutes: the policy's resolve_after_minutes default
MINUTE_MS = 60_000

MinuteScores = dict[str, dict[int, dict[str, float]]]  # identity -> epoch minute -> scores


def minute_scores(lines: Iterable[Mapping[str, Any]], lateness_s: float) -> MinuteScores:
    """Scored minutes per identity from the replay's score lines (in replay order)."""
    lateness_ms = lateness_s * 1000
    watermark: dict[str, float] = {}
    out: MinuteScores = {}
    for line in lines:
        scores = line.get("scores")
        identity = str(line["identity"])
        if line.get("status", "new") == "new":
            at = _ms(line["event_time"])
            if at > watermark.get(identity, -1.0):
                watermark[identity] = at
        if not scores or identity not in watermark:
            continue  # nothing scored yet for this identity
        minute = int((watermark[identity] - lateness_ms) // MINUTE_MS) - 1
        out.setdefault(identity, {})[minute] = {str(k): float(v) for k, v in scores.items()}
    return out


def _ms(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value) * (1000 if value < 1e11 else 1)  # epoch s or ms
    return datetime.fromisoformat(str(value)).timestamp() * 1000


@dataclass(frozen=True)
class CalibrationRow:
    threshold: float
    false_episodes: int
    identity_hours: float
    detected: int
    incidents: int
    by_detector: dict[str, int] = field(default_factory=dict)

    @property
    def per_identity_hour(self) -> float | None:
        return self.false_episodes / self.identity_hours if self.identity_hours > 0 else None

    @property
    def detected_share(self) -> float | None:
        return self.detected / self.incidents if self.incidents else None


@dataclass(frozen=True)
class Calibration:
    rows: list[CalibrationRow]
    seen_minutes: int  # identity-minutes whose scores the lines showed
    identity_minutes: float  # identity-hours x 60

    @property
    def coverage(self) -> float | None:
        return (
            min(1.0, self.seen_minutes / self.identity_minutes) if self.identity_minutes else None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "coverage": self.coverage,
            "seen_minutes": self.seen_minutes,
            "max_unseen_gap_minutes": MAX_UNSEEN_GAP,
            "thresholds": [
                {
                    "threshold": r.threshold,
                    "false_episodes": r.false_episodes,
                    "identity_hours": r.identity_hours,
                    "false_per_identity_hour": r.per_identity_hour,
                    "false_by_detector": r.by_detector,
                    "incidents": r.incidents,
                    "detected": r.detected,
                    "detected_share": r.detected_share,
                }
                for r in self.rows
            ],
        }


def calibrate(
    scores: MinuteScores,
    incidents: Sequence[Incident],
    identity_hours: float,
    grace: timedelta,
    thresholds: Sequence[float] = THRESHOLDS,
) -> Calibration:
    """False episodes and detected incidents at each threshold (see the module docstring)."""
    by_identity: dict[str, list[tuple[int, Incident]]] = {}
    for k, inc in enumerate(incidents):
        by_identity.setdefault(inc.identity, []).append((k, inc))
    false: dict[float, dict[str, int]] = {t: {} for t in thresholds}
    best = [0.0] * len(incidents)  # per incident: its highest seen score in its window
    for identity, minutes in scores.items():
        seen = np.array(sorted(minutes), dtype=np.int64)
        names = sorted({d for s in minutes.values() for d in s})
        matrix = np.array([[minutes[m].get(d, 0.0) for d in names] for m in seen.tolist()])
        ends = (seen + 1) * 60.0  # window end, epoch s
        mine = by_identity.get(identity, [])
        near = np.zeros(seen.size, dtype=bool)
        after_start = np.zeros(seen.size, dtype=bool)
        for k, inc in mine:
            start, end, pad = inc.start.timestamp(), inc.end.timestamp(), grace.total_seconds()
            near |= (ends >= start - pad) & (ends <= end + pad)
            after_start |= ends >= start
            inside = (ends >= start) & (ends <= end + pad)
            if inside.any():
                best[k] = max(best[k], float(matrix[inside].max()))
        for j, name in enumerate(names):
            excused = after_start | near if name == "budget" else near
            for t in thresholds:
                count = _false_runs(seen, matrix[:, j] >= t, excused)
                if count:
                    false[t][name] = false[t].get(name, 0) + count
    rows = [
        CalibrationRow(
            t,
            sum(false[t].values()),
            identity_hours,
            sum(b >= t for b in best),
            len(incidents),
            dict(sorted(false[t].items())),
        )
        for t in thresholds
    ]
    seen_total = sum(len(m) for m in scores.values())
    return Calibration(rows, seen_total, identity_hours * 60)


def _false_runs(seen: np.ndarray, above: np.ndarray, excused: np.ndarray) -> int:
    """Runs of `above` minutes (broken by a seen minute below, or an unseen gap over
    MAX_UNSEEN_GAP) none of whose minutes is excused."""
    if not above.any():
        return 0
    gap = np.diff(seen, prepend=seen[0] - 1) - 1
    previous = np.concatenate([[False], above[:-1]])
    starts = above & (~previous | (gap > MAX_UNSEEN_GAP))
    run = np.cumsum(starts) - 1  # run number of each minute (meaningful where above)
    runs = int(starts.sum())
    excused_runs = np.zeros(runs, dtype=bool)
    excused_runs[run[above & excused]] = True
    return runs - int(excused_runs.sum())


def pool(parts: Sequence[Calibration]) -> Calibration:
    """Several runs' calibrations as one (counts summed)."""
    rows = []
    for k, first in enumerate(parts[0].rows):
        same = [p.rows[k] for p in parts]
        detectors: dict[str, int] = {}
        for r in same:
            for name, n in r.by_detector.items():
                detectors[name] = detectors.get(name, 0) + n
        rows.append(
            CalibrationRow(
                first.threshold,
                sum(r.false_episodes for r in same),
                sum(r.identity_hours for r in same),
                sum(r.detected for r in same),
                sum(r.incidents for r in same),
                dict(sorted(detectors.items())),
            )
        )
    return Calibration(
        rows, sum(p.seen_minutes for p in parts), sum(p.identity_minutes for p in parts)
    )
