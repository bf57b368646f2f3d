"""`meterguard report`: showback and chargeback from the roll-ups of a namespace (the live one,
MG_REDIS_URL + MG_KEY_PREFIX, or a replay's kept with `replay --keep-namespace`). The report
itself is streams/store/showback.py (pure) and showback_read.py (reads), shared with
GET /api/report; the tables and files are report_view.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meterguard.streams.tools.cli_common import err, load_settings

if TYPE_CHECKING:
    from meterguard.streams.settings import Settings
    from meterguard.streams.store.showback import Period, Report


def report(
    period_from: Annotated[
        str | None,
        typer.Option("--from", help="period start, event time, a whole hour (RFC 3339)"),
    ] = None,
    period_to: Annotated[
        str | None, typer.Option("--to", help="period end, a whole hour, exclusive")
    ] = None,
    last: Annotated[
        str | None,
        typer.Option(
            help="instead of --from/--to: the last N hours or days, e.g. 24h, 7d, 30d "
            "(the current hour so far included); default 24h"
        ),
    ] = None,
    by: Annotated[
        str, typer.Option(help="team, business_unit, environment, model or identity")
    ] = "team",
    namespace: Annotated[
        str | None,
        typer.Option(
            help="the Redis key prefix to read (default MG_KEY_PREFIX), e.g. the one "
            "`replay --keep-namespace` printed"
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table (terminal), csv, json or parquet")
    ] = "table",
    out: Annotated[
        Path | None,
        typer.Option(help="write the csv, json or parquet here (csv and json: stdout without)"),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="show progress (default: when stderr is a terminal)"
        ),
    ] = None,
) -> None:
    """Showback and chargeback for a period of whole event-time hours, by team, business unit,
    environment, model or identity, from the roll-ups in Redis: calls, input / output / cached
    tokens, cost (exact, from nano-USD) and errors per group; the late part (events that
    arrived after their minute was final); the late events by the hour they belong to, to
    restate a closed period; and the identities the registry does not list."""
    from meterguard.models import utc_now
    from meterguard.streams.store.showback import DIMENSIONS, parse_period
    from meterguard.streams.tools.report_view import FORMATS, PYARROW_MISSING, pyarrow_module

    settings = load_settings()
    if not settings.redis_url:
        err.print("[red]MG_REDIS_URL is not set[/red]: report reads a namespace's roll-ups")
        raise typer.Exit(2)
    if by not in DIMENSIONS:
        err.print(f"[red]unknown --by {escape(repr(by))}:[/red] one of {', '.join(DIMENSIONS)}")
        raise typer.Exit(2)
    if fmt not in FORMATS:
        err.print(f"[red]unknown --format {escape(repr(fmt))}:[/red] one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if fmt == "table" and out is not None:
        err.print("[red]--out writes --format csv, json or parquet[/red]")
        raise typer.Exit(2)
    if fmt == "parquet":
        if out is None:
            err.print("[red]--format parquet needs --out FILE[/red]")
            raise typer.Exit(2)
        try:
            pyarrow_module()
        except ImportError as exc:
            err.print(PYARROW_MISSING, style="red", markup=False)
            raise typer.Exit(2) from exc
    try:
        period = parse_period(period_from, period_to, last, utc_now())
    except ValueError as exc:
        err.print(f"[red]bad period:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    prefix = namespace or settings.key_prefix
    show = err.is_terminal if progress is None else progress
    started = time.monotonic()
    result = asyncio.run(_load(settings, settings.redis_url, prefix, by, period, show))
    _emit(result, fmt, out, time.monotonic() - started)


async def _load(
    settings: Settings, redis_url: str, prefix: str, by: str, period: Period, show: bool
) -> Report:
    from meterguard.streams.store import build_store
    from meterguard.streams.store.connection import redis_client
    from meterguard.streams.store.showback_read import load_report

    client = redis_client(redis_url, settings.redis_options)
    try:
        store = build_store(client, settings.store_config(prefix=prefix))
        with _progress(f"{by} roll-ups", show) as advance:
            return await load_report(client, store.rollups, by, period, prefix, advance)
    finally:
        await client.aclose()


def _emit(result: Report, fmt: str, out: Path | None, elapsed: float) -> None:
    from meterguard.streams.tools.report_view import write

    if not result.rows and not result.unregistered:
        name = escape(repr(result.namespace))
        err.print(
            f"[yellow]warning:[/yellow] namespace {name} has no {result.by} roll-ups in this "
            "period (another period, --namespace or MG_KEY_PREFIX?)"
        )
    written = write(result, fmt, out, Console())
    if written is not None:
        err.print(
            f"{len(result.rows):,} {result.by} rows, {len(result.late):,} late rows "
            f"-> {out} ({written}) in {elapsed:.1f}s"
        )


@contextlib.contextmanager
def _progress(name: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich bar over the roll-ups read (stderr), or None."""
    if not enabled:
        yield None
        return
    columns = (TextColumn("report {task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(name, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
