"""The pure half of `meterguard reconcile`: ingest.lua's rules recomputed, and the comparison."""

from __future__ import annotations

from datetime import UTC, datetime

from meterguard.streams.offline.reconcile import (
    HOUR_MS,
    MINUTE_MS,
    Ledger,
    Period,
    Rules,
    Stored,
    Totals,
    parse_metrics,
    reconcile,
)

RULES = Rules(
    allowed_lateness_ms=5_000, dedupe_horizon_ms=48 * HOUR_MS, window_minutes=60, key_ttl_ms=HOUR_MS
)
T0 = int(datetime(2026, 1, 5, 9, tzinfo=UTC).timestamp() * 1000)  # an hour boundary
ONE = Totals(1, 400, 100, 0, 400_000, 0)


def ledger_of(*events: tuple[str, int]) -> tuple[Ledger, list[str]]:
    ledger = Ledger(RULES)
    return ledger, [ledger.apply(eid, ms, ONE) for eid, ms in events]


def stored_from(ledger: Ledger, dup: int | None = None) -> Stored:
    """What Redis would hold if the worker agreed with the ledger."""
    counters = {
        "new": ledger.new,
        "late": ledger.late,
        "dup": ledger.duplicates if dup is None else dup,
        "wm": ledger.watermark,
    }
    return Stored(dict(ledger.minutes), dict(ledger.late_hours), counters)


