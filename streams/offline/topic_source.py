"""Read a range of a Kafka topic, for `meterguard replay` and `meterguard reconcile`.

Two rules matter, and both are chosen so that a replay is reproducible:

Order. Partitions are merged by (record timestamp, partition, offset): each partition's records
keep their offset order (the order the worker consumed them in), and the next record out is
always the smallest head of the partitions. The key is a total order over the records, so a
topic range always replays in the same order whatever the fetch timing; an identity whose
events are keyed to one partition (gateways and `simulate` key by identity) sees them in
exactly the order it was produced, which is all its windows and alerts depend on. A file
produced to a topic in line order with increasing timestamps replays in line order.

Stop. Tansu's end offsets are wrong (INFRA-NOTES: the high watermark points into the last
batch), so the end-offset snapshot taken at start is only a lower bound. A partition is done
when it reaches `to_offset`, or its first record at or after `to_time`, or else when it is at or
past the snapshot *and* has returned nothing for `idle_timeout_s`. A partition that stays
idle below the snapshot for `stall_timeout_s` is given up with a warning rather than hanging
(a broker whose end offset counts records the consumer never sees).

Time ranges use offsets_for_times when the broker answers it correctly. Tansu 0.6 answers
offset 0 stamped with the wall clock for any timestamp, so every answer is checked against the
record it points at; an unusable answer falls back to reading from the earliest offset and
selecting by record timestamp, with the same semantics: from the first record with
timestamp >= from_time up to (not including) the first record with timestamp >= to_time.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

POLL_MS = 200
MAX_BUFFERED = 20_000  # per partition: a partition this far ahead is paused (memory bound)


class TopicSourceError(RuntimeError):
    """The topic range cannot be read (no such topic, bad range)."""


@dataclass(frozen=True)
class TopicSelection:
    topic: str
    from_offset: int | None = None  # per partition, inclusive; None: earliest
    to_offset: int | None = None  # per partition, exclusive
    from_time: datetime | None = None  # record timestamp, inclusive
    to_time: datetime | None = None  # record timestamp, exclusive
    idle_timeout_s: float = 2.0
    stall_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.from_offset is not None and self.from_time is not None:
            raise ValueError("give a start offset or a start time, not both")
        if self.from_offset is not None and self.from_offset < 0:
            raise ValueError("from_offset must be >= 0")
        if self.from_time and self.to_time and self.to_time <= self.from_time:
            raise ValueError("to_time must be after from_time")


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.timestamp_ms, self.partition, self.offset)


@dataclass
class PartitionFilter:
    """Which of a partition's records belong to the range (pure, one per partition)."""

    from_ms: int | None = None
    to_ms: int | None = None
    stop_offset: int | None = None
    started: bool = False

    def verdict(self, record: TopicRecord) -> Literal["skip", "take", "stop"]:
        if self.stop_offset is not None and record.offset >= self.stop_offset:
            return "stop"
        if self.to_ms is not None and record.timestamp_ms >= self.to_ms:
            return "stop"
        if not self.started and self.from_ms is not None and record.timestamp_ms < self.from_ms:
            return "skip"
        self.started = True
        return "take"


@dataclass
class PartitionMerger:
    """k-way merge of partitions that may still be growing (pure).

    A record is released only when every partition not yet finished has a head to compare
    it with: otherwise a slower partition could still deliver a smaller key.
    """

    partitions: list[int]
    buffers: dict[int, deque[TopicRecord]] = field(init=False)
    finished: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.buffers = {p: deque() for p in self.partitions}

    def push(self, records: list[TopicRecord]) -> None:
        for record in records:
            self.buffers[record.partition].append(record)

    def finish(self, partition: int) -> None:
        self.finished.add(partition)

    @property
    def done(self) -> bool:
        return len(self.finished) == len(self.partitions) and not any(self.buffers.values())

    def waiting_on(self) -> list[int]:
        return [p for p in self.partitions if p not in self.finished and not self.buffers[p]]

    def pop_ready(self) -> list[TopicRecord]:
        out: list[TopicRecord] = []
        heads = [(b[0].order, p) for p, b in self.buffers.items() if b]
        heapq.heapify(heads)
        while heads and not self.waiting_on():
            _, p = heapq.heappop(heads)
            buffer = self.buffers[p]
            out.append(buffer.popleft())
            if buffer:
                heapq.heappush(heads, (buffer[0].order, p))
        return out


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


