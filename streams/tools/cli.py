"""`meterguard` command line: worker, simulate, replay, reconcile, evaluate, demo."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterguard.streams.settings import Settings
from meterguard.timeutil import parse_event_time

if TYPE_CHECKING:
    from meterguard.streams.offline.reconcile import Report
    from meterguard.streams.offline.replay import ReplaySummary
    from meterguard.streams.offline.topic_source import TopicSelection

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Runtime-metering anomaly pipeline for non-human identities.",
)
err = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from meterguard import __version__

        print(f"meterguard {__version__}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Runtime-metering anomaly pipeline for non-human identities."""


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.policy  # noqa: B018 - validate the policy file before anything starts
        return settings
    except ValueError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


@cli.command()
def worker(
    web_port: Annotated[int | None, typer.Option(help="HTTP port (default MG_WEB_PORT)")] = None,
    without_web: Annotated[
        bool, typer.Option(help="serve no HTTP (several workers, one host)")
    ] = False,
    loglevel: str = "info",
) -> None:
    """Run a Faust worker: metering.raw -> windows in Redis -> alerts and throttle commands."""
    from meterguard.streams.runtime.app import create_app
    from meterguard.streams.runtime.topics import ensure_topics, topic_specs

    settings = _settings()
    if not settings.kafka_broker:
        err.print("[red]MG_KAFKA_BROKER is not set[/red] (e.g. kafka://127.0.0.1:9092)")
        raise typer.Exit(2)
    asyncio.run(ensure_topics(settings.bootstrap, topic_specs(settings)))
    app = create_app(settings)
    argv = ["meterguard", "worker", "--loglevel", loglevel]
    argv += ["--without-web"] if without_web else ["--web-port", str(web_port or settings.web_port)]
    sys.argv = argv
    app.main()


@cli.command()
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
        else _minute_floor(datetime.now(UTC) - timedelta(minutes=minutes))
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
        settings = _settings()
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


KcatOpt = Annotated[
    bool,
    typer.Option(
        "--kcat",
        help="the file is a topic dump, one `kcat -C -J` record per line (headers, timestamps)",
    ),
]
TopicOpt = Annotated[
    str | None, typer.Option(help="read this Kafka topic (MG_KAFKA_BROKER) instead of a file")
]
FromOffsetOpt = Annotated[
    str | None, typer.Option(help="topic: first offset per partition, or 'earliest'")
]
ToOffsetOpt = Annotated[
    int | None, typer.Option(help="topic: stop before this offset in every partition")
]
FromTimeOpt = Annotated[
    str | None, typer.Option(help="topic: first record timestamp (RFC 3339), inclusive")
]
ToTimeOpt = Annotated[
    str | None, typer.Option(help="topic: last record timestamp (RFC 3339), exclusive")
]
IdleOpt = Annotated[
    float, typer.Option(help="topic: a partition past its end offset is done after this idle")
]


def _topic_selection(
    topic: str,
    from_offset: str | None,
    to_offset: int | None,
    from_time: str | None,
    to_time: str | None,
    idle_timeout: float,
) -> TopicSelection:
    from meterguard.streams.offline.topic_source import TopicSelection

    try:
        start = None if from_offset in (None, "earliest") else int(str(from_offset))
        return TopicSelection(
            topic,
            from_offset=start,
            to_offset=to_offset,
            from_time=parse_event_time(from_time) if from_time else None,
            to_time=parse_event_time(to_time) if to_time else None,
            idle_timeout_s=idle_timeout,
        )
    except ValueError as exc:
        err.print(f"[red]bad topic range:[/red] {exc}")
        raise typer.Exit(2) from exc


@cli.command()
def replay(
    alerts_out: Annotated[Path, typer.Option(help="alerts (JSONL)")],
    throttles_out: Annotated[Path, typer.Option(help="throttle commands (JSONL)")],
    events: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, help="JSONL events (or --topic)"),
    ] = None,
    scores_out: Annotated[
        Path | None, typer.Option(help="per-event detector scores (JSONL)")
    ] = None,
    dlq_out: Annotated[Path | None, typer.Option(help="dead letters (JSONL)")] = None,
    topic: TopicOpt = None,
    from_offset: FromOffsetOpt = None,
    to_offset: ToOffsetOpt = None,
    from_time: FromTimeOpt = None,
    to_time: ToTimeOpt = None,
    idle_timeout: IdleOpt = 2.0,
    batch_size: int = 5000,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    kcat: KcatOpt = False,
) -> None:
    """The worker's windows, detectors and policy on a file or a topic range, in order, in a
    fresh namespace. A topic is read in (record timestamp, partition, offset) order and stops
    at --to-offset/--to-time or once every partition is past its start-time end offset and
    idle for --idle-timeout seconds (Tansu's end offsets are too low to stop on alone)."""
    from meterguard.streams.offline.replay import ReplayOutputs, replay_file, replay_topic
    from meterguard.streams.offline.topic_source import TopicSourceError
    from meterguard.streams.tools.embedded import EmbeddedRedis

    settings = _settings()
    outputs = ReplayOutputs(alerts_out, throttles_out, scores_out, dlq_out)
    if (events is None) == (topic is None):
        err.print("[red]give an EVENTS file or --topic, one of them[/red]")
        raise typer.Exit(2)
    if topic is None and any(v is not None for v in (from_offset, to_offset, from_time, to_time)):
        err.print("[red]--from-*/--to-* select a range of a --topic[/red]")
        raise typer.Exit(2)
    selection = (
        _topic_selection(topic, from_offset, to_offset, from_time, to_time, idle_timeout)
        if topic
        else None
    )

    def run(redis_url: str) -> ReplaySummary:
        if selection is not None:
            return asyncio.run(
                replay_topic(
                    _bootstrap(settings),
                    selection,
                    outputs,
                    settings,
                    redis_url,
                    batch_size,
                    progress,
                    warn=lambda m: err.print(f"[yellow]warning:[/yellow] {m}"),
                )
            )
        assert events is not None
        return asyncio.run(
            replay_file(events, outputs, settings, redis_url, batch_size, progress, kcat=kcat)
        )

    started = time.monotonic()
    try:
        if settings.redis_url:
            summary = run(settings.redis_url)
        else:
            with EmbeddedRedis() as server:
                summary = run(server.url)
    except TopicSourceError as exc:
        err.print(f"[red]cannot read the topic:[/red] {exc}")
        raise typer.Exit(2) from exc
    elapsed = time.monotonic() - started
    unit = "records" if topic else "lines"
    err.print(
        f"{summary.events:,} events ({summary.dead_letters:,} dead letters, "
        f"{summary.ignored:,} non-metering records ignored, "
        f"{summary.stats.get('events_duplicate', 0):,} duplicates, "
        f"{summary.stats.get('events_late', 0):,} late) -> {summary.alerts:,} alerts, "
        f"{summary.commands:,} throttle commands in {elapsed:.1f}s "
        f"({summary.lines / max(elapsed, 1e-9):,.0f} {unit}/s)"
    )


