"""Showback and chargeback, the pure part: a period of whole event-time hours, the roll-ups'
hour rows of one dimension, and the report built from them (`meterguard report`,
GET /api/report; the reads are in showback_read.py).

Money is exact: rows hold integer nano-USD (what ingest.lua and rollup.lua sum), and every
`cost_usd` here is a `Decimal` with 9 places made from that integer, never a float.

What the report says, per group of the dimension (`team`, `business_unit`, `environment`,
`model`, `identity`) over the period:
  - calls, input / output / cached tokens, cost and errors of every unique event whose event
    time falls in the period (the roll-ups' `h<hour>` rows: late events included);
  - the late part: the events of those that arrived after their minute was final for their
    identity (the watermark had passed it by the allowed lateness), i.e. after a report of
    that period could already have been closed (the `l<hour>` rows);
  - the late events again by the hour they belong to, one line per (group, hour), so finance
    can restate a period it closed;
  - the identities a configured registry does not list, with what they used in the period.

It lives in the store layer, beside the roll-ups it reads, because the HTTP routes (web/)
serve the same report as the command line (tools/), and web may import only what is below it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from meterguard.streams.store.rollups import UNASSIGNED_LABEL
from meterguard.timeutil import parse_event_time

# The roll-ups' dimensions (streams/policy/registry.py ROLLUP_DIMENSIONS: the store cannot
# import the policy package; tests/unit/test_showback.py keeps the two equal).
DIMENSIONS = ("team", "business_unit", "environment", "model", "identity")
HOUR_S = 3600
NANO = Decimal("0.000000001")
LAST_UNITS = {"h": 1, "d": 24}
DEFAULT_LAST = "24h"
TOTAL_LABEL = "(total)"
CSV_COLUMNS = (
    "section",  # group | total | late | unregistered
    "dimension",
    "group",
    "hour",  # late rows: the hour the events belong to (RFC 3339); else empty
    "calls",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "errors",
    "late_calls",  # of `calls`, those that arrived after their minute was final
    "late_cost_usd",
    # --by identity: the cost of other identities' calls in traces this identity started
    # (root-caller attribution, store/driven.py); empty for other dimensions
    "driven_cost_usd",
    "period_from",
    "period_to",
)


def usd(nano: int) -> Decimal:
    """Integer nano-USD as an exact Decimal with 9 places."""
    return Decimal(nano).scaleb(-9).quantize(NANO)


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nano_usd: int = 0
    errors: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cost_nano_usd + other.cost_nano_usd,
            self.errors + other.errors,
        )

    @property
    def cost_usd(self) -> Decimal:
        return usd(self.cost_nano_usd)

    @classmethod
    def parse(cls, packed: bytes | str) -> Usage:
        """A packed row of the scripts: "calls,input,output,cached,cost_nano,errors"."""
        text = packed.decode() if isinstance(packed, bytes) else packed
        c, i, o, k, cost, e = (int(v) for v in text.split(","))
        return cls(c, i, o, k, cost, e)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": format(self.cost_usd, "f"),  # a string: JSON numbers become floats
            "cost_nano_usd": self.cost_nano_usd,
            "errors": self.errors,
        }


def hour_text(hour: int) -> str:
    return datetime.fromtimestamp(hour * HOUR_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Period:
    """Whole event-time hours [start_hour, end_hour), as epoch hours (epoch ms // 3,600,000,
    the roll-ups' `h<hour>` buckets)."""

    start_hour: int
    end_hour: int

    @property
    def hours(self) -> range:
        return range(self.start_hour, self.end_hour)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": hour_text(self.start_hour),
            "to": hour_text(self.end_hour),
            "hours": len(self.hours),
        }


def _whole_hour(text: str, name: str) -> int:
    try:
        moment = parse_event_time(text)
    except ValueError as exc:
        raise ValueError(f"{name} must be RFC 3339, e.g. 2026-03-02T09:00:00Z: {exc}") from exc
    if moment.minute or moment.second or moment.microsecond:
        raise ValueError(
            f"{name} {text!r} is not a whole hour: periods are whole event-time hours "
            f"(e.g. {moment.strftime('%Y-%m-%dT%H:00:00Z')})"
        )
    return int(moment.timestamp()) // HOUR_S


def parse_period(
    start: str | None,
    end: str | None,
    last: str | None,
    now: datetime,
    max_hours: int | None = None,
) -> Period:
    """`--from/--to` (whole hours, RFC 3339, `to` exclusive) or `--last N[h|d]`: the N hours
    that end with the current one (so far); neither: the last 24 hours. ValueError says what
    is wrong."""
    if last is not None and (start is not None or end is not None):
        raise ValueError("give either from/to or last, not both")
    if (start is None) != (end is None):
        raise ValueError("give both from and to (whole hours, RFC 3339; to is exclusive)")
    if start is not None and end is not None:
        period = Period(_whole_hour(start, "from"), _whole_hour(end, "to"))
        if period.end_hour <= period.start_hour:
            raise ValueError(f"to ({end}) must be after from ({start})")
    else:
        spec = (last or DEFAULT_LAST).strip().lower()
        match = re.fullmatch(r"(\d{1,6})([hd])", spec)
        if match is None or int(match.group(1)) == 0:
            raise ValueError(f"last must be a number of hours or days, e.g. 24h, 7d, 30d: {last!r}")
        hours = int(match.group(1)) * LAST_UNITS[match.group(2)]
        current = int(now.timestamp()) // HOUR_S
        period = Period(current + 1 - hours, current + 1)
    if max_hours is not None and len(period.hours) > max_hours:
        days = timedelta(hours=max_hours).days
        raise ValueError(f"the period is longer than {max_hours} hours ({days} days)")
    return period