class TopicSource:
    """`async with TopicSource(...) as source: async for record in source.records(): ...`"""

    def __init__(
        self,
        bootstrap: str,
        selection: TopicSelection,
        warn: Callable[[str], None] = print,
        client_options: Mapping[str, Any] | None = None,  # KafkaSecurity.aiokafka_options()
    ) -> None:
        self.bootstrap = bootstrap
        self._client_options = dict(client_options or {})
        self.selection = selection
        self.warn = warn
        self.expected = 0  # records up to the end-offset snapshot: a lower bound, for progress
        self.read = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._tps: list[TopicPartition] = []
        self._filters: dict[int, PartitionFilter] = {}
        self._snapshot: dict[int, int] = {}

    async def __aenter__(self) -> TopicSource:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            # A start offset past a partition's end is an empty range, not "from the start".
            auto_offset_reset="latest",
            client_id="meterguard-replay",
            **self._client_options,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            await self._position()
        except BaseException:
            await consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _position(self) -> None:
        consumer, sel = self._require(), self.selection
        if sel.topic not in await consumer.topics():  # a metadata request that creates nothing
            raise TopicSourceError(f"topic {sel.topic!r} does not exist on {self.bootstrap}")
        parts = sorted(consumer.partitions_for_topic(sel.topic) or ())
        self._tps = [TopicPartition(sel.topic, p) for p in parts]
        consumer.assign(self._tps)
        begin = await consumer.beginning_offsets(self._tps)
        end = await consumer.end_offsets(self._tps)
        self._snapshot = {tp.partition: end[tp] for tp in self._tps}
        start = {tp: max(begin[tp], sel.from_offset or 0) for tp in self._tps}
        stop = {tp: sel.to_offset for tp in self._tps}
        from_ms, to_ms = _ms(sel.from_time), _ms(sel.to_time)
        if from_ms is not None or to_ms is not None:
            by_time = await self._offsets_for_times(begin, from_ms, to_ms)
            if by_time is not None:
                for tp, (first, last) in by_time.items():
                    if from_ms is not None:  # None: no record at or after from_time
                        start[tp] = first if first is not None else end[tp]
                    given = stop[tp]
                    if last is not None:
                        stop[tp] = last if given is None else min(last, given)
        for tp in self._tps:
            consumer.seek(tp, start[tp])
            self._filters[tp.partition] = PartitionFilter(from_ms, to_ms, stop[tp])
            bound = stop[tp] if stop[tp] is not None else end[tp]
            self.expected += max(0, min(bound, end[tp]) - start[tp])

    async def _offsets_for_times(
        self, begin: dict[TopicPartition, int], from_ms: int | None, to_ms: int | None
    ) -> dict[TopicPartition, tuple[int | None, int | None]] | None:
        """Per partition (start, stop) from the broker's time index, or None if unusable."""
        consumer = self._require()
        found: dict[TopicPartition, list[int | None]] = {tp: [None, None] for tp in self._tps}
        try:
            for i, target in enumerate((from_ms, to_ms)):
                if target is None:
                    continue
                answer = await consumer.offsets_for_times({tp: target for tp in self._tps})
                for tp, hit in answer.items():
                    if hit is None:  # no record at or after target
                        continue
                    if not await self._points_at(tp, hit.offset, hit.timestamp, target):
                        raise _Unusable(f"partition {tp.partition} answered {hit}")
                    else:
                        found[tp][i] = hit.offset
        except (_Unusable, KafkaError) as exc:
            self.warn(
                f"the broker's offsets_for_times answer is unusable ({exc}); reading "
                f"{self.selection.topic} from the earliest offset and selecting records by "
                "timestamp (Tansu 0.6 answers offset 0 stamped with the wall clock)"
            )
            for tp in self._tps:
                consumer.seek(tp, begin[tp])
            return None
        return {tp: (first, last) for tp, (first, last) in found.items()}

    async def _points_at(self, tp: TopicPartition, offset: int, stamp: int, target: int) -> bool:
        consumer = self._require()
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
        records = batch.get(tp, [])
        return bool(records) and (
            records[0].offset == offset and records[0].timestamp == stamp >= target
        )

    async def records(self) -> AsyncIterator[TopicRecord]:
        consumer = self._require()
        merger = PartitionMerger([tp.partition for tp in self._tps])
        by_part = {tp.partition: tp for tp in self._tps}
        last_data = {p: time.monotonic() for p in by_part}
        for p, tp in by_part.items():
            stop = self._filters[p].stop_offset
            if stop is not None and await consumer.position(tp) >= stop:
                merger.finish(p)
        while not merger.done:
            for record in merger.pop_ready():
                self.read += 1
                yield record
            waiting = merger.waiting_on()
            if not waiting:
                continue
            # Only the partitions the merge waits on are fetched; the others are ahead.
            fetch = set(waiting)
            for p, tp in by_part.items():
                if p in fetch and tp in consumer.paused():
                    consumer.resume(tp)
                    last_data[p] = time.monotonic()
                elif p not in fetch and len(merger.buffers[p]) >= MAX_BUFFERED:
                    consumer.pause(tp)
            batch = await consumer.getmany(*(by_part[p] for p in waiting), timeout_ms=POLL_MS)
            now = time.monotonic()
            for tp, raw in batch.items():
                last_data[tp.partition] = now
                merger.push(self._select(tp.partition, raw, merger))
            for p in waiting:
                if p not in merger.finished and p not in {tp.partition for tp in batch}:
                    await self._maybe_finish(by_part[p], now - last_data[p], merger)

    def _select(
        self, partition: int, raw: list[ConsumerRecord[bytes, bytes]], merger: PartitionMerger
    ) -> list[TopicRecord]:
        taken: list[TopicRecord] = []
        flt = self._filters[partition]
        for r in raw:
            record = TopicRecord(partition, r.offset, r.timestamp, r.value, tuple(r.headers or ()))
            verdict = flt.verdict(record)
            if verdict == "stop":
                merger.finish(partition)
                self._require().pause(TopicPartition(self.selection.topic, partition))
                break
            if verdict == "take":
                taken.append(record)
        return taken

    async def _maybe_finish(self, tp: TopicPartition, idle: float, merger: PartitionMerger) -> None:
        position = await self._require().position(tp)
        stop = self._filters[tp.partition].stop_offset
        snapshot = self._snapshot[tp.partition]
        reached_stop = stop is not None and position >= stop
        caught_up = idle >= self.selection.idle_timeout_s and position >= snapshot
        if reached_stop or caught_up:
            merger.finish(tp.partition)
        elif idle >= self.selection.stall_timeout_s:
            self.warn(
                f"partition {tp.partition} of {tp.topic} idle at offset {position}, below the "
                f"end offset {snapshot} the broker reported at start; stopping there"
            )
            merger.finish(tp.partition)

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("TopicSource used outside `async with`")
        return self._consumer


class _Unusable(Exception):
    pass