def _bootstrap(settings: Settings) -> str:
    if not settings.kafka_broker:
        err.print("[red]MG_KAFKA_BROKER is not set[/red] (e.g. kafka://127.0.0.1:9092)")
        raise typer.Exit(2)
    return settings.bootstrap


@cli.command()
def reconcile(
    events: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, help="JSONL raw events (or --topic)"),
    ] = None,
    topic: TopicOpt = None,
    from_offset: FromOffsetOpt = None,
    to_offset: ToOffsetOpt = None,
    from_time: FromTimeOpt = None,
    to_time: ToTimeOpt = None,
    idle_timeout: IdleOpt = 2.0,
    period_from: Annotated[
        str | None, typer.Option("--from", help="period start, event time (RFC 3339)")
    ] = None,
    period_to: Annotated[
        str | None, typer.Option("--to", help="period end, event time, exclusive")
    ] = None,
    metrics_url: Annotated[
        str | None, typer.Option(help="a worker's /metrics to compare too (one worker only)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option(help="write the report (JSON) here")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    kcat: KcatOpt = False,
) -> None:
    """Recompute per-identity totals from the raw events with the pipeline's rules and compare
    them with the live namespace (MG_REDIS_URL, MG_KEY_PREFIX): minute windows, late totals,
    counters and stats. Exit 1 on any unexplained difference."""
    import orjson

    from meterguard.streams.offline.reconcile import Period
    from meterguard.streams.offline.reconcile_run import (
        read_and_compare,
        recompute_file,
        recompute_topic,
        render,
    )
    from meterguard.streams.offline.topic_source import TopicSourceError

    settings = _settings()
    if (events is None) == (topic is None):
        err.print("[red]give an EVENTS file or --topic, one of them[/red]")
        raise typer.Exit(2)
    if not settings.redis_url:
        err.print("[red]MG_REDIS_URL is not set[/red]: reconcile compares with a live namespace")
        raise typer.Exit(2)
    try:
        period = Period(
            _epoch_ms(period_from) if period_from else None,
            _epoch_ms(period_to) if period_to else None,
        )
    except ValueError as exc:
        err.print(f"[red]bad period:[/red] {exc}")
        raise typer.Exit(2) from exc

    async def run() -> Report:
        if topic is not None:
            selection = _topic_selection(
                topic, from_offset, to_offset, from_time, to_time, idle_timeout
            )
            recomputed = await recompute_topic(
                _bootstrap(settings),
                selection,
                settings,
                progress,
                lambda m: err.print(f"[yellow]warning:[/yellow] {m}"),
            )
        else:
            assert events is not None
            recomputed = await recompute_file(events, settings, progress, kcat)
        assert settings.redis_url is not None
        return await read_and_compare(recomputed, settings, settings.redis_url, period, metrics_url)

    try:
        report = asyncio.run(run())
    except TopicSourceError as exc:
        err.print(f"[red]cannot read the topic:[/red] {exc}")
        raise typer.Exit(2) from exc
    render(report, Console())
    if json_out is not None:
        json_out.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        err.print(f"report written to {json_out}")
    if not report.ok:
        raise typer.Exit(1)


def _epoch_ms(text: str) -> int:
    return int(parse_event_time(text).timestamp() * 1000)


@cli.command()
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

    settings = _settings()
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


@cli.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="stop after S seconds (default: Ctrl-C)")
    ] = None,
    identities: int = 150,
    speed: Annotated[
        float | None, typer.Option(help="simulated minutes per wall minute (default: auto)")
    ] = None,
    seed: Annotated[int, typer.Option(help="traffic seed (which identities run away)")] = 7,
) -> None:
    """The embedded default: broker + Redis + worker + synthetic traffic, live on screen."""
    from meterguard.streams.tools.demo import run_demo

    raise typer.Exit(
        run_demo(_settings(), duration=duration, identities=identities, speed=speed, seed=seed)
    )


def _minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
