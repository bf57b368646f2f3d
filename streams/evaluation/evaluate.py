"""`meterguard evaluate`: detection quality of the replay pipeline on labelled synthetic traffic.

`score()` and `identity_hours()` are pure: alerts, labels and events in, a Report out.
`run_evaluation()` does the I/O: simulate to a JSONL file, replay it through the same path as
`meterguard replay`, read the alerts back and score them against the simulator's labels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from rich import box
from rich.table import Table

from meterguard.models import Alert
from meterguard.streams.settings import Settings
from meterguard.streams.simulation import simulate
from meterguard.streams.simulation.simulate import Incident, SimConfig
from meterguard.timeutil import format_time, parse_event_time

DEFAULT_GRACE = timedelta(minutes=5)
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


# -- pure scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Firing:
    identity: str
    detector: str
    episode: tuple[str, ...]  # escalations of one episode share this
    at: datetime  # window_end (else event_time): when the alert says the anomaly was
    event_time: datetime


def score(
    alerts: Sequence[Alert] | Sequence[Mapping[str, Any]],
    incidents: Sequence[Incident],
    identity_hours: float,
    grace: timedelta = DEFAULT_GRACE,
    kinds: Sequence[str] = (),
    bystanders: Mapping[Incident, Sequence[str]] | None = None,
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
    outcomes = [_outcome(inc, by_identity[inc.identity], grace) for inc in incidents]

    windows: dict[str, list[Incident]] = defaultdict(list)
    for inc in incidents:
        windows[inc.identity].append(inc)
    for inc, others in (bystanders or {}).items():
        for other in others:
            windows[other].append(inc)
    episodes: dict[tuple[str, ...], list[_Firing]] = defaultdict(list)
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
        start_minute = (doc.get("evidence") or {}).get("episode_start_minute")
        episode = (
            (identity, detector, str(start_minute))
            if start_minute is not None
            else ("alert", str(doc.get("alert_id") or index))
        )
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


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def _mark(ok: bool | None) -> str:
    return {True: "[green]✓[/green]", False: "[red]✗[/red]", None: ""}[ok]


# -- configuration -------------------------------------------------------------------------------


def available_kinds() -> tuple[str, ...]:
    """Incident kinds the simulator can inject (it may grow while this module stays put)."""
    kinds = getattr(simulate, "INCIDENT_KINDS", None) or getattr(simulate, "INCIDENT_EFFECTS", {})
    return tuple(kinds) or ("runaway_agent",)


def detector_warmup_minutes() -> int:
    """The longest warm-up among the registered detectors (minutes before they judge)."""
    from meterguard.detectors.registry import REGISTRY

    longest = 0
    for make, _ in REGISTRY.values():
        config = getattr(make(), "config", None)
        for name in ("warmup_minutes", "learn_minutes"):
            longest = max(longest, int(getattr(config, name, 0) or 0))
    return longest


def evaluation_config(
    *,
    start: datetime,
    identities: int,
    minutes: int,
    seed: int,
    kinds: str,
    incidents: int | None,
    traps: bool | None,
    incident_after: int | None = None,
) -> tuple[SimConfig, list[str]]:
    """SimConfig for an evaluation, and notes on what could not be honoured. ValueError if bad.

    Incidents start after the detectors' warm-up by default: every simulated identity is
    born at minute 0, which real identities with a history are not.
    """
    known = available_kinds()
    chosen = known if kinds.strip() == "all" else tuple(k.strip() for k in kinds.split(",") if k)
    unknown = [k for k in chosen if k not in known]
    if unknown or not chosen:
        raise ValueError(f"unknown incident kinds {unknown}; the simulator knows {list(known)}")
    extra: dict[str, Any] = {}
    notes = []
    if traps is not None:
        if "traps" in SimConfig.__dataclass_fields__:
            extra["traps"] = traps
        else:
            notes.append("the simulator has no traps option yet: --traps/--no-traps ignored")
    if incident_after is None:
        incident_after = detector_warmup_minutes()
        notes.append(f"incidents start after minute {incident_after}, the detectors' warm-up")
    cfg = SimConfig(
        identities=identities,
        start=start,
        minutes=minutes,
        seed=seed,
        incidents=3 * len(chosen) if incidents is None else incidents,
        incident_after_minutes=incident_after,
        incident_kinds=chosen,
        **extra,
    )
    return cfg, notes


def policy_overrides(cfg: SimConfig) -> tuple[dict[str, Any], list[str]]:
    """Policy keys the simulated world needs (offboarded identities, budgets), if supported."""
    from meterguard.streams.policy.episodes import PolicyConfig

    wanted: dict[str, Any] = {}
    offboarded = getattr(simulate, "offboarded_identities", None)
    if offboarded is not None:
        wanted["offboarded_identities"] = sorted(offboarded(cfg))
    budgets = getattr(simulate, "budgets", None)
    if budgets is not None:
        wanted["budgets"] = {
            identity: (dict(b) if isinstance(b, Mapping) else {"daily_usd": float(b)})
            for identity, b in budgets(cfg).items()
        }
    accepted = {k: v for k, v in wanted.items() if k in PolicyConfig.model_fields}
    notes = [
        f"policy has no `{key}` setting yet: the simulator's {key} were not applied"
        for key in wanted
        if key not in accepted
    ]
    return accepted, notes


# -- the run -------------------------------------------------------------------------------------


def run_evaluation(
    cfg: SimConfig,
    settings: Settings,
    redis_url: str,
    workdir: Path,
    *,
    on_phase: Callable[[str], None] = lambda message: None,
    show_progress: bool = True,
    notes: Sequence[str] = (),
) -> Report:
    """Simulate to workdir/events.jsonl (+ labels.jsonl), replay, score workdir/alerts.jsonl."""
    from meterguard.streams.offline.replay import ReplayOutputs, replay_file
    from meterguard.streams.simulation.traffic import write_jsonl

    workdir.mkdir(parents=True, exist_ok=True)
    incidents = simulate.plan_incidents(cfg)
    settings, policy_notes = _with_policy(settings, cfg, workdir)
    (workdir / "labels.jsonl").write_bytes(
        b"".join(
            orjson.dumps({"kind": i.kind, "identity": i.identity, "start": i.start, "end": i.end})
            + b"\n"
            for i in incidents
        )
    )
    on_phase(
        f"simulating {cfg.identities} identities x {cfg.minutes} min (seed {cfg.seed}, "
        f"{len(incidents)} incidents) -> {workdir / 'events.jsonl'}"
    )
    spans = IdentitySpans()
    events = write_jsonl(_observed(simulate.generate(cfg), spans), workdir / "events.jsonl", _noop)
    on_phase(f"replaying {events:,} events through the pipeline")
    outputs = ReplayOutputs(workdir / "alerts.jsonl", workdir / "throttles.jsonl")
    summary = asyncio.run(
        replay_file(
            workdir / "events.jsonl", outputs, settings, redis_url, show_progress=show_progress
        )
    )
    on_phase(f"scoring {summary.alerts:,} alerts against {len(incidents)} labelled incidents")
    alerts = [Alert.model_validate_json(line) for line in outputs.alerts.read_bytes().splitlines()]
    report = score(
        alerts,
        incidents,
        spans.hours,
        kinds=cfg.incident_kinds,
        bystanders=simulate.incident_bystanders(cfg),
    )
    run = {
        "identities": cfg.identities,
        "minutes": cfg.minutes,
        "seed": cfg.seed,
        "start": format_time(cfg.start),
        "kinds": list(cfg.incident_kinds),
        "traps": getattr(cfg, "traps", None),
        "events": summary.events,
        "dead_letters": summary.dead_letters,
        "alerts": summary.alerts,
        "throttle_commands": summary.commands,
    }
    return dataclasses.replace(report, notes=[*notes, *policy_notes], run=run)


def _with_policy(settings: Settings, cfg: SimConfig, workdir: Path) -> tuple[Settings, list[str]]:
    overrides, notes = policy_overrides(cfg)
    if not overrides:
        return settings, notes
    base: dict[str, Any] = {}
    if settings.policy_file:
        base = yaml.safe_load(Path(settings.policy_file).read_text()) or {}
    path = workdir / "policy.yaml"
    path.write_text(yaml.safe_dump({**base, **overrides}, sort_keys=False))
    updated = type(settings)(**{**settings.model_dump(), "policy_file": str(path)})
    updated.policy  # noqa: B018 - refuse a policy the pipeline would refuse, before replaying
    notes.append(f"policy with {', '.join(overrides)} from the simulator: {path}")
    return updated, notes


def _observed(events: Iterable[dict[str, Any]], spans: IdentitySpans) -> Iterator[dict[str, Any]]:
    for event in events:
        spans.add(event)
        yield event


def _noop(count: int) -> None:
    pass
