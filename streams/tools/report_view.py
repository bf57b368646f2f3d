"""`meterguard report`'s output: the terminal tables (rich) and the files (CSV, JSON, Parquet).

Parquet needs pyarrow (the `report` extra: pip install 'meterguard[report]'); it is imported
only when a Parquet file is written. Its columns are typed: `cost_usd` and `late_cost_usd` are
decimal128(38, 9), exact like the CSV's and JSON's text, `hour` a UTC timestamp.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meterguard.streams.store.showback import (
    CSV_COLUMNS,
    Report,
    Usage,
    csv_text,
    hour_text,
    json_bytes,
    records,
)

FORMATS = ("table", "csv", "json", "parquet")
PYARROW_MISSING = (
    "Parquet needs pyarrow, which is not installed: pip install 'meterguard[report]' "
    "(or use --format csv|json)"
)


def places(values: Iterable[Decimal]) -> int:
    """The fewest decimals (2 to 9) that show every value exactly: one column, one scale."""
    needed = [-int(v.normalize().as_tuple().exponent) for v in values if v]
    return min(9, max([2, *needed]))


def money(value: Decimal, scale: int = 9) -> str:
    """Exact at `scale` places (the value must need no more), thousands separated."""
    return f"{value:,.{scale}f}"


def _usage_cells(u: Usage, scale: int) -> list[str]:
    return [
        f"{u.calls:,}",
        f"{u.input_tokens:,}",
        f"{u.output_tokens:,}",
        f"{u.cached_tokens:,}",
        money(u.cost_usd, scale),
        f"{u.errors:,}",
    ]


def render(report: Report, console: Console) -> None:
    period = report.period.to_dict()
    scale = places(
        u.cost_usd
        for u in (
            *(line.usage for line in report.rows),
            *(line.late for line in report.rows),
            *(line.usage for line in report.late),
            *(u.usage for u in report.unregistered),
        )
    )
    title = (
        f"showback by {report.by}: {period['from']} to {period['to']} "
        f"({period['hours']:,} h, event time), namespace {report.namespace}"
    )
    table = Table(title=title, show_footer=True)
    heads = ("calls", "input tokens", "output tokens", "cached tokens", "cost USD", "errors")
    totals = [*_usage_cells(report.totals.usage, scale), f"{report.totals.late.calls:,}"]
    totals.append(money(report.totals.late.cost_usd, scale))
    table.add_column(report.by, footer="total")
    columns = [*heads, "late calls", "late cost USD"]
    if report.totals.driven is not None:  # --by identity
        columns.append("cost driven USD")
        totals.append(money(report.totals.driven.cost_usd, scale))
    for name, foot in zip(columns, totals, strict=True):
        table.add_column(name, justify="right", footer=foot)
    for line in report.rows:
        late = ["", ""]
        if line.late.calls:
            late = [f"{line.late.calls:,}", money(line.late.cost_usd, scale)]
        if line.driven is not None:
            late.append(money(line.driven.cost_usd, scale) if line.driven.calls else "")
        table.add_row(line.group, *_usage_cells(line.usage, scale), *late)
    console.print(table)
    if report.late:
        late_table = Table(
            title="late events by the hour they belong to (arrived after their minute was "
            "final: restate these closed periods)"
        )
        late_table.add_column(report.by)
        late_table.add_column("hour (UTC)")
        for name in heads:
            late_table.add_column(name, justify="right")
        for item in report.late:
            late_table.add_row(item.group, hour_text(item.hour), *_usage_cells(item.usage, scale))
        console.print(late_table)
    else:
        console.print("no late events in this period")
    strays = report.unregistered
    if strays:
        used = [u for u in strays if u.usage.calls]
        spent = sum((u.usage for u in used), Usage())
        names = ", ".join(u.identity for u in used[:10]) + (" …" if len(used) > 10 else "")
        console.print(
            f"unregistered identities (the registry does not list them): {len(strays):,}; "
            f"{len(used):,} used {spent.calls:,} calls, USD {money(spent.cost_usd, scale)} in "
            "this period" + (f": {names}" if names else "")
        )


def write(report: Report, fmt: str, out: Path | None, stdout: Console) -> str | None:
    """Write `report` in `fmt` to `out` (csv and json: stdout without `out`). Returns what
    was written, for the log line, or None when it went to stdout."""
    if fmt == "table":
        render(report, stdout)
        return None
    if fmt == "parquet":
        assert out is not None
        write_parquet(report, out)
        return f"{len(records(report)):,} rows"
    data = json_bytes(report) if fmt == "json" else csv_text(report).encode()
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return None
    out.write_bytes(data)
    return f"{len(data):,} bytes"


def pyarrow_module() -> Any:
    """pyarrow, imported now (it ships no type information: used as Any); ImportError if not
    installed."""
    return importlib.import_module("pyarrow")


def write_parquet(report: Report, path: Path) -> None:
    pa = pyarrow_module()
    parquet = importlib.import_module("pyarrow.parquet")
    money_type = pa.decimal128(38, 9)
    types = {
        "section": pa.string(),
        "dimension": pa.string(),
        "group": pa.string(),
        "hour": pa.timestamp("ms", tz="UTC"),
        "cost_usd": money_type,
        "late_cost_usd": money_type,
        "driven_cost_usd": money_type,
        "period_from": pa.timestamp("ms", tz="UTC"),
        "period_to": pa.timestamp("ms", tz="UTC"),
    }
    rows = records(report)
    columns = {}
    for name in CSV_COLUMNS:
        values = [row[name] for row in rows]
        if types.get(name) == pa.timestamp("ms", tz="UTC"):
            values = [None if v is None else _instant(v) for v in values]
        columns[name] = pa.array(values, type=types.get(name, pa.int64()))
    table = pa.table(columns)
    meta = {
        b"meterguard.by": report.by.encode(),
        b"meterguard.namespace": report.namespace.encode(),
    }
    parquet.write_table(table.replace_schema_metadata(meta), str(path))


def _instant(text: str) -> Any:
    from meterguard.timeutil import parse_event_time

    return parse_event_time(text)
