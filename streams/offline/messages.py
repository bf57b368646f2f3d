"""Input messages of replay and reconcile: file lines and topic records as `RawMessage`s, cut
into batches, decoded by the worker's decoder.

Both inputs become the same `RawMessage`s and batches count messages (lines or records), so
the same messages in the same order are cut into the same batches and decode the same way.
`OfflineDecoder.batch` decodes a batch once, for one replay or for the two of a policy what-if.

OTLP spans held for an ancestor exported later (streams/decoding/trace_attribution.py) wait on
the data's clock, the latest event time decoded so far, not the wall clock: a replay settles
them the same way however fast it runs. `finish` settles what still waits at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import DecodeResult, Origin, dead_letter, decode_message
from meterguard.streams.decoding.formats.mapping import DEFAULT_MAPPING, MappingConfig
from meterguard.streams.decoding.kcat_envelope import EnvelopeError, read_kcat_line
from meterguard.streams.decoding.trace_attribution import TraceAttribution
from meterguard.streams.offline.topic_source import TopicSource
from meterguard.streams.settings import Settings
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
    trace_hold: timedelta = timedelta(seconds=20)  # Settings.trace_hold's default

    @classmethod
    def of(cls, settings: Settings) -> DecodeContext:
        return cls(
            timedelta(seconds=settings.max_future_skew_s),
            settings.mapping,
            timedelta(seconds=settings.trace_hold),
        )


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


@dataclass(frozen=True)
class DecodedBatch:
    """One batch of input messages, decoded once (then fed to one run, or to two)."""

    messages: int
    events: list[MeteringEvent]
    dead_letters: list[DeadLetter]
    ignored: int


class OfflineDecoder:
    """decode_raw over a stream of batches, with the held OTLP spans of its traces."""

    def __init__(self, ctx: DecodeContext) -> None:
        self.ctx = ctx
        self.traces = TraceAttribution(ctx.trace_hold)
        self.clock: datetime | None = None  # the latest event time decoded so far

    def message(self, message: RawMessage, now: datetime) -> DecodeResult:
        """One message's events and dead letters, plus the held spans it settled (its own
        or earlier messages'); `held` and `links` are consumed here."""
        decoded = decode_raw(message, message.ingest_time(now), self.ctx)
        for item in decoded.items:
            if isinstance(item, MeteringEvent):
                self._advance(item.event_time)
        for span in decoded.held:
            self._advance(span.event.event_time)
        if not decoded.held and not decoded.links:
            return decoded
        clock = self.clock or now
        settled = self.traces.admit(decoded.links, decoded.held, clock)
        settled += self.traces.due(clock)
        return replace(decoded, items=decoded.items + settled, held=[], links=[])

    def batch(self, messages: list[RawMessage], now: datetime) -> DecodedBatch:
        # Held spans settle inside `message`, after that message's links: the same points in
        # the input for replay and reconcile, however the input is cut into batches.
        decoded = [self.message(message, now) for message in messages]
        items = [item for d in decoded for item in d.items]
        return _batch(len(messages), items, sum(d.ignored for d in decoded))

    def finish(self) -> DecodedBatch:
        """What still waits at the end of the input, settled with what is known."""
        return _batch(0, self.traces.drain(), 0)

    def _advance(self, when: datetime) -> None:
        if self.clock is None or when > self.clock:
            self.clock = when


def _batch(messages: int, items: list[MeteringEvent | DeadLetter], ignored: int) -> DecodedBatch:
    events = [i for i in items if isinstance(i, MeteringEvent)]
    letters = [i for i in items if isinstance(i, DeadLetter)]
    return DecodedBatch(messages, events, letters, ignored)


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
