"""`meterguard replay` and `meterguard reconcile`: the pipeline's rules on a file or a topic
range (streams/offline/)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from meterguard.streams.tools.cli_common import epoch_ms, err, load_settings, require_broker
from meterguard.timeutil import parse_event_time

if TYPE_CHECKING:
    from meterguard.streams.offline.reconcile import Report
    from meterguard.streams.offline.replay import ReplaySummary
    from meterguard.streams.offline.replay_compare import Comparison
    from meterguard.streams.offline.topic_source import TopicSelection

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


PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        help="policy file for this replay instead of MG_POLICY_FILE; with --compare-policy, "
        "the candidate",
    ),
]
ComparePolicyOpt = Annotated[
    Path | None,
    typer.Option(
        help="what-if: replay the same input under this (current) policy too and print what "
        "--policy would change; exit 0",
    ),
]


def replay(
    events: Annotated[
        Path | None,
        typer.Argument(exists=True, dir_okay=False, help="JSONL events (or --topic)"),
    ] = None,
    alerts_out: Annotated[
        Path | None, typer.Option(help="alerts (JSONL); required unless --compare-policy")
    ] = None,
    throttles_out: Annotated[
        Path | None,
        typer.Option(help="throttle commands (JSONL); required unless --compare-policy"),
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
    policy: PolicyOpt = None,
    compare_policy: ComparePolicyOpt = None,
    diff_out: Annotated[
        Path | None, typer.Option(help="with --compare-policy: write the diff (JSON) here")
    ] = None,
    keep_namespace: Annotated[
        bool,
        typer.Option(
            help="keep the replay's Redis namespace (MG_REDIS_URL) and print it on stdout, for "
            "`meterguard report --namespace` or `reconcile` (MG_KEY_PREFIX)"
        ),
    ] = False,
) -> None:
    """The worker's windows, detectors and policy on a file or a topic range, in order, in a
    fresh namespace. A topic is read in (record timestamp, partition, offset) order and stops
    at --to-offset/--to-time or once every partition is past its start-time end offset and
    idle for --idle-timeout seconds (Tansu's end offsets are too low to stop on alone). With
    --policy CANDIDATE --compare-policy CURRENT (a what-if) the same input is replayed under both
    (two fresh namespaces, read once) and the alerts and throttle commands that would appear or
    disappear are printed per detector x environment, with the episodes both raise with another
    severity or throttle action; the --*-out files, if given, get the candidate's run."""
    from meterguard.streams.offline.replay import ReplayOutputs, replay_file, replay_topic
    from meterguard.streams.offline.replay_compare import Comparison, compare_file, compare_topic
    from meterguard.streams.offline.topic_source import TopicSourceError
    from meterguard.streams.tools.cli_whatif import replay_policies, report
    from meterguard.streams.tools.embedded import EmbeddedRedis

    settings, policies = replay_policies(policy, compare_policy)
    if policies is None and diff_out is not None:
        err.print("[red]--diff-out writes the diff of --compare-policy[/red]")
        raise typer.Exit(2)
    outputs = None
    if alerts_out is not None and throttles_out is not None:
        outputs = ReplayOutputs(alerts_out, throttles_out, scores_out, dlq_out)
    elif policies is None or (alerts_out, throttles_out, scores_out, dlq_out) != (None,) * 4:
        err.print("[red]give --alerts-out and --throttles-out[/red] (or --compare-policy)")
        raise typer.Exit(2)
    if (events is None) == (topic is None):
        err.print("[red]give an EVENTS file or --topic, one of them[/red]")
        raise typer.Exit(2)
    if keep_namespace and (policies is not None or not settings.redis_url):
        err.print(
            "[red]--keep-namespace keeps one replay's namespace in MG_REDIS_URL[/red] "
            "(set it; not with --compare-policy)"
        )
        raise typer.Exit(2)
    if topic is None and any(v is not None for v in (from_offset, to_offset, from_time, to_time)):
        err.print("[red]--from-*/--to-* select a range of a --topic[/red]")
        raise typer.Exit(2)
    selection = (
        _topic_selection(topic, from_offset, to_offset, from_time, to_time, idle_timeout)
        if topic
        else None
    )

    def warn(message: str) -> None:
        err.print(f"[yellow]warning:[/yellow] {message}")

    def run(redis_url: str) -> ReplaySummary | Comparison:
        if policies is not None:
            if selection is not None:
                bootstrap = require_broker(settings)
                return asyncio.run(
                    compare_topic(bootstrap, selection, policies, settings, redis_url,
                                  batch_size, progress, warn, outputs)
                )  # fmt: skip
            assert events is not None
            return asyncio.run(
                compare_file(events, policies, settings, redis_url, batch_size, progress, kcat,
                             outputs)
            )  # fmt: skip
        assert outputs is not None
        if selection is not None:
            return asyncio.run(
                replay_topic(require_broker(settings), selection, outputs, settings, redis_url,
                             batch_size, progress, keep_namespace, warn=warn)
            )  # fmt: skip
        assert events is not None
        return asyncio.run(
            replay_file(events, outputs, settings, redis_url, batch_size, progress,
                        keep_namespace, kcat=kcat)
        )  # fmt: skip

    started = time.monotonic()
    try:
        if settings.redis_url:
            result = run(settings.redis_url)
        else:
            with EmbeddedRedis() as server:
                result = run(server.url)
    except TopicSourceError as exc:
        err.print(f"[red]cannot read the topic:[/red] {exc}")
        raise typer.Exit(2) from exc
    elapsed = time.monotonic() - started
    unit = "records" if topic else "lines"
    if not isinstance(result, Comparison):
        _print_summary(result, _outputs(result), elapsed, unit)
        if keep_namespace:
            err.print(f"namespace kept: {result.namespace} (meterguard report --namespace …)")
            print(result.namespace)
        return
    current, candidate = str(compare_policy), str(policy)
    both = f"{_outputs(result.current)} under {current}; {_outputs(result.candidate)} under "
    _print_summary(result.candidate, f"{both}{candidate}", elapsed, unit)
    report(result, current, candidate, diff_out)


def _outputs(summary: ReplaySummary) -> str:
    return f"{summary.alerts:,} alerts, {summary.commands:,} throttle commands"


def _print_summary(summary: ReplaySummary, outputs: str, elapsed: float, unit: str) -> None:
    err.print(
        f"{summary.events:,} events ({summary.dead_letters:,} dead letters, "
        f"{summary.ignored:,} non-metering records ignored, "
        f"{summary.stats.get('events_duplicate', 0):,} duplicates, "
        f"{summary.stats.get('events_late', 0):,} late) -> {outputs} in {elapsed:.1f}s "
        f"({summary.lines / max(elapsed, 1e-9):,.0f} {unit}/s)"
    )


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

    settings = load_settings()
    if (events is None) == (topic is None):
        err.print("[red]give an EVENTS file or --topic, one of them[/red]")
        raise typer.Exit(2)
    if not settings.redis_url:
        err.print("[red]MG_REDIS_URL is not set[/red]: reconcile compares with a live namespace")
        raise typer.Exit(2)
    try:
        period = Period(
            epoch_ms(period_from) if period_from else None,
            epoch_ms(period_to) if period_to else None,
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
                require_broker(settings),
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
