"""The pure half of `meterguard report` and GET /api/report: periods of whole hours, exact money,
the report's rows, late lines and unregistered identities, and its JSON and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from meterguard.streams.policy.registry import ROLLUP_DIMENSIONS
from meterguard.streams.store.showback import (
    CSV_COLUMNS,
    DIMENSIONS,
    GroupRows,
    Period,
    Usage,
    build,
    csv_text,
    json_bytes,
    parse_period,
    usd,
)
from meterguard.streams.tools.report_view import money, places

H0 = int(datetime(2026, 3, 2, 9, tzinfo=UTC).timestamp()) // 3600  # 2026-03-02T09:00Z
NOW = datetime(2026, 3, 2, 10, 17, 5, tzinfo=UTC)


def test_the_report_knows_every_rollup_dimension():
    assert DIMENSIONS == ROLLUP_DIMENSIONS


def test_a_period_is_whole_hours_from_inclusive_to_exclusive():
    period = parse_period("2026-03-02T09:00:00Z", "2026-03-02T12:00:00+00:00", None, NOW)
    assert period == Period(H0, H0 + 3)
    assert period.to_dict() == {
        "from": "2026-03-02T09:00:00Z",
        "to": "2026-03-02T12:00:00Z",
        "hours": 3,
    }


@pytest.mark.parametrize(
    ("start", "end", "last", "error"),
    [
        ("2026-03-02T09:30:00Z", "2026-03-02T12:00:00Z", None, "not a whole hour"),
        ("2026-03-02T09:00:00Z", "2026-03-02T09:00:00.5Z", None, "not a whole hour"),
        ("2026-03-02T12:00:00Z", "2026-03-02T09:00:00Z", None, "must be after"),
        ("2026-03-02T09:00:00Z", None, None, "give both"),
        ("2026-03-02T09:00:00Z", "2026-03-02T12:00:00Z", "24h", "not both"),
        (None, None, "7w", "hours or days"),
        (None, None, "0d", "hours or days"),
        ("yesterday", "2026-03-02T12:00:00Z", None, "RFC 3339"),
    ],
)
def test_bad_periods_say_what_is_wrong(start, end, last, error):
    with pytest.raises(ValueError, match=error):
        parse_period(start, end, last, NOW)


def test_last_is_the_hours_that_end_with_the_current_one():
    assert parse_period(None, None, "24h", NOW) == Period(H0 + 2 - 24, H0 + 2)
    assert parse_period(None, None, None, NOW) == Period(H0 + 2 - 24, H0 + 2)  # the default
    assert len(parse_period(None, None, "7d", NOW).hours) == 168
    assert len(parse_period(None, None, "30D", NOW).hours) == 720
    with pytest.raises(ValueError, match="longer than 9600 hours"):
        parse_period(None, None, "401d", NOW, max_hours=9600)


def test_money_is_exact_decimal_from_nano_usd():
    assert usd(1) == Decimal("0.000000001")
    assert usd(0) == Decimal("0.000000000")
    # 10 million calls of 0.1 USD: exact, where floats drift.
    assert usd(100_000_000 * 10_000_000) == Decimal("1000000")
    total = sum((Usage(1, cost_nano_usd=100_000_000) for _ in range(3)), Usage())
    assert total.cost_usd == Decimal("0.3") and 0.1 + 0.1 + 0.1 != 0.3
    assert Usage.parse(b"3,10,20,5,123456789012,1") == Usage(3, 10, 20, 5, 123_456_789_012, 1)
    assert Usage(cost_nano_usd=123_456_789_012).to_dict()["cost_usd"] == "123.456789012"


def rows(hours: dict[int, int], late: dict[int, int] | None = None) -> GroupRows:
    """hour offset -> calls; each call 2 USD 0.5 cents and 10 tokens in."""

    def usage(calls: int) -> Usage:
        return Usage(calls, 10 * calls, 0, 0, 2_005_000_000 * calls, 0)

    return GroupRows(
        {H0 + h: usage(n) for h, n in hours.items()},
        {H0 + h: usage(n) for h, n in (late or {}).items()},
    )


def test_the_report_sums_the_period_lists_late_hours_and_unregistered_identities():
    period = Period(H0, H0 + 3)
    groups = {
        "payments": rows({0: 5, 1: 7, 3: 100}, late={1: 2, 3: 9}),  # hour 3 is past the period
        "search": rows({2: 20}),
        "": rows({0: 1}),  # no team: "(unassigned)"
        "gone": rows({-1: 50}),  # nothing in the period: left out
    }
    strays = {"key-x": rows({0: 1}), "key-old": rows({-5: 3})}
    report = build("team", period, "mg", groups, strays)

    assert [(r.group, r.usage.calls, r.late.calls) for r in report.rows] == [
        ("search", 20, 0),  # by cost, highest first
        ("payments", 12, 2),
        ("(unassigned)", 1, 0),
    ]
    assert report.totals.usage.calls == 33 and report.totals.late.calls == 2
    assert report.totals.usage.cost_usd == Decimal("66.165")
    assert [(x.group, x.hour - H0, x.usage.calls) for x in report.late] == [("payments", 1, 2)]
    # Every identity a registry does not list, with what it used in the period (maybe nothing).
    assert [(u.identity, u.usage.calls) for u in report.unregistered] == [
        ("key-old", 0),
        ("key-x", 1),
    ]
    with pytest.raises(ValueError, match="unknown dimension"):
        build("owner", period, "mg", groups, {})


def test_json_and_csv_carry_the_same_exact_figures():
    period = Period(H0, H0 + 3)
    report = build("team", period, "mg", {"payments": rows({0: 5}, late={0: 1})}, {})
    doc = orjson.loads(json_bytes(report))
    assert set(doc) == {"period", "by", "namespace", "rows", "totals", "late", "unregistered"}
    assert doc["rows"][0]["cost_usd"] == "10.025000000"
    assert doc["rows"][0]["cost_nano_usd"] == 10_025_000_000
    assert doc["rows"][0]["late"]["calls"] == 1
    one = Usage(1, 10, 0, 0, 2_005_000_000, 0).to_dict()
    assert doc["late"] == [{"group": "payments", "hour": "2026-03-02T09:00:00Z", **one}]
    table = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [(r["section"], r["group"], r["hour"], r["cost_usd"]) for r in table] == [
        ("group", "payments", "", "10.025000000"),
        ("total", "(total)", "", "10.025000000"),
        ("late", "payments", "2026-03-02T09:00:00Z", "2.005000000"),
    ]
    assert table[0]["late_calls"] == "1" and table[2]["late_cost_usd"] == "2.005000000"


def test_the_terminal_shows_money_exactly_with_one_scale_per_report():
    assert places([Decimal("1.5"), Decimal("0.0001045"), Decimal(0)]) == 7
    assert places([Decimal("12.000000000")]) == 2
    assert money(Decimal("1234.5"), 2) == "1,234.50"
    assert money(usd(1), places([usd(1)])) == "0.000000001"
