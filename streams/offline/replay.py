"""`meterguard replay`: the worker's windows, detectors and policy, on a file or a topic range,
in order, in a fresh key namespace.

Both inputs become the same `RawMessage`s, go through the same `decode_raw` and the same
`Pipeline`, in batches of the same size: the same messages in the same order give
byte-identical alerts, throttles and scores. A topic range is read in the merge order of
streams/offline/topic_source.py (record timestamp, partition, offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson
import redis.asyncio as aioredis
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from meterguard.models import DeadLetter, MeteringEvent, utc_now
from meterguard.streams.decoding.decode import DecodeResult, Origin, dead_letter, decode_message
from meterguard.streams.decoding.formats.mapping import DEFAULT_MAPPING, MappingConfig
from meterguard.streams.decoding.kcat_envelope import EnvelopeError, read_kcat_line
from meterguard.streams.offline.topic_source import TopicSelection, TopicSource
from meterguard.streams.runtime.pipeline import BatchOutcome, Pipeline
from meterguard.streams.settings import Settings
from meterguard.streams.store import build_store
from meterguard.timeutil import from_ms


@dataclass(frozen=True)
class RawMessage:
    """One input message, from a file line or a topic record."""

    value: bytes | None
    origin: Origin
    headers: tuple[tuple[str, bytes], ...] = ()
    broker_ms: int | None = None  # the record's timestamp (topics and kcat dumps only)
    unreadable: str | None = None  # why a dump line is no message at all (dead-lettered)

    def ingest_time(self, now: datetime) -> datetime:
        # A topic record was ingested when the broker got it, as far as we can know: the
        # future-skew rule then judges it as the worker did, not against today's clock.
        return from_ms(self.broker_ms) if self.broker_ms and self.broker_ms > 0 else now


@dataclass(frozen=True)
class DecodeContext:
    max_future_skew: timedelta
    mapping: MappingConfig = DEFAULT_MAPPING

    @classmethod
    def of(cls, settings: Settings) -> DecodeContext:
        return cls(timedelta(seconds=settings.max_future_skew_s), settings.mapping)


def decode_raw(message: RawMessage, ingest_time: datetime, ctx: DecodeContext) -> DecodeResult:
    """The one decode call of replay and reconcile, for file lines and topic records alike
    (one message of a batching format carries many events). Total, like the worker's."""
    if message.unreadable is not None:
        letter = dead_letter(
            message.value or b"",
            "invalid_envelope",
            message.unreadable,
            ingest_time,
            message.origin,
        )
        return DecodeResult([letter], 0, "unknown")
    # Total: decode_message turns even its own bugs into internal_error dead letters.
    return decode_message(
        message.value,
        message.headers,
        ingest_time,
        message.origin,
        ctx.max_future_skew,
        ctx.mapping,
    )


@dataclass
class ReplaySummary:
    lines: int = 0  # input messages (file lines or topic records)
    events: int = 0
    dead_letters: int = 0
    ignored: int = 0  # well-formed records that are not metering (e.g. non-GenAI spans)
    alerts: int = 0
    commands: int = 0
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class ReplayOutputs:
    alerts: Path
    throttles: Path
    scores: Path | None = None
    dead_letters: Path | None = None


async def replay_file(
    source: Path,
    outputs: ReplayOutputs,
    settings: Settings,
    redis_url: str,
    batch_size: int = 5000,
    show_progress: bool = True,
    keep_state: bool = False,
    kcat: bool = False,
) -> ReplaySummary:
    size = (await asyncio.to_thread(source.stat)).st_size
    progress = _progress(source.name, size, show_progress, in_bytes=True)
    async with _Replay(outputs, settings, redis_url, keep_state) as run, progress as advance:
        for batch, consumed in file_batches(source, batch_size, kcat):
            await run.batch(batch)
            advance(consumed, None)
    return run.summary


async def replay_topic(
    bootstrap: str,
    selection: TopicSelection,
    outputs: ReplayOutputs,
    settings: Settings,
    redis_url: str,
    batch_size: int = 5000,
    show_progress: bool = True,
    keep_state: bool = False,
    warn: Callable[[str], None] = print,
) -> ReplaySummary:
    async with TopicSource(bootstrap, selection, warn) as topic:
        progress = _progress(selection.topic, topic.expected, show_progress, in_bytes=False)
        async with _Replay(outputs, settings, redis_url, keep_state) as run, progress as advance:
            async for batch in topic_batches(topic, batch_size):
                await run.batch(batch)
                advance(topic.read, max(topic.expected, topic.read))
    return run.summary


