"""`meterguard reconcile`, the I/O part: read the raw events (a file or a topic range) through
replay's decoder, read the live namespace (and optionally a worker's /metrics), compare with
streams/offline/reconcile.py, and render the report."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from meterguard.detectors.features import MinuteWindow
from meterguard.models import DeadLetter, MeteringEvent, utc_now
from meterguard.streams.offline.messages import (
    DecodeContext,
    OfflineDecoder,
    RawMessage,
    file_batches,
    topic_batches,
)
from meterguard.streams.offline.reconcile import (
    Ledger,
    Period,
    Report,
    Rules,
    Stored,
    Totals,
    parse_metrics,
    reconcile,
)
from meterguard.streams.offline.topic_source import TopicSelection, TopicSource
from meterguard.streams.settings import Settings
from meterguard.streams.store import build_store
from meterguard.streams.store.connection import redis_client

MAX_ROWS_SHOWN = 40  # mismatches printed; --json-out has them all


@dataclass
class Recomputed:
    ledgers: dict[str, Ledger]
    dead_letters: Counter[str]
    messages: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # by format


def rules_of(settings: Settings) -> Rules:
    cfg = settings.store_config()
    return Rules(
        cfg.allowed_lateness_s * 1000, cfg.dedupe_horizon_s * 1000, cfg.window_minutes,
        cfg.ttl_s * 1000,
    )  # fmt: skip


class _Input:
    """Feeds decoded messages into per-identity ledgers, in source order."""

    def __init__(self, settings: Settings) -> None:
        self.rules = rules_of(settings)
        self.decoder = OfflineDecoder(DecodeContext.of(settings))
        self.out = Recomputed({}, Counter())

    def add(self, messages: list[RawMessage]) -> None:
        now = utc_now()
        for message in messages:
            self.out.messages += 1
            decoded = self.decoder.message(message, now)
            if decoded.ignored:
                self.out.ignored[decoded.format] += decoded.ignored
            self._apply(decoded.items, message.broker_ms)

    def finish(self) -> None:
        """OTLP spans still held for an ancestor at the end settle as the replay's do."""
        settled = self.decoder.finish()
        self._apply([*settled.events, *settled.dead_letters], None)

    def _apply(self, items: Sequence[MeteringEvent | DeadLetter], broker_ms: int | None) -> None:
        for item in items:
            if isinstance(item, DeadLetter):
                self.out.dead_letters[item.reason] += 1
                continue
            ledger = self.out.ledgers.get(item.identity)
            if ledger is None:
                ledger = self.out.ledgers[item.identity] = Ledger(self.rules)
            totals = Totals(
                1, item.input_tokens, item.output_tokens, item.cached_tokens,
                item.cost_nano_usd, int(item.status == "error"),
            )  # fmt: skip
            ledger.apply(item.event_id, item.event_time_ms, totals)
            if broker_ms is not None:
                ledger.last_seen_ms = max(ledger.last_seen_ms or 0, broker_ms)


async def recompute_file(
    path: Path, settings: Settings, show_progress: bool, kcat: bool = False
) -> Recomputed:
    feed = _Input(settings)
    size = (await asyncio.to_thread(path.stat)).st_size
    with _progress(path.name, size, show_progress, in_bytes=True) as advance:
        for batch, consumed in file_batches(path, 5000, kcat):
            feed.add(batch)
            advance(consumed, None)
    feed.finish()
    return feed.out


async def recompute_topic(
    bootstrap: str,
    selection: TopicSelection,
    settings: Settings,
    show_progress: bool,
    warn: Callable[[str], None],
) -> Recomputed:
    feed = _Input(settings)
    security = settings.kafka_security.aiokafka_options()
    async with TopicSource(bootstrap, selection, warn, security) as topic:
        with _progress(selection.topic, topic.expected, show_progress, in_bytes=False) as advance:
            batches: AsyncIterator[list[RawMessage]] = topic_batches(topic, 5000)
            async for batch in batches:
                feed.add(batch)
                advance(topic.read, max(topic.expected, topic.read))
    feed.finish()
    return feed.out


async def read_and_compare(
    recomputed: Recomputed,
    settings: Settings,
    redis_url: str,
    period: Period,
    metrics_url: str | None = None,
) -> Report:
    client = redis_client(redis_url, settings.redis_options)
    try:
        store = build_store(client, settings.store_config())
        names = sorted(set(recomputed.ledgers) | set(await store.stats.identities()))
        held = await store.stats.holdings(names)
        stats = await store.stats.pipeline_counters()
    finally:
        await client.aclose()
    stored = {
        identity: None
        if h is None
        else Stored(totals_of(h.minutes), totals_of(h.late), h.counters, tuple(h.unreadable))
        for identity, h in held.items()
    }
    metrics = None
    if metrics_url:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(metrics_url)
            response.raise_for_status()
            metrics = parse_metrics(response.text)
    return reconcile(
        recomputed.ledgers,
        stored,
        recomputed.dead_letters,
        period,
        recomputed.messages,
        now_ms=int(time.time() * 1000),
        stats=stats,
        metrics=metrics,
        ignored=recomputed.ignored,
    )


