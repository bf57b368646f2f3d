"""`meterguard simulate` and `meterguard evaluate`: synthetic traffic, and detection quality
on it (streams/simulation/, streams/evaluation/)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from meterguard.streams.tools.cli_common import err, load_settings, minute_floor
from meterguard.timeutil import parse_event_time


def simulate(
    out: Annotated[Path | None, typer.Option(help="write JSONL here instead of Kafka")] = None,
    identities: int = 300,
    minutes: int = 240,
    seed: int = 7,
    incidents: int = 3,
    incident_after: Annotated[int, typer.Option(help="no incident before this minute")] = 40,
    start: Annotated[
        str | None, typer.Option(help="RFC 3339; default: `minutes` before now")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Kafka only: simulated minutes per wall minute")
    ] = 60.0,
    labels_out: Annotated[Path | None, typer.Option(help="write incident labels (JSONL)")] = None,
) -> None:
    """Synthetic metering traffic with injected incidents, to a JSONL file or to Kafka."""
    import orjson

    from meterguard.streams.simulation.config import SimConfig
    from meterguard.streams.simulation.incident_plan import plan_incidents
    from meterguard.streams.simulation.simulate import generate
    from meterguard.streams.simulation.traffic import PacedClock, produce_paced, write_jsonl

    begin = (
        parse_event_time(start)
        if start
        else minute_floor(datetime.now(UTC) - timedelta(minutes=minutes))
    )
    try:
        cfg = SimConfig(
            identities=identities,
            start=begin,
            minutes=minutes,
            seed=seed,
            incidents=incidents,
            incident_after_minutes=incident_after,
        )
    except ValueError as exc:
        err.print(
            f"[red]cannot simulate:[/red] {exc} (incidents start after minute "
            f"{incident_after} and last 15: use --incidents 0 or --incident-after)"
        )
        raise typer.Exit(2) from exc
    if labels_out:
        labels_out.write_bytes(
            b"".join(
                orjson.dumps(
                    {"kind": i.kind, "identity": i.identity, "start": i.start, "end": i.end}
                )
                + b"\n"
                for i in plan_incidents(cfg)
            )
        )
    started = time.monotonic()

    def progress(n: int) -> None:
        err.print(f"\r{n:,} events ({n / max(time.monotonic() - started, 1e-6):,.0f}/s)", end="")

    if out is not None:
        count = write_jsonl(generate(cfg), out, progress)
    else:
        settings = load_settings()
        count = asyncio.run(
            produce_paced(
                generate(cfg),
                settings.bootstrap,
                settings.topic_raw,
                PacedClock(begin, speed),
                progress,
            )
        )
    err.print(f"\n{count:,} events written")


def evaluate(
    identities: int = 300,
    minutes: int = 480,
    seed: int = 11,
    incidents: Annotated[
        int | None, typer.Option(help="incidents to inject (default: 3 per kind)")
    ] = None,
    kinds: Annotated[str, typer.Option(help="comma-separated incident kinds, or all")] = "all",
    traps: Annotated[
        bool | None,
        typer.Option("--traps/--no-traps", help="benign look-alikes (default: simulator's)"),
    ] = None,
    incident_after: Annotated[
        int | None, typer.Option(help="no incident before this minute (default: warm-up)")
    ] = None,
    start: Annotated[
        str, typer.Option(help="RFC 3339 start of the simulated run (hh:50: see demo)")
    ] = "2025-01-06T05:50:00Z",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    keep: Annotated[
        Path | None, typer.Option(help="keep events, labels and alerts in this directory")
    ] = None,
    strict: Annotated[bool, typer.Option(help="exit 1 if any target is missed")] = False,
    progress: Annotated[bool, typer.Option(help="show the replay progress bar")] = True,
) -> None:
    """Recall, time to detect and false alerts of the replay pipeline on labelled traffic."""
    import contextlib
    import tempfile

    from meterguard.streams.evaluation.config import evaluation_config
    from meterguard.streams.evaluation.runner import run_evaluation
    from meterguard.streams.tools.embedded import EmbeddedRedis

    settings = load_settings()
    try:
        begin = parse_event_time(start)
        cfg, notes = evaluation_config(
            start=begin,
            identities=identities,
            minutes=minutes,
            seed=seed,
            kinds=kinds,
            incidents=incidents,
            traps=traps,
            incident_after=incident_after,
        )
    except ValueError as exc:
        err.print(f"[red]cannot evaluate:[/red] {exc}")
        raise typer.Exit(2) from exc

    def phase(message: str) -> None:
        err.print(f"[bold]>[/bold] {message}")

    with contextlib.ExitStack() as stack:
        workdir = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mg-eval-")))
        redis_url = settings.redis_url
        if not redis_url:
            phase("starting an embedded Redis (MG_REDIS_URL is not set)")
            redis_url = stack.enter_context(EmbeddedRedis()).url
        report = run_evaluation(
            cfg, settings, redis_url, workdir, on_phase=phase, show_progress=progress, notes=notes
        )
    for note in report.notes:
        err.print(f"[yellow]note:[/yellow] {note}")
    Console().print(report.table())
    if json_out is not None:
        json_out.write_bytes(report.to_json() + b"\n")
        err.print(f"report written to {json_out}")
    if strict and not report.passed:
        raise typer.Exit(1)
