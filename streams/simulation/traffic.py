"""Synthetic traffic out to the world: a JSONL file, or Kafka paced against the wall clock."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from meterguard.timeutil import parse_event_time


def write_jsonl(
    events: Iterable[dict[str, Any]], path: Path, on_progress: Callable[[int], None]
) -> int:
    count = 0
    with path.open("wb") as out:
        for event in events:
            out.write(orjson.dumps(event) + b"\n")
            count += 1
            if count % 10_000 == 0:
                on_progress(count)
    on_progress(count)
    return count


class PacedClock:
    """Simulated time = start + speed x elapsed wall time, but never ahead of the wall clock.

    The demo starts hours in the past and fast-forwards (so detectors have a baseline within
    seconds), then slows to real time once simulated time catches up with now.
    """

    def __init__(self, start: datetime, speed: float, now: Callable[[], float] = time.time) -> None:
        self.start_s = start.timestamp()
        self.speed = speed
        self.now = now
        self.wall_start = now()

    def simulated_s(self) -> float:
        wall = self.now()
        return min(self.start_s + (wall - self.wall_start) * self.speed, wall)

    def wait_s(self, event_s: float) -> float:
        """Wall seconds to wait before an event at simulated `event_s` is due."""
        ahead = event_s - self.simulated_s()
        if ahead <= 0:
            return 0.0
        if event_s > self.now():  # live phase: real time
            return event_s - self.now()
        return ahead / self.speed


async def produce_paced(
    events: Iterable[dict[str, Any]],
    bootstrap: str,
    topic: str,
    clock: PacedClock | None,
    on_progress: Callable[[int], None],
    stop: asyncio.Event | None = None,
    client_options: Mapping[str, Any] | None = None,  # KafkaSecurity.aiokafka_options()
) -> int:
    """Send events keyed by identity; returns how many were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=256 * 1024,
        **(client_options or {}),
    )
    await producer.start()
    sent = 0
    try:
        for event in events:
            if stop is not None and stop.is_set():
                break
            if clock is not None:
                delay = clock.wait_s(parse_event_time(event["event_time"]).timestamp())
                if delay > 0:
                    await producer.flush()
                    await _sleep_or_stop(delay, stop)
            await producer.send(topic, key=event["identity"].encode(), value=orjson.dumps(event))
            sent += 1
            if sent % 2_000 == 0:
                on_progress(sent)
        await producer.flush()
    finally:
        await producer.stop()
    on_progress(sent)
    return sent


async def _sleep_or_stop(delay: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
