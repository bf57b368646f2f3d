"""Detection-quality scoring: alerts matched to labelled incidents. Pure, no I/O.

`score()` turns the firing alerts, the simulator's labels and the identity-hours observed into
a Report; `identity_hours()` and `IdentitySpans` measure those identity-hours from the events;
`pool()` merges the reports of several seeds into one (incidents, false alerts and
identity-hours added up, every rate recomputed from the sums).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from meterguard.models import Alert, episode_id_of
from meterguard.streams.evaluation import attribution, calibration
from meterguard.streams.evaluation.report import (
    TTD_TARGETS_S,
    FalseAlert,
    IncidentOutcome,
    KindRow,
    Overall,
    Report,
)
from meterguard.streams.simulation.config import Incident
from meterguard.timeutil import parse_event_time

DEFAULT_GRACE = timedelta(minutes=5)


@dataclass(frozen=True)
class _Firing:
    identity: str
    detector: str
    episode: str  # Alert.episode_id: escalations of one episode share it
    at: datetime  # window_end (else event_time): when the alert says the anomaly was
    event_time: datetime


def score(
    alerts: Sequence[Alert] | Sequence[Mapping[str, Any]],
    incidents: Sequence[Incident],
    identity_hours: float,
    grace: timedelta = DEFAULT_GRACE,
    kinds: Sequence[str] = (),
    bystanders: Mapping[Incident, Sequence[str]] | None = None,
    base_rates: Mapping[str, float] | None = None,
) -> Report:
    """Labelled incidents vs. the firing alerts; `kinds` lists rows to show even when empty.

    An incident is detected by a firing alert of its identity whose window end lies in
    [start, end + grace]; its time to detect is that alert's event time minus the start.
    An episode (first alert plus escalations) matching no incident of its identity is one
    false alert. Not false either (but no detection): alerts on an incident's `bystanders`
    during its window (the other agents of a chain loop), and budget alerts after an
    incident of that identity began (the incident's spend is real and stays spent).
    """
    firing = _firing(alerts)
    by_identity: dict[str, list[_Firing]] = defaultdict(list)
    for f in firing:
        by_identity[f.identity].append(f)
    rates = base_rates or {}
    outcomes = [
        dataclasses.replace(
            _outcome(inc, by_identity[inc.identity], grace), base_rate=rates.get(inc.identity)
        )
        for inc in incidents
    ]

    windows: dict[str, list[Incident]] = defaultdict(list)
    for inc in incidents:
        windows[inc.identity].append(inc)
    for inc, others in (bystanders or {}).items():
        for other in others:
            windows[other].append(inc)
    episodes: dict[str, list[_Firing]] = defaultdict(list)
    for f in firing:
        episodes[f.episode].append(f)
    false_alerts = []
    for members in episodes.values():
        if any(_excused(f, inc, grace) for f in members for inc in windows[f.identity]):
            continue
        first = min(members, key=lambda f: f.event_time)
        false_alerts.append(FalseAlert(first.identity, first.detector, first.at, first.event_time))
    false_alerts.sort(key=lambda f: (f.event_time, f.identity, f.detector))
    per_1000h = 1000 * len(false_alerts) / identity_hours if identity_hours > 0 else None
    return Report(
        rows=_rows(outcomes, kinds),
        overall=Overall(len(false_alerts), identity_hours, per_1000h),
        outcomes=outcomes,
        false_alerts=false_alerts,
        grace_s=grace.total_seconds(),
    )


def pool(reports: Sequence[Report], kinds: Sequence[str] = ()) -> Report:
    """Several runs' reports (one per seed) as one: the pooled table."""
    outcomes = [o for r in reports for o in r.outcomes]
    false_alerts = [f for r in reports for f in r.false_alerts]
    hours = sum(r.overall.identity_hours for r in reports)
    per_1000h = 1000 * len(false_alerts) / hours if hours > 0 else None
    parts = [r.calibration for r in reports if r.calibration is not None]
    checks = [r.attribution for r in reports if r.attribution is not None]
    return Report(
        rows=_rows(outcomes, kinds),
        overall=Overall(len(false_alerts), hours, per_1000h),
        outcomes=outcomes,
        false_alerts=false_alerts,
        grace_s=reports[0].grace_s,
        notes=list(dict.fromkeys(n for r in reports for n in r.notes)),
        calibration=calibration.pool(parts) if len(parts) == len(reports) else None,
        attribution=attribution.pool(checks) if len(checks) == len(reports) else None,
    )


class IdentitySpans:
    """First and last event time per identity, fed one event at a time."""

    def __init__(self) -> None:
        self.first: dict[str, datetime] = {}
        self.last: dict[str, datetime] = {}

    def add(self, event: Mapping[str, Any]) -> None:
        identity, at = event["identity"], parse_event_time(event["event_time"])
        if identity not in self.first or at < self.first[identity]:
            self.first[identity] = at
        if identity not in self.last or at > self.last[identity]:
            self.last[identity] = at

    @property
    def hours(self) -> float:
        seconds = sum((self.last[i] - self.first[i]).total_seconds() for i in self.first)
        return seconds / 3600


def identity_hours(events: Iterable[Mapping[str, Any]]) -> float:
    """Sum over identities of (last event time - first event time), in hours."""
    spans = IdentitySpans()
    for event in events:
        spans.add(event)
    return spans.hours


def _firing(alerts: Iterable[Alert | Mapping[str, Any]]) -> list[_Firing]:
    out = []
    for index, alert in enumerate(alerts):
        doc: Mapping[str, Any] = alert.model_dump() if isinstance(alert, Alert) else alert
        if doc.get("status") != "firing":
            continue
        identity, detector = str(doc["identity"]), str(doc.get("detector", ""))
        event_time = parse_event_time(doc["event_time"])
        window_end = doc.get("window_end")
        # An alert with neither episode nor id (hand-made input) is an episode of its own.
        episode = episode_id_of({**doc, "alert_id": doc.get("alert_id") or f"#{index}"})
        at = event_time if window_end is None else parse_event_time(window_end)
        out.append(_Firing(identity, detector, episode, at, event_time))
    return out


def _excused(alert: _Firing, incident: Incident, grace: timedelta) -> bool:
    if alert.detector == "budget" and alert.at >= incident.start:
        return True
    return _within(alert, incident, grace)


def _within(alert: _Firing, incident: Incident, grace: timedelta) -> bool:
    return incident.start <= alert.at <= incident.end + grace


def _outcome(incident: Incident, alerts: list[_Firing], grace: timedelta) -> IncidentOutcome:
    hits = [a for a in alerts if _within(a, incident, grace)]
    if not hits:
        return IncidentOutcome(incident, None, None)
    first = min(hits, key=lambda a: a.event_time)
    ttd = max(0.0, (first.event_time - incident.start).total_seconds())
    return IncidentOutcome(incident, ttd, first.detector)


def _rows(outcomes: list[IncidentOutcome], kinds: Sequence[str]) -> list[KindRow]:
    order = list(dict.fromkeys([*kinds, *(o.incident.kind for o in outcomes)]))
    rows = []
    for kind in order:
        mine = [o for o in outcomes if o.incident.kind == kind]
        ttds = sorted(o.ttd_s for o in mine if o.ttd_s is not None)
        rows.append(
            KindRow(
                kind=kind,
                incidents=len(mine),
                detected=len(ttds),
                recall=len(ttds) / len(mine) if mine else None,
                median_ttd_s=statistics.median(ttds) if ttds else None,
                p90_ttd_s=ttds[math.ceil(0.9 * len(ttds)) - 1] if ttds else None,  # nearest rank
                ttd_target_s=TTD_TARGETS_S.get(kind),
            )
        )
    return rows
