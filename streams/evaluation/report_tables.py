"""The tables `meterguard evaluate` prints besides the per-kind one (Report.table): recall and
time to detect per volume band, the kind x band matrices, false alerts per detector, what a
score threshold means, and the attribution check (streams/evaluation/attribution.py). Each
fits 80 columns (rich's width when stdout is not a terminal).
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from meterguard.streams.evaluation.bands import RECALL_TARGET, BandRow
from meterguard.streams.evaluation.report import (
    FALSE_PER_1000H_TARGET,
    ORACLE_REACH_NATS,
    Report,
    fmt_duration,
    ok_mark,
)
from meterguard.streams.simulation.volume_bands import BAND_LABELS


def _table(title: str, caption: str | None = None) -> Table:
    return Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)


def band_table(report: Report) -> Table:
    table = _table(
        "By volume band (usual calls/min)", caption=f"target: recall ≥ {RECALL_TARGET:g} per band"
    )
    table.add_column("band", no_wrap=True)
    for name in ("incidents", "detected", "recall", "median TTD", "p90 TTD"):
        table.add_column(name, justify="right", no_wrap=True)
    for b in report.bands:
        if b.kind is None:
            recall = "–" if b.recall is None else f"{b.recall:.2f} {ok_mark(b.recall_ok)}"
            table.add_row(
                b.band, str(b.incidents), str(b.detected), recall, fmt_duration(b.median_ttd_s),
                fmt_duration(b.p90_ttd_s),
            )  # fmt: skip
    return table


def _matrix(report: Report) -> dict[str, dict[str, BandRow]]:
    cells: dict[str, dict[str, BandRow]] = {}
    for b in report.bands:
        if b.kind is not None:
            cells.setdefault(b.kind, {})[b.band] = b
    return cells


def recall_matrix(report: Report) -> Table:
    table = _table("Recall by kind x band: recall (incidents)")
    table.add_column("kind", no_wrap=True)
    for label in BAND_LABELS:
        table.add_column(label, justify="right", no_wrap=True)
    for kind, cells in _matrix(report).items():
        row = [kind]
        for label in BAND_LABELS:
            c = cells[label]
            row.append("–" if c.recall is None else f"{c.recall:.2f} ({c.incidents})")
        table.add_row(*row)
    return table


def ttd_matrix(report: Report) -> Table:
    table = _table(
        "Median time to detect by kind x band",
        caption="target: ≤ 3m00s from 0.1 calls/min up, ≤ 10m00s below",
    )
    table.add_column("kind", no_wrap=True)
    for label in BAND_LABELS:
        table.add_column(label, justify="right", no_wrap=True)
    for kind, cells in _matrix(report).items():
        row = [kind]
        for label in BAND_LABELS:
            c = cells[label]
            text = fmt_duration(c.median_ttd_s)
            if c.ttd_ok is not None:
                text += f" {ok_mark(c.ttd_ok)}"
            row.append(text)
        table.add_row(*row)
    return table


def reach_table(report: Report) -> Table | None:
    rows = report.reach
    if not rows:
        return None
    table = _table(
        "Within an oracle's reach (streams/simulation/detectability.py)",
        caption=f"within reach: an oracle that knows the true rates expects ≥ "
        f"{ORACLE_REACH_NATS:g} nats of evidence over the incident; target recall ≥ "
        f"{RECALL_TARGET:g} there",
    )
    table.add_column("kind", no_wrap=True)
    for name in ("incidents", "within reach", "detected", "recall", "caught beyond"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        recall = "–" if r.recall is None else f"{r.recall:.2f} {ok_mark(r.recall_ok)}"
        table.add_row(
            r.kind or "all", str(r.incidents), str(r.within_reach), str(r.detected_within),
            recall, str(r.detected_beyond), style=None if r.kind else "bold",
        )  # fmt: skip
    return table


def detector_table(report: Report) -> Table:
    o = report.overall
    hours = o.identity_hours
    table = _table("False alerts by detector", caption=f"in {hours:,.0f} identity-hours")
    table.add_column("detector", no_wrap=True)
    for name in ("false alerts", "per 1,000 h", "target"):
        table.add_column(name, justify="right", no_wrap=True)
    for name, n in report.false_by_detector.items():
        table.add_row(name, str(n), "n/a" if hours <= 0 else f"{1000 * n / hours:.2f}", "")
    rate = "n/a" if o.false_per_1000h is None else f"{o.false_per_1000h:.2f}"
    table.add_row(
        "total", str(o.false_alerts), f"{rate} {ok_mark(o.ok)}",
        f"≤ {FALSE_PER_1000H_TARGET:g}", style="bold",
    )  # fmt: skip
    return table


def calibration_table(report: Report) -> Table | None:
    cal = report.calibration
    if cal is None:
        return None
    seen = cal.coverage or 0.0
    caption = "episodes of each detector, added up"
    if seen < 0.995:
        caption += f"; {seen:.0%} of identity-minutes seen: a floor"
    table = _table("What a score threshold means (policy default: fire at 0.8)", caption)
    for name in ("threshold", "false episodes", "per identity-h", "per 1,000 h", "detected"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in cal.rows:
        per_hour = r.per_identity_hour
        share = r.detected_share
        table.add_row(
            f"{r.threshold:.2f}",
            str(r.false_episodes),
            "n/a" if per_hour is None else f"{per_hour:.5f}",
            "n/a" if per_hour is None else f"{1000 * per_hour:.2f}",
            "–" if share is None else f"{share:.2f} ({r.detected}/{r.incidents})",
        )
    return table


def print_report(report: Report, console: Console, heading: str | None = None) -> None:
    """Every table of one report (one seed, or the pooled seeds)."""
    if heading:
        console.rule(heading)
    tables = [
        report.table(), reach_table(report), band_table(report), recall_matrix(report),
        ttd_matrix(report), detector_table(report), calibration_table(report),
    ]  # fmt: skip
    for table in tables:
        if table is not None:
            console.print(table)
            console.print()
    if report.attribution is not None:
        console.print(report.attribution.table())
        for line in report.attribution.mismatch_lines():
            console.print(f"  [red]mismatch[/red] {line}", highlight=False)
        console.print()