def totals_of(rows: dict[int, MinuteWindow]) -> dict[int, Totals]:
    return {
        k: Totals(
            w.calls, w.input_tokens, w.output_tokens, w.cached_tokens, w.cost_nano_usd, w.errors
        )
        for k, w in rows.items()
    }


def render(report: Report, console: Console) -> None:
    table = Table(title="per identity: recomputed from raw events vs held in Redis")
    for name in ("identity", "calls", "tokens in/out/cached", "cost USD", "errors"):
        table.add_column(name, justify="left" if name == "identity" else "right")
    for name in ("dup", "late", "status"):
        table.add_column(name, justify="right")
    for r in report.identities:
        e, f = r.expected, r.found

        def pair(a: int, b: int) -> str:
            return f"{a:,}" if a == b else f"[red]{a:,} ≠ {b:,}[/red]"

        tokens = " / ".join(
            pair(a, b)
            for a, b in (
                (e.input_tokens, f.input_tokens),
                (e.output_tokens, f.output_tokens),
                (e.cached_tokens, f.cached_tokens),
            )
        )
        cost = f"{e.cost_nano_usd / 1e9:,.6f}" + (
            ""
            if e.cost_nano_usd == f.cost_nano_usd
            else f" [red]≠ {f.cost_nano_usd / 1e9:,.6f}[/red]"
        )
        style = {"ok": "green", "mismatch": "red"}.get(r.status, "yellow")
        table.add_row(
            r.identity, pair(e.calls, f.calls), tokens, cost, pair(e.errors, f.errors),
            str(r.duplicates), str(r.late), f"[{style}]{r.status}[/{style}]",
        )  # fmt: skip
    console.print(table)
    if report.mismatches:
        diff = Table(title=f"{len(report.mismatches)} unexplained differences")
        for name in ("identity", "where", "field", "expected", "found", "note"):
            diff.add_column(name)
        for m in report.mismatches[:MAX_ROWS_SHOWN]:
            diff.add_row(m.identity, m.where, m.field, f"{m.expected:,}", f"{m.found:,}", m.note)
        console.print(diff)
    for line in summary_lines(report):
        console.print(line)


def summary_lines(report: Report) -> list[str]:
    x = report.explained
    dups, late, dead, kept = (x[k] for k in ("duplicates", "late", "dead_letters", "not_retained"))
    assert isinstance(dups, dict) and isinstance(late, dict)
    assert isinstance(dead, dict) and isinstance(kept, dict)
    lines = [
        f"{report.messages:,} messages -> {report.events:,} events "
        f"({report.events - dups['in_input']:,} counted, {dups['in_input']:,} duplicates), "
        f"{dead['count']:,} dead letters, {len(report.identities):,} identities",
        f"duplicates: {dups['in_input']:,} in the input (same identity and event_id again "
        "within the dedupe horizon; counted once)"
        + (
            f", {dups['redelivered_by_consumer']:,} more redelivered by the consumer"
            if dups.get("redelivered_by_consumer")
            else ""
        ),
        f"late: {late['count']:,} events past the allowed lateness, counted in the late "
        "totals of their hour, not in the minute windows"
        + "".join(
            f"; {identity}: " + ", ".join(f"{n} in {hour}" for hour, n in hours.items())
            for identity, hours in late["by_identity_hour"].items()
        ),
        "dead letters: "
        + (", ".join(f"{n:,} {reason}" for reason, n in dead["by_reason"].items()) or "none"),
    ]
    ignored = x.get("ignored")
    if isinstance(ignored, dict) and ignored["count"]:
        by_format = ", ".join(f"{n:,} {fmt}" for fmt, n in ignored["by_format"].items())
        lines.append(
            f"ignored: {ignored['count']:,} well-formed records that are not metering "
            f"(e.g. non-GenAI spans, agent spans repeating their children's usage): {by_format}"
        )
    minutes = kept["minutes_by_identity"]
    if minutes or kept["identities_expired"]:
        lines.append(
            f"not retained (not compared): {sum(minutes.values()):,} minutes past the window "
            f"retention, {len(kept['identities_expired'])} identities whose keys expired"
        )
    verdict = "[green]reconciled: no unexplained difference[/green]"
    if not report.ok:
        verdict = f"[red]{len(report.mismatches)} unexplained differences[/red]"
    return [*lines, verdict]


class _progress:
    """A rich bar over bytes (file) or records (topic; the total is a lower bound)."""

    def __init__(self, name: str, total: int, enabled: bool, in_bytes: bool) -> None:
        self.bar: Progress | None = None
        if enabled:
            speed = TransferSpeedColumn() if in_bytes else MofNCompleteColumn()
            columns = (TextColumn("reconcile {task.description}"), BarColumn(), speed)
            self.bar = Progress(*columns, console=Console(stderr=True))
            self.task = self.bar.add_task(name, total=total)

    def __enter__(self) -> Callable[[int, int | None], None]:
        if self.bar is None:
            return lambda completed, total: None
        self.bar.start()
        bar, task = self.bar, self.task
        return lambda completed, total: bar.update(task, completed=completed, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
