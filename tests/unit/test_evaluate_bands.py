"""Detection quality by volume band (streams/evaluation/bands.py, scoring.pool, report tables):
pure, on hand-made alerts and labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from rich.console import Console

from meterguard.streams.evaluation.bands import band_rows
from meterguard.streams.evaluation.config import evaluation_config
from meterguard.streams.evaluation.report_tables import print_report
from meterguard.streams.evaluation.scoring import pool, score
from meterguard.streams.simulation.config import Incident
from meterguard.streams.simulation.volume_bands import BAND_LABELS, band_label, band_of
from tests.support.alerts import make_alert

T0 = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
RATES = {"q": 0.05, "l": 0.5, "m": 5.0, "h": 50.0, "x": 300.0, "q2": 0.02, "x2": 120.0}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def incident(identity: str, kind: str = "runaway_agent", start: float = 0, end: float = 20):
    return Incident(kind=kind, identity=identity, start=at(start), end=at(end))


def alert(identity: str, minute: float, detector: str = "spike", delay_s: float = 0):
    """Firing alert on the minute ending at `minute`, received `delay_s` after it closed."""
    return make_alert(
        identity,
        detector,
        alert_id=f"{identity}-{detector}-{minute}",
        severity="warning",
        episode=int(at(minute - 1).timestamp() // 60),
        start=T0,
        minute=minute - 1,
        event_time=at(minute) + timedelta(seconds=delay_s),
    )


def bands_of(report) -> dict[tuple[str | None, str], object]:
    return {(b.kind, b.band): b for b in report.bands}


@pytest.mark.parametrize(
    ("rate", "band"),
    [(0.01, 0), (0.0999, 0), (0.1, 1), (0.99, 1), (1.0, 2), (9.99, 2), (10, 3), (100, 4), (500, 4)],
)
def test_a_rate_belongs_to_its_decade_and_an_edge_to_the_band_above(rate, band):
    assert band_of(rate) == band
    assert band_label(rate) == BAND_LABELS[band]


def test_recall_and_ttd_per_band_and_per_kind_x_band():
    incidents = [
        incident("q"),  # missed
        incident("q2"),  # 8 min
        incident("l"),  # 2 min
        incident("m", kind="retry_loop"),  # 1 min
        incident("h", kind="slow_ramp", end=120),  # 50 min
        incident("x"),  # 4 min: over the 3-minute target
        incident("x2", kind="retry_loop"),  # missed
    ]
    alerts = [
        alert("q2", 8),
        alert("l", 2),
        alert("m", 1, "retry_loop"),
        alert("h", 50, "slow_ramp"),
        alert("x", 4),
    ]
    report = score(alerts, incidents, identity_hours=1000, base_rates=RATES)
    rows = bands_of(report)

    quiet = rows[None, "<0.1"]
    assert (quiet.incidents, quiet.detected, quiet.recall) == (2, 1, 0.5)
    assert quiet.median_ttd_s == 480 and quiet.recall_ok is False
    top = rows[None, ">100"]
    assert (top.incidents, top.detected, top.median_ttd_s, top.p90_ttd_s) == (2, 1, 240, 240)
    assert rows[None, "1–10"].recall == 1.0 and rows[None, "1–10"].recall_ok

    # Kind x band: the quiet band's target is 10 minutes, the others' 3, slow ramps unjudged.
    q_run = rows["runaway_agent", "<0.1"]
    assert (q_run.incidents, q_run.ttd_target_s, q_run.ttd_ok) == (2, 600, True)
    x_run = rows["runaway_agent", ">100"]
    assert (x_run.ttd_target_s, x_run.ttd_ok) == (180, False)
    assert rows["runaway_agent", "0.1–1"].ttd_ok is True
    assert rows["retry_loop", ">100"].ttd_ok is False  # nothing detected: no median
    assert rows["slow_ramp", "10–100"].ttd_target_s is None
    empty = rows["slow_ramp", "<0.1"]
    assert (empty.incidents, empty.recall, empty.ttd_ok, empty.recall_ok) == (0, None, None, None)
    assert not report.passed

    doc = orjson.loads(report.to_json())
    assert {(b["kind"], b["band"]) for b in doc["bands"]} == set(rows)
    by_identity = {i["identity"]: i for i in doc["incidents"]}
    assert by_identity["x2"]["band"] == ">100" and by_identity["x2"]["base_rate"] == 120.0


def test_every_band_is_shown_even_without_incidents():
    rows = band_rows([], kinds=["runaway_agent"])
    assert [(r.kind, r.band) for r in rows] == [(None, b) for b in BAND_LABELS] + [
        ("runaway_agent", b) for b in BAND_LABELS
    ]
    assert all(r.incidents == 0 and r.recall is None for r in rows)


def test_a_report_passes_only_if_every_band_does():
    incidents = [incident(i) for i in ("q", "l", "m", "h", "x")]
    alerts = [alert(i, 2) for i in ("q", "l", "m", "h", "x")]
    assert score(alerts, incidents, 1000, base_rates=RATES).passed
    slow = [*alerts[:4], alert("x", 5)]  # 5 min on the busiest band
    report = score(slow, incidents, 1000, base_rates=RATES)
    assert report.row("runaway_agent").ttd_ok  # the median over all bands is still 2 min
    assert not report.passed
    missed_quiet = score(alerts[1:], incidents, 1000, base_rates=RATES)
    assert missed_quiet.row("runaway_agent").recall == 0.8 and not missed_quiet.passed


def test_false_alerts_per_detector_and_in_total_against_half_an_alert_per_1000_hours():
    alerts = [alert("m", 50), alert("h", 70), alert("h", 90, "slow_ramp"), alert("x", 30)]
    report = score(alerts, [], identity_hours=8000, base_rates=RATES)
    assert report.false_by_detector == {"spike": 3, "slow_ramp": 1}
    assert report.overall.false_per_1000h == pytest.approx(0.5) and report.overall.ok
    doc = orjson.loads(report.to_json())
    assert doc["false_by_detector"]["spike"] == {"false_alerts": 3, "per_1000h": 0.375}
    assert doc["targets"]["false_per_1000_identity_hours_max"] == 0.5
    assert not score(alerts, [], identity_hours=7000).overall.ok


def test_pooled_seeds_add_incidents_false_alerts_and_identity_hours():
    one = score([alert("q", 3), alert("m", 99)], [incident("q")], 1000, base_rates=RATES)
    two = score([], [incident("q"), incident("x")], 3000, base_rates=RATES)
    pooled = pool([one, two], kinds=["runaway_agent"])
    row = pooled.row("runaway_agent")
    assert (row.incidents, row.detected) == (3, 1)
    assert pooled.overall.false_alerts == 1 and pooled.overall.identity_hours == 4000
    assert pooled.overall.false_per_1000h == pytest.approx(0.25)
    assert bands_of(pooled)[None, "<0.1"].incidents == 2


def test_every_table_renders_within_80_columns():
    incidents = [incident("q"), incident("x", kind="retry_loop")]
    report = score([alert("q", 3), alert("m", 99)], incidents, 1000, base_rates=RATES)
    console = Console(width=80, record=True, force_terminal=False)
    print_report(report, console, "seed 11")
    text = console.export_text()
    for title in ("By volume band", "kind x band", "False alerts by detector"):
        assert title in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_the_wide_world_defaults_put_two_incidents_in_every_kind_x_band():
    cfg, _ = evaluation_config(
        start=T0, identities=None, minutes=None, seed=11, kinds="all", incidents=None,
        traps=None, incident_after=90, world="wide",
    )  # fmt: skip
    assert (cfg.world, cfg.identities, cfg.minutes, cfg.traps) == ("wide", 300, 360, True)
    assert cfg.incident_kinds == ("runaway_agent", "retry_loop", "slow_ramp")
    assert cfg.incidents == 2 * 3 * len(BAND_LABELS)
    with pytest.raises(ValueError, match="agent_chain"):
        evaluation_config(
            start=T0, identities=None, minutes=None, seed=11, kinds="agent_chain",
            incidents=None, traps=None, incident_after=90, world="wide",
        )  # fmt: skip
