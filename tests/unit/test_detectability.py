"""The wide world's detectability bound (streams/simulation/detectability.py) and the
evaluation's "within reach" rows built on it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from meterguard.streams.evaluation.report import (
    ORACLE_REACH_NATS,
    IncidentOutcome,
    Overall,
    Report,
)
from meterguard.streams.simulation import simulate
from meterguard.streams.simulation.config import WIDE_INCIDENT_KINDS, Incident, SimConfig
from meterguard.streams.simulation.detectability import oracle_nats
from meterguard.streams.simulation.wide_world import WidePlan

START = datetime(2025, 1, 6, 5, 50, tzinfo=UTC)


@pytest.fixture(scope="module")
def plan() -> WidePlan:
    cfg = SimConfig(
        world="wide", identities=300, start=START, minutes=360, seed=11, incidents=30,
        incident_after_minutes=180, incident_kinds=WIDE_INCIDENT_KINDS, traps=True,
    )  # fmt: skip
    return WidePlan(cfg)


def test_no_rise_offers_no_evidence_and_a_bigger_or_longer_one_offers_more(plan) -> None:
    runaway = next(w for w in plan.incidents if w.label.kind == "runaway_agent")
    assert oracle_nats(plan, dataclasses.replace(runaway, magnitude=1.0)) == pytest.approx(0.0)
    small = oracle_nats(plan, dataclasses.replace(runaway, magnitude=3.0))
    big = oracle_nats(plan, dataclasses.replace(runaway, magnitude=30.0))
    longer = oracle_nats(plan, dataclasses.replace(runaway, magnitude=3.0, end=runaway.end + 30))
    assert 0 < small < big
    assert small < longer


def test_the_same_rise_is_beyond_reach_on_a_quiet_key_and_within_it_on_a_busy_one(plan) -> None:
    """3x for 5 minutes: a fraction of a session more on the quietest key, hundreds of
    sessions on the busiest."""
    runaway = next(w for w in plan.incidents if w.label.kind == "runaway_agent")
    quiet = int(plan.pop.rate.argmin())
    busy = int(plan.pop.rate.argmax())
    short = dataclasses.replace(runaway, magnitude=3.0, end=runaway.first + 5)
    assert oracle_nats(plan, dataclasses.replace(short, who=quiet)) < ORACLE_REACH_NATS
    assert oracle_nats(plan, dataclasses.replace(short, who=busy)) > 10 * ORACLE_REACH_NATS


def test_every_wide_incident_carries_its_oracle_evidence(plan) -> None:
    details = simulate.incident_details(plan.cfg)
    assert len(details) == len(plan.incidents)
    assert all(d["oracle_nats"] >= 0 for d in details)
    # The world is not all easy: some incidents lie beyond any detector's reach, most within.
    within = sum(d["oracle_nats"] >= ORACLE_REACH_NATS for d in details)
    assert 0 < within < len(details)


def _outcome(kind: str, nats: float, detected: bool) -> IncidentOutcome:
    incident = Incident(kind, "someone", START, START)
    return IncidentOutcome(incident, 60.0 if detected else None, None, 1.0, {"oracle_nats": nats})


def test_recall_within_reach_counts_only_what_an_oracle_could_detect() -> None:
    outcomes = [
        _outcome("runaway_agent", 50.0, True),
        _outcome("runaway_agent", 20.0, False),
        _outcome("runaway_agent", 2.0, False),  # beyond reach: not held against the detector
        _outcome("slow_ramp", 3.0, True),  # beyond reach, caught anyway
    ]
    report = Report([], Overall(0, 10.0, 0.0), outcomes, [], 300.0)
    rows = {r.kind: r for r in report.reach}
    assert (rows["runaway_agent"].within_reach, rows["runaway_agent"].recall) == (2, 0.5)
    assert rows["slow_ramp"].recall is None
    assert rows["slow_ramp"].detected_beyond == 1
    assert (rows[None].incidents, rows[None].within_reach, rows[None].detected_within) == (4, 2, 1)
    assert report.to_dict()["within_reach"]["rows"][-1]["recall"] == 0.5


def test_a_world_without_the_bound_reports_no_reach_rows() -> None:
    outcome = IncidentOutcome(Incident("runaway_agent", "x", START, START), 60.0, "spike")
    assert Report([], Overall(0, 1.0, 0.0), [outcome], [], 300.0).reach == []