def test_duplicate_event_id_counts_once_and_the_first_occurrence_wins():
    ledger = Ledger(RULES)
    assert ledger.apply("a", T0 + 1_000, ONE) == "new"
    assert ledger.apply("a", T0 + 2_000, Totals(1, 9_999, 0, 0, 0, 1)) == "duplicate"
    assert ledger.minutes == {T0 // MINUTE_MS: ONE}
    assert (ledger.new, ledger.duplicates, ledger.watermark) == (1, 1, T0 + 1_000)


def test_event_past_allowed_lateness_is_late_and_counted_in_its_hour():
    ledger, statuses = ledger_of(
        ("a", T0 + 1_000), ("b", T0 + 2 * MINUTE_MS + 10_000), ("c", T0 + 500)
    )
    assert statuses == ["new", "new", "late"]
    assert ledger.late_hours == {T0 // HOUR_MS: ONE}
    assert ledger.late_minutes == {T0 // MINUTE_MS: 1}
    assert T0 // MINUTE_MS + 1 not in ledger.minutes and ledger.final == T0 // MINUTE_MS + 1


def test_out_of_order_event_within_lateness_lands_in_its_minute():
    # The watermark at 1:03 makes minute 0 final only once it passes 1:00 + 5 s.
    ledger, statuses = ledger_of(("a", T0 + 30_000), ("b", T0 + 63_000), ("c", T0 + 59_000))
    assert statuses == ["new", "new", "new"]
    assert ledger.minutes[T0 // MINUTE_MS].calls == 2
    _, later = ledger_of(("a", T0 + 30_000), ("b", T0 + 66_000), ("c", T0 + 59_000))
    assert later == ["new", "new", "late"]


def test_redelivered_id_is_no_duplicate_once_past_the_dedupe_horizon():
    horizon = RULES.dedupe_horizon_ms
    # Remembered for the horizon and at most one generation (a quarter horizon) more.
    late = T0 + horizon + horizon // 4 + MINUTE_MS
    _, statuses = ledger_of(("a", T0), ("b", late), ("a", T0 + 2 * horizon))
    assert statuses == ["new", "new", "new"]


def test_agreeing_namespace_reconciles_and_explains_duplicates_late_and_dead_letters():
    ledger, _ = ledger_of(
        ("a", T0 + 1_000), ("a", T0 + 1_000), ("b", T0 + 3 * MINUTE_MS), ("c", T0)
    )
    stats = {"events_new": 2, "events_duplicate": 1, "events_late": 1, "events_dead_lettered": 2}
    report = reconcile(
        {"svc": ledger}, {"svc": stored_from(ledger)}, {"invalid_json": 2}, Period(), 6, T0, stats
    )
    assert report.ok, report.mismatches
    assert report.explained["duplicates"] == {
        "in_input": 1,
        "redelivered_by_consumer": 0,
        "by_identity": {"svc": 1},
    }
    late = report.explained["late"]
    assert isinstance(late, dict) and late["count"] == 1
    assert late["by_identity_hour"] == {"svc": {"2026-01-05T09:00Z": 1}}
    assert report.explained["dead_letters"] == {"count": 2, "by_reason": {"invalid_json": 2}}
    (row,) = report.identities
    assert row.expected == row.found == Totals(3, 1200, 300, 0, 1_200_000, 0)


def test_a_changed_minute_is_a_mismatch_naming_identity_and_minute():
    ledger, _ = ledger_of(("a", T0 + 1_000), ("b", T0 + 61_000))
    held = stored_from(ledger)
    minute = T0 // MINUTE_MS
    held.minutes[minute] = ONE + Totals(0, 7, 0, 0, 0, 0)
    report = reconcile({"svc": ledger}, {"svc": held}, {}, Period(), 2, T0)
    assert not report.ok
    (m,) = report.mismatches
    assert (m.identity, m.field, m.expected, m.found) == ("svc", "input_tokens", 400, 407)
    assert m.where == "minute 2026-01-05T09:00Z"


def test_more_duplicates_held_than_in_the_input_are_consumer_redeliveries_fewer_are_not():
    ledger, _ = ledger_of(("a", T0), ("a", T0))
    more = reconcile({"svc": ledger}, {"svc": stored_from(ledger, dup=3)}, {}, Period(), 2, T0)
    assert more.ok and more.identities[0].redelivered == 2
    fewer = reconcile({"svc": ledger}, {"svc": stored_from(ledger, dup=0)}, {}, Period(), 2, T0)
    assert [m.where for m in fewer.mismatches] == ["counter dup"]


def test_minutes_past_window_retention_are_not_retained_not_mismatches():
    events = [(f"e{i}", T0 + i * MINUTE_MS) for i in range(90)]
    ledger, _ = ledger_of(*events)
    held = stored_from(ledger)
    keep_from = ledger.keep_from
    assert keep_from is not None
    for minute in list(held.minutes):
        if minute < keep_from:
            del held.minutes[minute]  # the script dropped them
    report = reconcile({"svc": ledger}, {"svc": held}, {}, Period(), 90, T0)
    assert report.ok, report.mismatches
    assert report.identities[0].not_retained_minutes == keep_from - T0 // MINUTE_MS


def test_period_compares_only_its_minutes():
    ledger, _ = ledger_of(*[(f"e{i}", T0 + i * MINUTE_MS) for i in range(10)])
    held = stored_from(ledger)
    held.minutes[T0 // MINUTE_MS] = Totals()  # outside the period below
    period = Period(T0 + 5 * MINUTE_MS, T0 + 8 * MINUTE_MS)
    report = reconcile({"svc": ledger}, {"svc": held}, {}, period, 10, T0)
    assert report.ok and report.identities[0].expected.calls == 3


def test_identity_without_keys_is_expired_when_its_last_message_is_older_than_the_ttl():
    ledger, _ = ledger_of(("a", T0))
    ledger.last_seen_ms = T0
    old = reconcile({"svc": ledger}, {"svc": None}, {}, Period(), 1, T0 + 2 * HOUR_MS)
    assert old.ok and old.identities[0].status == "not retained"
    recent = reconcile({"svc": ledger}, {"svc": None}, {}, Period(), 1, T0 + 1_000)
    assert not recent.ok and recent.mismatches[0].note == "no keys"


def test_identity_in_redis_but_not_in_the_input_is_a_mismatch():
    held = Stored({}, {}, {"new": 4})
    report = reconcile({}, {"ghost": held}, {}, Period(), 0, T0)
    assert [(m.identity, m.found) for m in report.mismatches] == [("ghost", 4)]


def test_stats_and_metrics_mismatches_are_reported():
    ledger, _ = ledger_of(("a", T0))
    metrics = parse_metrics(
        "# HELP x\n"
        'meterguard_events_total{status="new"} 2.0\n'
        'meterguard_events_total{status="duplicate"} 0.0\n'
        'meterguard_events_total{status="late"} 0.0\n'
    )
    stats = {"events_new": 1}
    report = reconcile(
        {"svc": ledger}, {"svc": stored_from(ledger)}, {}, Period(), 1, T0, stats, metrics
    )
    assert [(m.where, m.field, m.expected, m.found) for m in report.mismatches] == [
        ("metrics", 'meterguard_events_total{status="new"}', 1, 2.0)
    ]


def test_ignored_non_metering_records_are_reported_by_format_not_mismatched():
    from meterguard.streams.offline.reconcile_run import summary_lines

    ledger, _ = ledger_of(("a", T0 + 1_000))
    report = reconcile(
        {"svc": ledger}, {"svc": stored_from(ledger)}, {}, Period(), 2, T0, ignored={"otlp": 3}
    )
    assert report.ok
    assert report.explained["ignored"] == {"count": 3, "by_format": {"otlp": 3}}
    assert any(
        line.startswith("ignored: 3 ") and "3 otlp" in line for line in summary_lines(report)
    )