class _Replay:
    """A fresh namespace, the pipeline, and the output files for one replay."""

    def __init__(
        self, outputs: ReplayOutputs, settings: Settings, redis_url: str, keep_state: bool
    ) -> None:
        self.namespace = f"{settings.key_prefix}:replay:{uuid.uuid4().hex[:12]}"
        self.client = aioredis.Redis.from_url(redis_url)
        self.pipeline = Pipeline(
            build_store(self.client, settings.store_config(prefix=self.namespace)),
            settings.policy,
        )
        self.ctx = DecodeContext.of(settings)
        self.outputs = outputs
        self.keep_state = keep_state
        self.summary = ReplaySummary()
        self._files = contextlib.ExitStack()

    async def __aenter__(self) -> _Replay:
        out, files = self.outputs, self._files
        self.alerts_out = files.enter_context(out.alerts.open("wb"))
        self.throttles_out = files.enter_context(out.throttles.open("wb"))
        self.scores_out = files.enter_context(out.scores.open("wb")) if out.scores else None
        self.dlq_out = (
            files.enter_context(out.dead_letters.open("wb")) if out.dead_letters else None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._files.close()
        try:
            if not self.keep_state:
                await _drop_namespace(self.client, self.namespace)
        finally:
            await self.client.aclose()

    async def batch(self, messages: list[RawMessage]) -> None:
        now = utc_now()
        events: list[MeteringEvent] = []
        for message in messages:
            decoded = decode_raw(message, message.ingest_time(now), self.ctx)
            self.summary.ignored += decoded.ignored
            for item in decoded.items:
                if isinstance(item, DeadLetter):
                    self.summary.dead_letters += 1
                    if self.dlq_out:
                        self.dlq_out.write(item.model_dump_json().encode() + b"\n")
                else:
                    events.append(item)
        self.summary.lines += len(messages)
        self.summary.events += len(events)
        if not events:
            return
        outcome = await self.pipeline.process(events)
        await self.pipeline.apply_throttles(outcome, now)
        _write(outcome, self.alerts_out, self.throttles_out, self.scores_out)
        await self.pipeline.commit(outcome, now)
        self.summary.alerts += len(outcome.alerts)
        self.summary.commands += len(outcome.commands)
        for k, v in outcome.stats.items():
            self.summary.stats[k] = self.summary.stats.get(k, 0) + v


def _write(
    outcome: BatchOutcome, alerts: IO[bytes], throttles: IO[bytes], scores: IO[bytes] | None
) -> None:
    for alert in outcome.alerts:
        alerts.write(alert.model_dump_json().encode() + b"\n")
    for command in outcome.commands:
        throttles.write(command.model_dump_json().encode() + b"\n")
    if scores is not None:
        for item in outcome.scores:
            scores.write(
                orjson.dumps(
                    {
                        "event_id": item.event.event_id,
                        "identity": item.event.identity,
                        "event_time": item.event.event_time.isoformat().replace("+00:00", "Z"),
                        "status": item.status,
                        "scores": item.scores,
                    }
                )
                + b"\n"
            )


def file_batches(
    source: Path, size: int, kcat: bool = False
) -> Iterator[tuple[list[RawMessage], int]]:
    """Batches of a JSONL file's non-blank lines, and how many bytes were read so far.
    kcat: each line is a `kcat -C -J` record (streams/decoding/kcat_envelope.py)."""
    batch: list[RawMessage] = []
    consumed = 0
    name = str(source)
    with source.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            consumed += len(line)
            stripped = line.rstrip(b"\r\n")
            if not stripped.strip():
                continue  # blank lines are layout, not input
            origin = Origin(name, None, line_no)
            batch.append(_kcat_message(stripped, origin) if kcat else RawMessage(stripped, origin))
            if len(batch) >= size:
                yield batch, consumed
                batch = []
    if batch:
        yield batch, consumed


def _kcat_message(line: bytes, where: Origin) -> RawMessage:
    try:
        record = read_kcat_line(line)
    except EnvelopeError as exc:
        return RawMessage(line, where, unreadable=f"line {where.offset}: {exc}")
    origin = record.origin if record.origin.topic else where
    return RawMessage(record.value, origin, record.headers, record.timestamp_ms)


async def topic_batches(source: TopicSource, size: int) -> AsyncIterator[list[RawMessage]]:
    """Batches of a topic range in merge order; a batch counts records, as a file's counts lines,
    so the same messages are cut into the same batches either way."""
    batch: list[RawMessage] = []
    topic = source.selection.topic
    async for record in source.records():
        origin = Origin(topic, record.partition, record.offset)
        batch.append(RawMessage(record.value, origin, record.headers, record.timestamp_ms))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextlib.asynccontextmanager
async def _progress(
    name: str, total: int, enabled: bool, in_bytes: bool
) -> AsyncIterator[Callable[[int, int | None], Any]]:
    """`advance(completed, total)`; a topic's total is a lower bound that grows (Tansu)."""
    if not enabled:
        yield lambda completed, total: None
        return
    speed = TransferSpeedColumn() if in_bytes else MofNCompleteColumn()
    columns = (TextColumn("replay {task.description}"), BarColumn(), speed, TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(name, total=total)

        def advance(completed: int, new_total: int | None) -> None:
            bar.update(task, completed=completed, total=new_total)

        yield advance


async def _drop_namespace(client: aioredis.Redis, namespace: str) -> None:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)