@dataclass
class GroupRows:
    """One roll-up's rows in the period: hour -> every unique event of the hour (late
    included), hour -> its late events."""

    hours: dict[int, Usage] = field(default_factory=dict)
    late: dict[int, Usage] = field(default_factory=dict)

    def total(self) -> Usage:
        return sum(self.hours.values(), Usage())

    def late_total(self) -> Usage:
        return sum(self.late.values(), Usage())


@dataclass(frozen=True)
class Line:
    group: str
    usage: Usage
    late: Usage
    driven: Usage | None = None  # --by identity: the cost it drove downstream

    def to_dict(self) -> dict[str, Any]:
        out = {"group": self.group, **self.usage.to_dict(), "late": self.late.to_dict()}
        if self.driven is not None:
            out["driven"] = self.driven.to_dict()
        return out


@dataclass(frozen=True)
class LateLine:
    group: str
    hour: int
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "hour": hour_text(self.hour), **self.usage.to_dict()}


@dataclass(frozen=True)
class Unregistered:
    identity: str
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, **self.usage.to_dict()}


@dataclass(frozen=True)
class Report:
    by: str
    period: Period
    namespace: str
    rows: list[Line]  # by cost, highest first, then group
    totals: Line
    late: list[LateLine]  # by hour, then group
    unregistered: list[Unregistered]  # by identity

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period.to_dict(),
            "by": self.by,
            "namespace": self.namespace,
            "rows": [line.to_dict() for line in self.rows],
            "totals": self.totals.to_dict(),
            "late": [line.to_dict() for line in self.late],
            "unregistered": [u.to_dict() for u in self.unregistered],
        }


def build(
    by: str,
    period: Period,
    namespace: str,
    groups: Mapping[str, GroupRows],
    unregistered: Mapping[str, GroupRows],
    driven: Mapping[str, GroupRows] | None = None,
) -> Report:
    """The report from each group's rows (group value -> rows; "" is unassigned). Groups
    with no event in the period are left out; unregistered identities never are."""
    if by not in DIMENSIONS:
        raise ValueError(f"unknown dimension {by!r}: one of {', '.join(DIMENSIONS)}")
    rows: list[Line] = []
    late: list[LateLine] = []
    for value, held in groups.items():
        hours = {h: u for h, u in held.hours.items() if h in period.hours}
        if not hours:
            continue
        group = value or UNASSIGNED_LABEL
        late_hours = {h: u for h, u in held.late.items() if h in period.hours}
        caused = None
        if driven is not None:
            held_driven = driven.get(value, GroupRows())
            caused = sum((u for h, u in held_driven.hours.items() if h in period.hours), Usage())
        own, late_part = sum(hours.values(), Usage()), sum(late_hours.values(), Usage())
        rows.append(Line(group, own, late_part, caused))
        late += [LateLine(group, h, u) for h, u in late_hours.items() if u.calls]
    rows.sort(key=lambda line: (-line.usage.cost_nano_usd, line.group))
    late.sort(key=lambda line: (line.hour, line.group))
    totals = Line(
        TOTAL_LABEL,
        sum((line.usage for line in rows), Usage()),
        sum((line.late for line in rows), Usage()),
        None if driven is None else sum((line.driven or Usage() for line in rows), Usage()),
    )
    strays = [
        Unregistered(
            identity,
            sum((u for h, u in held.hours.items() if h in period.hours), Usage()),
        )
        for identity, held in sorted(unregistered.items())
    ]
    return Report(by, period, namespace, rows, totals, late, strays)


def json_bytes(report: Report) -> bytes:
    """The report as one JSON object (the command line's --format json and GET /api/report)."""
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"


def records(report: Report) -> list[dict[str, Any]]:
    """The flat table of --format csv|parquet (CSV_COLUMNS): one `group` row per group, one
    `total` row, one `late` row per (group, hour) of late events, one `unregistered` row per
    identity a registry does not list. Filter on `section` before adding anything up."""
    period = report.period.to_dict()

    def row(
        section: str,
        group: str,
        hour: int | None,
        usage: Usage,
        late: Usage,
        driven: Usage | None = None,
    ) -> dict[str, Any]:
        return {
            "section": section,
            "dimension": "identity" if section == "unregistered" else report.by,
            "group": group,
            "hour": None if hour is None else hour_text(hour),
            "calls": usage.calls,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_usd": usage.cost_usd,
            "errors": usage.errors,
            "late_calls": late.calls,
            "late_cost_usd": late.cost_usd,
            "driven_cost_usd": None if driven is None else driven.cost_usd,
            "period_from": period["from"],
            "period_to": period["to"],
        }

    out = [
        row("group", line.group, None, line.usage, line.late, line.driven) for line in report.rows
    ]
    totals = report.totals
    out.append(row("total", totals.group, None, totals.usage, totals.late, totals.driven))
    # A late row is late through and through: its late part is all of it.
    out += [row("late", line.group, line.hour, line.usage, line.usage) for line in report.late]
    out += [row("unregistered", u.identity, None, u.usage, Usage()) for u in report.unregistered]
    return out


def csv_text(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records(report):
        writer.writerow(
            {k: "" if v is None else format(v, "f") if isinstance(v, Decimal) else v
             for k, v in record.items()}
        )  # fmt: skip
    return buffer.getvalue()
