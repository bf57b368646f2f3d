"""An evaluation's report: the targets, the results per incident kind, and their rendering.

`Report` is what scoring produces and `meterguard evaluate` prints: recall and time to detect
per kind and per volume band (streams/evaluation/bands.py), false alerts per 1,000
identity-hours in total and per detector, each against its target, and what a score threshold
means (streams/evaluation/calibration.py); rendered as JSON (`to_json`) or as rich tables
(`table` here, the others in streams/evaluation/report_tables.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from rich import box
from rich.table import Table

from meterguard.detectors.spike import SpikeConfig
from meterguard.streams.evaluation.attribution import AttributionCheck
from meterguard.streams.evaluation.bands import (
    FAST_TTD_S,
    QUIET_TTD_S,
    RECALL_TARGET,
    BandRow,
    Detection,
    Targets,
    band_rows,
    false_by_detector,
)
from meterguard.streams.evaluation.calibration import Calibration
from meterguard.streams.simulation.config import Incident
from meterguard.streams.simulation.volume_bands import band_label
from meterguard.timeutil import format_time

TTD_TARGETS_S: dict[str, float] = {"runaway_agent": FAST_TTD_S, "retry_loop": FAST_TTD_S}
FALSE_PER_1000H_TARGET = 0.5
# An incident is within reach when an oracle's expected evidence over it reaches what an alert
# needs (spike's alert_evidence, policy default): streams/simulation/detectability.py.
ORACLE_REACH_NATS = SpikeConfig().alert_evidence


@dataclass(frozen=True)
class ReachRow:
    """Recall over the incidents an oracle could detect (kind None: every kind)."""

    kind: str | None
    incidents: int
    within_reach: int
    detected_within: int
    detected_beyond: int

    @property
    def recall(self) -> float | None:
        return self.detected_within / self.within_reach if self.within_reach else None

    @property
    def recall_ok(self) -> bool | None:
        return None if self.recall is None else self.recall >= RECALL_TARGET


@dataclass(frozen=True)
class KindRow(Targets):
    kind: str
    incidents: int
    detected: int
    recall: float | None  # None: no incident of this kind was injected
    median_ttd_s: float | None
    p90_ttd_s: float | None
    ttd_target_s: float | None = None


@dataclass(frozen=True)
class Overall:
    false_alerts: int
    identity_hours: float
    false_per_1000h: float | None  # None: no identity-hours to divide by

    @property
    def ok(self) -> bool:
        if self.false_per_1000h is None:
            return self.false_alerts == 0
        return self.false_per_1000h <= FALSE_PER_1000H_TARGET


@dataclass(frozen=True)
class IncidentOutcome:
    incident: Incident
    ttd_s: float | None  # None: missed
    detector: str | None
    base_rate: float | None = None  # the identity's usual calls/min (its volume band)
    details: dict[str, Any] = field(default_factory=dict)  # the simulator's: size, ...


@dataclass(frozen=True)
class FalseAlert:
    identity: str
    detector: str
    window_end: datetime
    event_time: datetime


@dataclass(frozen=True)
class Report:
    rows: list[KindRow]
    overall: Overall
    outcomes: list[IncidentOutcome]
    false_alerts: list[FalseAlert]
    grace_s: float
    notes: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    calibration: Calibration | None = None
    attribution: AttributionCheck | None = None  # roll-ups and root cost: exact?

    @property
    def bands(self) -> list[BandRow]:
        """Per band (kind None), then per kind x band; see streams/evaluation/bands.py."""
        detections = [Detection(o.incident.kind, o.base_rate, o.ttd_s) for o in self.outcomes]
        return band_rows(detections, [r.kind for r in self.rows])

    @property
    def reach(self) -> list[ReachRow]:
        """Per kind, then in total: recall within an oracle's reach; empty when the world
        does not say (the classic world)."""
        known = [o for o in self.outcomes if "oracle_nats" in o.details]
        if not known:
            return []

        def row(kind: str | None, outcomes: list[IncidentOutcome]) -> ReachRow:
            reach = [o.details["oracle_nats"] >= ORACLE_REACH_NATS for o in outcomes]
            caught = [o.ttd_s is not None for o in outcomes]
            return ReachRow(
                kind,
                len(outcomes),
                sum(reach),
                sum(r and c for r, c in zip(reach, caught, strict=True)),
                sum(c and not r for r, c in zip(reach, caught, strict=True)),
            )

        kinds = list(dict.fromkeys(o.incident.kind for o in known))
        rows = [row(k, [o for o in known if o.incident.kind == k]) for k in kinds]
        return [*rows, row(None, known)]

    @property
    def false_by_detector(self) -> dict[str, int]:
        return false_by_detector([f.detector for f in self.false_alerts])

    @property
    def passed(self) -> bool:
        bands = self.bands
        flags = [
            self.overall.ok,
            *(r.recall_ok for r in self.rows),
            *(r.ttd_ok for r in self.rows),
            *(b.recall_ok for b in bands if b.kind is None),
            *(b.ttd_ok for b in bands if b.kind is not None),
            None if self.attribution is None else self.attribution.ok,
        ]
        return all(flag is not False for flag in flags)

    def row(self, kind: str) -> KindRow | None:
        return next((r for r in self.rows if r.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "targets": {
                "recall_min": RECALL_TARGET,
                "median_ttd_max_s": TTD_TARGETS_S,
                "band_median_ttd_max_s": {"<0.1": QUIET_TTD_S, "other bands": FAST_TTD_S},
                "false_per_1000_identity_hours_max": FALSE_PER_1000H_TARGET,
            },
            "grace_s": self.grace_s,
            "kinds": [
                {**dataclasses.asdict(r), "recall_ok": r.recall_ok, "ttd_ok": r.ttd_ok}
                for r in self.rows
            ],
            "overall": {**dataclasses.asdict(self.overall), "ok": self.overall.ok},
            "bands": [
                {**dataclasses.asdict(b), "recall_ok": b.recall_ok, "ttd_ok": b.ttd_ok}
                for b in self.bands
            ],
            "false_by_detector": {
                name: {"false_alerts": n, "per_1000h": self._per_1000h(n)}
                for name, n in self.false_by_detector.items()
            },
            "within_reach": {
                "oracle_nats": ORACLE_REACH_NATS,
                "rows": [
                    {**dataclasses.asdict(r), "recall": r.recall, "recall_ok": r.recall_ok}
                    for r in self.reach
                ],
            },
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "attribution": None if self.attribution is None else self.attribution.to_dict(),
            "incidents": [
                {
                    "kind": o.incident.kind,
                    "identity": o.incident.identity,
                    "start": format_time(o.incident.start),
                    "end": format_time(o.incident.end),
                    "detected": o.ttd_s is not None,
                    "ttd_s": o.ttd_s,
                    "detector": o.detector,
                    "base_rate": o.base_rate,
                    "band": None if o.base_rate is None else band_label(o.base_rate),
                    **{k: v for k, v in o.details.items() if k not in ("base_rate", "band")},
                }
                for o in self.outcomes
            ],
            "false_alerts": [
                {
                    "identity": f.identity,
                    "detector": f.detector,
                    "window_end": format_time(f.window_end),
                    "event_time": format_time(f.event_time),
                }
                for f in self.false_alerts
            ],
            "notes": self.notes,
            "run": self.run,
        }

    def _per_1000h(self, count: int) -> float | None:
        hours = self.overall.identity_hours
        return 1000 * count / hours if hours > 0 else None

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    def table(self) -> Table:
        o = self.overall
        rate = "n/a" if o.false_per_1000h is None else f"{o.false_per_1000h:.2f}"
        table = Table(
            title=f"Detection quality (target recall ≥ {RECALL_TARGET:g}; "
            f"grace {fmt_duration(self.grace_s)})",
            caption=(
                f"false alerts: {o.false_alerts} in {o.identity_hours:,.0f} identity-hours = "
                f"{rate} per 1,000 h (target ≤ {FALSE_PER_1000H_TARGET:g}) {ok_mark(o.ok)}"
            ),
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("kind", no_wrap=True)
        for name in ("incidents", "detected", "recall", "median TTD", "p90 TTD", "target"):
            table.add_column(name, justify="right", no_wrap=True)
        for r in self.rows:
            recall = "–" if r.recall is None else f"{r.recall:.2f} {ok_mark(r.recall_ok)}"
            median = fmt_duration(r.median_ttd_s)
            if r.ttd_ok is not None:
                median += f" {ok_mark(r.ttd_ok)}"
            target = "–" if r.ttd_target_s is None else f"≤ {fmt_duration(r.ttd_target_s)}"
            table.add_row(
                r.kind, str(r.incidents), str(r.detected), recall, median,
                fmt_duration(r.p90_ttd_s), target,
            )  # fmt: skip
        return table


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def ok_mark(ok: bool | None) -> str:
    return {True: "[green]✓[/green]", False: "[red]✗[/red]", None: ""}[ok]
