"""An evaluation's report: the targets, the results per incident kind, and their rendering.

`Report` is what scoring produces and `meterguard evaluate` prints: recall and time to detect
per kind, false alerts per 1,000 identity-hours, each against its target; rendered as JSON
(`to_json`) or as a rich table (`table`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from rich import box
from rich.table import Table

from meterguard.streams.simulation.config import Incident
from meterguard.timeutil import format_time

RECALL_TARGET = 0.95
TTD_TARGETS_S: dict[str, float] = {"runaway_agent": 180.0, "retry_loop": 180.0}
FALSE_PER_1000H_TARGET = 1.0


@dataclass(frozen=True)
class KindRow:
    kind: str
    incidents: int
    detected: int
    recall: float | None  # None: no incident of this kind was injected
    median_ttd_s: float | None
    p90_ttd_s: float | None
    ttd_target_s: float | None = None

    @property
    def recall_ok(self) -> bool | None:
        return None if self.recall is None else self.recall >= RECALL_TARGET

    @property
    def ttd_ok(self) -> bool | None:
        if self.ttd_target_s is None or not self.incidents:
            return None
        return self.median_ttd_s is not None and self.median_ttd_s <= self.ttd_target_s


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

    @property
    def passed(self) -> bool:
        flags = [self.overall.ok, *(r.recall_ok for r in self.rows), *(r.ttd_ok for r in self.rows)]
        return all(flag is not False for flag in flags)

    def row(self, kind: str) -> KindRow | None:
        return next((r for r in self.rows if r.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "targets": {
                "recall_min": RECALL_TARGET,
                "median_ttd_max_s": TTD_TARGETS_S,
                "false_per_1000_identity_hours_max": FALSE_PER_1000H_TARGET,
            },
            "grace_s": self.grace_s,
            "kinds": [
                {**dataclasses.asdict(r), "recall_ok": r.recall_ok, "ttd_ok": r.ttd_ok}
                for r in self.rows
            ],
            "overall": {**dataclasses.asdict(self.overall), "ok": self.overall.ok},
            "incidents": [
                {
                    "kind": o.incident.kind,
                    "identity": o.incident.identity,
                    "start": format_time(o.incident.start),
                    "end": format_time(o.incident.end),
                    "detected": o.ttd_s is not None,
                    "ttd_s": o.ttd_s,
                    "detector": o.detector,
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

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    def table(self) -> Table:
        o = self.overall
        rate = "n/a" if o.false_per_1000h is None else f"{o.false_per_1000h:.2f}"
        table = Table(
            title=f"Detection quality (target recall ≥ {RECALL_TARGET:g}; "
            f"grace {_duration(self.grace_s)})",
            caption=(
                f"false alerts: {o.false_alerts} in {o.identity_hours:,.0f} identity-hours = "
                f"{rate} per 1,000 h (target ≤ {FALSE_PER_1000H_TARGET:g}) {_mark(o.ok)}"
            ),
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        table.add_column("kind", no_wrap=True)
        for name in ("incidents", "detected", "recall", "median TTD", "p90 TTD", "target"):
            table.add_column(name, justify="right", no_wrap=True)
        for r in self.rows:
            recall = "–" if r.recall is None else f"{r.recall:.2f} {_mark(r.recall_ok)}"
            median = _duration(r.median_ttd_s)
            if r.ttd_ok is not None:
                median += f" {_mark(r.ttd_ok)}"
            target = "–" if r.ttd_target_s is None else f"≤ {_duration(r.ttd_target_s)}"
            table.add_row(
                r.kind, str(r.incidents), str(r.detected), recall, median,
                _duration(r.p90_ttd_s), target,
            )  # fmt: skip
        return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def _mark(ok: bool | None) -> str:
    return {True: "[green]✓[/green]", False: "[red]✗[/red]", None: ""}[ok]
