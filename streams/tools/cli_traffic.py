"""`meterguard simulate` and `meterguard evaluate`: synthetic traffic, and detection quality
on it (streams/simulation/, streams/evaluation/)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterguard.streams.tools.cli_common import err, load_settings, minute_floor
from meterguard.timeutil import parse_event_time

if TYPE_CHECKING:
    from meterguard.streams.simulation.config import SimConfig, World

WORLD_HELP = "classic (the demo's world) or wide (rates 0.01-500 calls/min, bursty, traps)"


def _world(name: str) -> World:
    if name not in ("classic", "wide"):
        err.print(f"[red]unknown world {name!r}:[/red] classic or wide")
        raise typer.Exit(2)
    return "wide" if name == "wide" else "classic"


def simulate(
    out: Annotated[Path | None, typer.Option(help="write JSONL here instead of Kafka")] = None,
    identities: Annotated[int | None, typer.Option(help="default: 300")] = None,
    minutes: Annotated[int | None, typer.Option(help="default: 240 (wide: 360)")] = None,
    seed: int = 7,
    incidents: Annotated[
        int | None, typer.Option(help="default: 3 (wide: 2 per kind and volume band)")
    ] = None,
    incident_after: Annotated[
        int | None,
        typer.Option(help="no incident before this minute (default: 40; wide: the warm-up)"),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="RFC 3339; default: `minutes` before now")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Kafka only: simulated minutes per wall minute")
    ] = 60.0,
    labels_out: Annotated[Path | None, typer.Option(help="write incident labels (JSONL)")] = None,
    world: Annotated[str, typer.Option(help=WORLD_HELP)] = "classic",
    traps: Annotated[
        bool | None,
        typer.Option("--traps/--no-traps", help="benign look-alikes (default: wide world only)"),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(help="comma-separated incident kinds (default: runaway_agent; wide: all)"),
    ] = None,
    registry_out: Annotated[
        Path | None,
        typer.Option(help="write the population's identity registry (YAML, MG_REGISTRY_FILE)"),
    ] = None,
    chains_out: Annotated[
        Path | None,
        typer.Option(help="write each trace's root identity and known root cost (JSONL)"),
    ] = None,
    faults: Annotated[
        bool,
        typer.Option(help="--out only: redeliveries, a late flush (new ids), spans children first"),
    ] = False,
) -> None:
    """Synthetic metering traffic with injected incidents, to a JSONL file or to Kafka.

    The wide world starts on a weekday and at an hour drawn from the seed, at or up to a week
    before --start (Kafka: replayed at --speed until it catches up with now)."""
    import orjson

    from meterguard.streams.simulation import simulate as sim
    from meterguard.streams.simulation.chains import ChainLedger, chains_jsonl
    from meterguard.streams.simulation.delivery_faults import with_faults
    from meterguard.streams.simulation.registry_plan import population_registry
    from meterguard.streams.simulation.traffic import PacedClock, produce_paced, write_jsonl

    chosen = _world(world)
    if minutes is None:
        minutes = 360 if chosen == "wide" else 240
    begin = (
        parse_event_time(start)
        if start
        else minute_floor(datetime.now(UTC) - timedelta(minutes=minutes))
    )
    try:
        cfg = _sim_config(
            chosen, begin, identities, minutes, seed, incidents, incident_after, traps, kinds
        )
    except ValueError as exc:
        err.print(
            f"[red]cannot simulate:[/red] {exc} (incidents start after --incident-after and "
            "last 15 minutes or more: use --incidents 0 or --incident-after)"
        )
        raise typer.Exit(2) from exc
    if faults and out is None:
        err.print("[red]--faults needs --out[/red] (the faults are arranged over the whole run)")
        raise typer.Exit(2)
    if registry_out:
        population = population_registry(cfg)
        registry_out.write_text(population.to_yaml())
        err.print(
            f"registry: {len(population.registry.identities)} identities, "
            f"{len(population.unregistered)} left out, {len(population.moved)} under another "
            f"team -> {registry_out}"
        )
    if labels_out:
        labels_out.write_bytes(
            b"".join(
                orjson.dumps(
                    {"kind": i.kind, "identity": i.identity, "start": i.start, "end": i.end} | extra
                )
                + b"\n"
                for i, extra in zip(sim.incidents(cfg), sim.incident_details(cfg), strict=True)
            )
        )
    started = time.monotonic()

    def progress(n: int) -> None:
        err.print(f"\r{n:,} events ({n / max(time.monotonic() - started, 1e-6):,.0f}/s)", end="")

    ledger = ChainLedger()
    generated = ledger.observe(sim.generate(cfg)) if chains_out else sim.generate(cfg)
    if out is not None and faults:
        delivered, log = with_faults(list(generated), cfg.seed)
        count = write_jsonl(delivered, out, progress)
        err.print(
            f"\nfaults: {log.redelivered:,} redelivered ({log.changed:,} with other figures), "
            f"{log.flushed:,} flushed late under new ids, {log.reversed_traces:,} traces "
            f"children first, {log.held_traces:,} held back ({log.held_spans:,} spans)",
            end="",
        )
    elif out is not None:
        count = write_jsonl(generated, out, progress)
    else:
        settings = load_settings()
        count = asyncio.run(
            produce_paced(
                generated,
                settings.bootstrap,
                settings.topic_raw,
                PacedClock(sim.run_start(cfg), speed),
                progress,
                client_options=settings.kafka_security.aiokafka_options(),
            )
        )
    err.print(f"\n{count:,} events written")
    if chains_out:
        chains = ledger.labels()
        chains_out.write_bytes(chains_jsonl(chains))
        rooted = sum(1 for c in chains if c.root is not None)
        err.print(f"{len(chains):,} traces ({rooted:,} with a root span) -> {chains_out}")


def _sim_config(
    world: World,
    begin: datetime,
    identities: int | None,
    minutes: int,
    seed: int,
    incidents: int | None,
    incident_after: int | None,
    traps: bool | None,
    kinds: str | None = None,
) -> SimConfig:
    """`simulate`'s SimConfig: the classic defaults as they always were; the wide world's as
    `evaluate --world wide` has them (incidents after the detectors' warm-up, traps on)."""
    from meterguard.streams.simulation.config import SimConfig

    if world == "wide":
        from meterguard.streams.evaluation.config import evaluation_config

        cfg, _ = evaluation_config(
            start=begin,
            identities=identities,
            minutes=minutes,
            seed=seed,
            kinds=kinds or "all",
            incidents=incidents,
            traps=traps,
            incident_after=incident_after,
            world="wide",
        )
        return cfg
    chosen = tuple(k.strip() for k in (kinds or "runaway_agent").split(",") if k.strip())
    return SimConfig(
        identities=300 if identities is None else identities,
        start=begin,
        minutes=minutes,
        seed=seed,
        incidents=3 if incidents is None else incidents,
        incident_after_minutes=40 if incident_after is None else incident_after,
        incident_kinds=chosen,
        traps=bool(traps),
    )


def evaluate(
    identities: Annotated[int | None, typer.Option(help="default: 300 (both worlds)")] = None,
    minutes: Annotated[int | None, typer.Option(help="default: 480 (wide: 360)")] = None,
    seed: int = 11,
    seeds: Annotated[
        str | None, typer.Option(help="comma-separated seeds: each seed's tables, then pooled")
    ] = None,
    world: Annotated[str, typer.Option(help=WORLD_HELP)] = "classic",
    incidents: Annotated[
        int | None,
        typer.Option(help="incidents to inject (default: 3 per kind; wide: 2 per kind x band)"),
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
        Path | None, typer.Option(help="keep events, labels, alerts and scores in this directory")
    ] = None,
    strict: Annotated[bool, typer.Option(help="exit 1 if any target is missed")] = False,
    progress: Annotated[bool, typer.Option(help="show the replay progress bar")] = True,
) -> None:
    """Recall, time to detect and false alerts of the replay pipeline on labelled traffic,
    by incident kind and by volume band, and what a score threshold means."""
    import contextlib
    import tempfile

    import orjson

    from meterguard.streams.evaluation.config import evaluation_config
    from meterguard.streams.evaluation.report_tables import print_report
    from meterguard.streams.evaluation.runner import run_evaluation
    from meterguard.streams.evaluation.scoring import pool
    from meterguard.streams.tools.embedded import EmbeddedRedis

    settings = load_settings()
    chosen = _world(world)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()] if seeds else [seed]
        begin = parse_event_time(start)
        configs = [
            evaluation_config(
                start=begin,
                identities=identities,
                minutes=minutes,
                seed=s,
                kinds=kinds,
                incidents=incidents,
                traps=traps,
                incident_after=incident_after,
                world=chosen,
            )
            for s in seed_list
        ]
    except ValueError as exc:
        err.print(f"[red]cannot evaluate:[/red] {exc}")
        raise typer.Exit(2) from exc

    def phase(message: str) -> None:
        err.print(f"[bold]>[/bold] {message}")

    console = Console()
    reports = []
    with contextlib.ExitStack() as stack:
        base = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mg-eval-")))
        redis_url = settings.redis_url
        if not redis_url:
            phase("starting an embedded Redis (MG_REDIS_URL is not set)")
            redis_url = stack.enter_context(EmbeddedRedis()).url
        for cfg, notes in configs:
            began = time.monotonic()
            workdir = base if len(configs) == 1 else base / f"seed-{cfg.seed}"
            report = run_evaluation(
                cfg,
                settings,
                redis_url,
                workdir,
                on_phase=phase,
                show_progress=progress,
                notes=notes,
                keep_scores=keep is not None,
            )
            report.run["wall_s"] = round(time.monotonic() - began, 1)
            phase(f"seed {cfg.seed}: {report.run['events']:,} events in {report.run['wall_s']} s")
            reports.append(report)
    for note in dict.fromkeys(n for r in reports for n in r.notes):
        err.print(f"[yellow]note:[/yellow] {note}")
    for report in reports:
        heading = f"{report.run['world']} world, seed {report.run['seed']}"
        print_report(report, console, heading)
    pooled = pool(reports, configs[0][0].incident_kinds) if len(reports) > 1 else reports[0]
    if len(reports) > 1:
        print_report(pooled, console, f"pooled: seeds {', '.join(map(str, seed_list))}")
    if json_out is not None:
        doc = pooled.to_dict()
        if len(reports) > 1:
            doc["run"] = {"seeds": seed_list, "events": sum(r.run["events"] for r in reports)}
        doc["per_seed"] = [r.to_dict() for r in reports]
        json_out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        err.print(f"report written to {json_out}")
    if strict and not pooled.passed:
        raise typer.Exit(1)
