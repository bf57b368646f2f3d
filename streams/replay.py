"""`meterguard replay`: the worker's windows, detectors and policy, on a file, in order."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
import redis.asyncio as aioredis
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from meterguard.models import DeadLetter, utc_now
from streams.decode import Origin, decode
from streams.pipeline import BatchOutcome, Pipeline
from streams.settings import Settings
from streams.window_store import WindowStore


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    dead_letters: int = 0
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
) -> ReplaySummary:
    namespace = f"{settings.key_prefix}:replay:{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(redis_url)
    store = WindowStore(client, settings.store_config(prefix=namespace))
    pipeline = Pipeline(store, settings.policy)
    summary = ReplaySummary()
    with contextlib.ExitStack() as files, _progress(source, show_progress) as progress:
        alerts_out = files.enter_context(outputs.alerts.open("wb"))
        throttles_out = files.enter_context(outputs.throttles.open("wb"))
        scores_out = files.enter_context(outputs.scores.open("wb")) if outputs.scores else None
        dlq_out = (
            files.enter_context(outputs.dead_letters.open("wb")) if outputs.dead_letters else None
        )
        try:
            for batch, consumed in _batches(source, batch_size):
                now = utc_now()
                events = []
                for line_no, raw in batch:
                    result = decode(raw, now, Origin(str(source), None, line_no))
                    if isinstance(result, DeadLetter):
                        summary.dead_letters += 1
                        if dlq_out:
                            dlq_out.write(result.model_dump_json().encode() + b"\n")
                    else:
                        events.append(result)
                summary.lines += len(batch)
                summary.events += len(events)
                if events:
                    outcome = await pipeline.process(events)
                    await pipeline.apply_throttles(outcome, now)
                    _write(outcome, alerts_out, throttles_out, scores_out)
                    await pipeline.commit(outcome, now)
                    summary.alerts += len(outcome.alerts)
                    summary.commands += len(outcome.commands)
                    for k, v in outcome.stats.items():
                        summary.stats[k] = summary.stats.get(k, 0) + v
                progress(consumed)
        finally:
            if not keep_state:
                await _drop_namespace(client, namespace)
            await client.aclose()
    return summary


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


def _batches(source: Path, size: int) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
    """(line number, bytes) batches, and how many bytes of the file were read so far."""
    batch: list[tuple[int, bytes]] = []
    consumed = 0
    with source.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            consumed += len(line)
            stripped = line.rstrip(b"\r\n")
            if not stripped.strip():
                continue  # blank lines are layout, not input
            batch.append((line_no, stripped))
            if len(batch) >= size:
                yield batch, consumed
                batch = []
    if batch:
        yield batch, consumed


@contextlib.contextmanager
def _progress(source: Path, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield lambda consumed: None
        return
    columns = (
        TextColumn("replay {task.description}"),
        BarColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(source.name, total=source.stat().st_size)
        yield lambda consumed: bar.update(task, completed=consumed)


async def _drop_namespace(client: aioredis.Redis, namespace: str) -> None:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)
