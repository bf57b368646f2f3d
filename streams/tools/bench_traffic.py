"""`meterguard bench` input: a simulated population's native events, the Kafka records they
travel in, filling topics, and the plain-aiokafka ceiling (`raw_consume_eps`).

Records. `single`: one native event per record. `batched`: `record_size` events per record,
as a CloudEvents batch (content-type `application/cloudevents-batch+json`) or a native JSON
array (`--batch-format native-array`, no header: the decoder detects it by content). Every
record goes to partition crc32(identity) % partitions, and a batch only holds events of one
partition, so an identity's events stay in order in one partition, as with keyed records.

Throughput, everywhere in the bench, is measured the same way (`Throughput`): observe a
counter; rate = (events - count at the first observation that saw any) / (time of the first
observation that saw them all - time of that first observation). Start-up (process start,
group join, the first batch) is outside the interval for every consumer alike.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.simulate import generate

# The simulated file ends this long before the bench starts: event times in the past, close
# to now (the latency phase then continues the same identities at the wall clock).
END_BEFORE_NOW = timedelta(seconds=90)
CE_BATCH = "application/cloudevents-batch+json"
BATCH_FORMATS = ("cloudevents", "native-array")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Record:
    partition: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Traffic:
    """The simulated events, in event-time order: documents, JSON lines, and the same as a file
    (what replay reads)."""

    docs: list[dict[str, Any]]
    lines: list[bytes]
    path: Path
    identities: int = field(default=0)  # distinct identities that sent at least one event


@dataclass(frozen=True)
class Throughput:
    """Events counted over a measured interval (see the module docstring)."""

    events: int
    first_count: int  # already counted at the first observation (outside the interval)
    seconds: float
    coarse: bool = False  # everything was done at the first observation: start to end instead

    @property
    def rate(self) -> float:
        counted = self.events - self.first_count
        return counted / self.seconds if counted > 0 and self.seconds > 0 else 0.0


class Observer:
    """Feeds (time, count) observations; `result` once the count reached `expected`."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.started = time.perf_counter()
        self.first: tuple[float, int] | None = None
        self.done_at: float | None = None

    def see(self, count: int, at: float | None = None) -> bool:
        at = time.perf_counter() if at is None else at
        if count > 0 and self.first is None:
            self.first = (at, count)
        if count >= self.expected and self.done_at is None:
            self.done_at = at
        return self.done_at is not None

    def result(self) -> Throughput:
        if self.first is None or self.done_at is None:
            raise RuntimeError("the count never reached the expected number")
        first_at, first_count = self.first
        if first_count >= self.expected:  # too small to see it happen: whole wall time
            return Throughput(self.expected, 0, self.done_at - self.started, coarse=True)
        return Throughput(self.expected, first_count, self.done_at - first_at)


def simulate_traffic(folder: Path, identities: int, events: int, seed: int) -> Traffic:
    """`events` events of a classic simulated population of `identities`, no incidents,
    shifted in whole minutes so that the last one is END_BEFORE_NOW before now."""
    now = datetime.now(UTC)
    # Generation is lazy (minute by minute): a generous span, cut at `events`.
    minutes = max(60, 4 * events // max(identities, 1) + 10)
    start = (now - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    cfg = SimConfig(identities=identities, start=start, minutes=minutes, seed=seed, incidents=0)
    docs = list(islice(generate(cfg), events))
    if len(docs) < events:
        raise RuntimeError(f"the simulation gave {len(docs)} events, not {events}")
    last = datetime.fromisoformat(docs[-1]["event_time"])
    shift = timedelta(minutes=(now - END_BEFORE_NOW - last) // timedelta(minutes=1))
    lines = []
    for doc in docs:
        moved = datetime.fromisoformat(doc["event_time"]) + shift
        doc["event_time"] = iso(moved)
        lines.append(orjson.dumps(doc))
    path = folder / "traffic.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return Traffic(docs, lines, path, len({d["identity"] for d in docs}))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def partition_of(identity: str, partitions: int) -> int:
    return zlib.crc32(identity.encode()) % partitions


def single_records(traffic: Traffic, partitions: int) -> list[Record]:
    return [
        Record(partition_of(doc["identity"], partitions), doc["identity"].encode(), line)
        for doc, line in zip(traffic.docs, traffic.lines, strict=True)
    ]


def batched_records(
    traffic: Traffic, partitions: int, size: int, batch_format: str
) -> list[Record]:
    """`size` events per record, each record's events from one partition, in order."""
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"batch format {batch_format!r}: one of {', '.join(BATCH_FORMATS)}")
    by_partition: dict[int, list[int]] = {}
    for index, doc in enumerate(traffic.docs):
        by_partition.setdefault(partition_of(doc["identity"], partitions), []).append(index)
    records = []
    for partition, indices in sorted(by_partition.items()):
        for chunk in _chunks(indices, size):
            first = traffic.docs[chunk[0]]["identity"].encode()
            if batch_format == "cloudevents":
                value = orjson.dumps([cloudevent(traffic.docs[i]) for i in chunk])
                records.append(
                    Record(partition, first, value, (("content-type", CE_BATCH.encode()),))
                )
            else:
                value = b"[" + b",".join(traffic.lines[i] for i in chunk) + b"]"
                records.append(Record(partition, first, value))
    return records


def cloudevent(doc: dict[str, Any]) -> dict[str, Any]:
    """A native event as a CloudEvents 1.0 batch element (identity in `data.identity`)."""
    data = {k: v for k, v in doc.items() if k not in ("event_id", "event_time")}
    return {
        "specversion": "1.0",
        "id": doc["event_id"],
        "source": "/meterguard/bench",
        "type": "meterguard.metering",
        "time": doc["event_time"],
        "datacontenttype": "application/json",
        "data": data,
    }


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for at in range(0, len(items), size):
        yield items[at : at + size]


async def fill_topic(
    bootstrap: str, topic: str, records: list[Record], progress: Progress
) -> float:
    """Produce every record (acks from the broker) -> seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=16 << 20,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        step = max(10_000, len(records) // 5)
        for n, record in enumerate(records, 1):
            await producer.send(
                topic,
                record.value,
                key=record.key,
                partition=record.partition,
                headers=list(record.headers) or None,
            )
            if n % step == 0:
                progress(f"  {topic}: {n:,}/{len(records):,} records")
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consume(
    bootstrap: str, topic: str, partitions: int, expected: int, timeout_s: float
) -> Throughput:
    """The ceiling: aiokafka `getmany` + orjson.loads of every value, from the earliest
    offset, until `expected` records were read (no consumer group, no commits)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        observer = Observer(expected)
        count = 0
        deadline = time.perf_counter() + timeout_s
        while not observer.see(count):
            if time.perf_counter() > deadline:
                raise RuntimeError(f"raw consume read {count:,} of {expected:,} records")
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value or b"null")
                count += len(records)
        return observer.result()
    finally:
        await consumer.stop()
