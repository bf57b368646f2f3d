"""`meterguard replay`: the worker's windows, detectors and policy, on a file or a topic range,
in order, in a fresh key namespace.

Both inputs become the same `RawMessage`s (messages.py), go through the same `decode_raw`
and the same `Pipeline`, in batches of the same size: the same messages in the same order give
byte-identical alerts, throttles and scores. A topic range is read in the merge order of
streams/offline/topic_source.py (record timestamp, partition, offset). `policy` (replay
--policy) replaces MG_POLICY_FILE's; replay_compare.py drives two `ReplayRun`s in lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
import redis.asyncio as aioredis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from meterguard.models import Alert, ThrottleCommand, utc_now
from meterguard.streams.offline.messages import (
    DecodeContext,
    DecodedBatch,
    OfflineDecoder,
    RawMessage,
    file_batches,
    topic_batches,
)
from meterguard.streams.offline.topic_source import TopicSelection, TopicSource
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.runtime.pipeline import BatchOutcome, Pipeline
from meterguard.streams.settings import Settings
from meterguard.streams.store import build_store
from meterguard.streams.store.connection import redis_client


@dataclass
class ReplaySummary:
    lines: int = 0  # input messages (file lines or topic records)
    events: int = 0
    dead_letters: int = 0
    ignored: int = 0  # well-formed records that are not metering (e.g. non-GenAI spans)
    alerts: int = 0
    commands: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    namespace: str = ""  # the run's Redis key prefix (kept with keep_state)


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
    policy: PolicyConfig | None = None,
) -> ReplaySummary:
    run = ReplayRun(outputs, settings, redis_url, keep_state, policy)
    async with run:
        await feed_file(source, batch_size, kcat, show_progress, source.name, run.batch)
        await run.finish()
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
    policy: PolicyConfig | None = None,
) -> ReplaySummary:
    run = ReplayRun(outputs, settings, redis_url, keep_state, policy)
    security = settings.kafka_security.aiokafka_options()  # MG_KAFKA_SECURITY_PROTOCOL...
    async with run:
        label = selection.topic
        await feed_topic(
            bootstrap, selection, batch_size, show_progress, label, run.batch, warn, security
        )
        await run.finish()
    return run.summary


Feed = Callable[[list[RawMessage]], Awaitable[None]]


async def feed_file(
    source: Path, batch_size: int, kcat: bool, show_progress: bool, label: str, feed: Feed
) -> None:
    """Every batch of a file to `feed`, in order, with a progress bar in bytes."""
    size = (await asyncio.to_thread(source.stat)).st_size
    async with replay_progress(label, size, show_progress, in_bytes=True) as advance:
        for batch, consumed in file_batches(source, batch_size, kcat):
            await feed(batch)
            advance(consumed, None)


async def feed_topic(
    bootstrap: str,
    selection: TopicSelection,
    batch_size: int,
    show_progress: bool,
    label: str,
    feed: Feed,
    warn: Callable[[str], None] = print,
    client_options: Mapping[str, Any] | None = None,
) -> None:
    """Every batch of a topic range to `feed`, in (timestamp, partition, offset) order."""
    async with TopicSource(bootstrap, selection, warn, client_options) as topic:
        progress = replay_progress(label, topic.expected, show_progress, in_bytes=False)
        async with progress as advance:
            async for batch in topic_batches(topic, batch_size):
                await feed(batch)
                advance(topic.read, max(topic.expected, topic.read))


class ReplayRun:
    """A fresh namespace, the pipeline under one policy (default: MG_POLICY_FILE's), and the
    output files of one replay; `outputs` None writes none. `collect` keeps the alerts and
    commands in memory too (`alerts`, `commands`: what the policy what-if compares)."""

    def __init__(
        self,
        outputs: ReplayOutputs | None,
        settings: Settings,
        redis_url: str,
        keep_state: bool = False,
        policy: PolicyConfig | None = None,
        collect: bool = False,
    ) -> None:
        self.namespace = f"{settings.key_prefix}:replay:{uuid.uuid4().hex[:12]}"
        self.client = redis_client(redis_url, settings.redis_options)
        self.pipeline = Pipeline(
            build_store(self.client, settings.store_config(prefix=self.namespace)),
            settings.policy if policy is None else policy,
            settings.registry,
            keep_scores=outputs is not None and outputs.scores is not None,
        )
        self.decoder = OfflineDecoder(DecodeContext.of(settings))
        self.outputs = outputs
        self.keep_state = keep_state
        self.summary = ReplaySummary(namespace=self.namespace)
        self.collect = collect
        self.alerts: list[Alert] = []
        self.commands: list[ThrottleCommand] = []
        self._files = contextlib.ExitStack()
        self.alerts_out: IO[bytes] | None = None
        self.throttles_out: IO[bytes] | None = None
        self.scores_out: IO[bytes] | None = None
        self.dlq_out: IO[bytes] | None = None

    async def __aenter__(self) -> ReplayRun:
        out, files = self.outputs, self._files
        if out is None:
            return self
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
                await drop_namespace(self.client, self.namespace)
        finally:
            await self.client.aclose()

    async def batch(self, messages: list[RawMessage]) -> None:
        now = utc_now()
        await self.feed(self.decoder.batch(messages, now), now)

    async def finish(self) -> None:
        """The end of the input: OTLP spans still held for an ancestor settle now."""
        await self.feed(self.decoder.finish(), utc_now())

    async def feed(self, batch: DecodedBatch, now: datetime) -> None:
        """One decoded batch through this run's pipeline (`now`: the batch's wall clock)."""
        self.summary.ignored += batch.ignored
        self.summary.dead_letters += len(batch.dead_letters)
        if self.dlq_out:
            for letter in batch.dead_letters:
                self.dlq_out.write(letter.model_dump_json().encode() + b"\n")
        self.summary.lines += batch.messages
        self.summary.events += len(batch.events)
        if not batch.events:
            return
        outcome = await self.pipeline.process(batch.events)
        await self.pipeline.apply_throttles(outcome, now)
        if self.alerts_out is not None and self.throttles_out is not None:
            _write(outcome, self.alerts_out, self.throttles_out, self.scores_out)
        if self.collect:
            self.alerts.extend(outcome.alerts)
            self.commands.extend(outcome.commands)
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


@contextlib.asynccontextmanager
async def replay_progress(
    name: str, total: int, enabled: bool, in_bytes: bool
) -> AsyncIterator[Callable[[int, int | None], Any]]:
    """`advance(completed, total)`; a topic's total is a lower bound that grows (Tansu)."""
    if not enabled:
        yield lambda completed, total: None
        return
    speed = TransferSpeedColumn() if in_bytes else MofNCompleteColumn()
    columns = (TextColumn("replay {task.description}"), BarColumn(), speed, TimeRemainingColumn())
    # stderr, as every command's progress: stdout stays for what a command prints (the kept
    # namespace of --keep-namespace, the what-if report).
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(name, total=total)

        def advance(completed: int, new_total: int | None) -> None:
            bar.update(task, completed=completed, total=new_total)

        yield advance


async def drop_namespace(client: aioredis.Redis, namespace: str) -> None:
    """Delete every key of a replay's namespace."""
    await unlink_matching(client, f"{namespace}:*")


async def unlink_matching(client: aioredis.Redis, pattern: str) -> None:
    """Delete every key matching a SCAN pattern (SCAN + UNLINK, in batches)."""
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)
