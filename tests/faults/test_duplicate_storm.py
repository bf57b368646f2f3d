"""Issue 14, scenario 6: a duplicate storm with poison messages.

Real processes: the session's Tansu broker and Redis, one `meterguard worker` child. The same
batch of native events (5 identities, 100 events each over 10 minutes, every field summed
varied) is delivered 20 times: even rounds one event per message, odd rounds as JSON arrays
of 25 events. Every round has poison messages interleaved at seeded random places: invalid
JSON, a non-UTF-8 identity (on a non-UTF-8 key), an empty value, a tombstone, an event with
negative tokens (carrying a real event's id, sent before that event: it must not burn the
id), a JSON array holding a real event next to two bad elements, a CloudEvent without an
id, a JSON scalar, an empty array, an event from the far future and an identity with a
control character.

Judged exactly: every identity's minute windows equal the unique events' sums, the
exactly-once counters (events_new + events_late) equal the unique events, events_duplicate
equals the copies, and every poison message has exactly its dead letters on the DLQ (matched
by partition and offset) with the reason, the original bytes and the format the dead-letter
contract states (docs/architecture.md, "DeadLetter"). Then a clean batch of new events must
be counted: the storm left the worker running. Its figures are printed (`pytest -s`).

An oversize message (> 1 MiB) is its own test below: its dead letter once held all of it,
more than the worker's producer accepts (1,000,000 bytes), so the decode agent crashed and the
worker counted nothing more. A dead letter now keeps the first 128 KiB, the size and SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from meterguard.detectors.features import MinuteWindow
from meterguard.streams.decoding.decode import MAX_DEAD_LETTER_RAW_BYTES, MAX_MESSAGE_BYTES
from meterguard.streams.tools.embedded import EmbeddedBroker
from tests.support.polling import eventually
from tests.support.worker_process import Worker, read_topics, start_worker

IDENTITIES = 5
PER_IDENTITY = 100  # over MINUTES minutes, in event-time order
MINUTES = 10
ROUNDS = 20  # deliveries of the same batch
ARRAY_SIZE = 25  # events per message in the odd rounds
CLEAN = 2000  # new events after the storm
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
COUNTED = ("events_new", "events_late")


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def batch() -> list[dict]:
    """The unique events: per identity in event-time order, every summed field varied."""
    docs = []
    for i in range(IDENTITIES):
        for k in range(PER_IDENTITY):
            at = T0 + timedelta(milliseconds=k * MINUTES * 60_000 // PER_IDENTITY + 7)
            docs.append(
                {
                    "event_id": f"storm-{i}-{k}",
                    "identity": f"svc-storm-{i}",
                    "event_time": iso(at),
                    "team": "platform",
                    "environment": "prod",
                    "model": "gpt-4o-mini",
                    "input_tokens": 100 + 7 * k + i,
                    "output_tokens": 20 + (k * 13) % 97,
                    "cached_tokens": (k * 5) % 40,
                    "cost_usd": f"0.000{(k * 37 + i) % 1000:03d}17",
                    "status": "error" if k % 11 == 3 else "ok",
                }
            )
    return docs


def clean_batch() -> list[dict]:
    """New events after the storm: new ids, on time (after every storm event)."""
    start = T0 + timedelta(minutes=MINUTES)
    per = CLEAN // IDENTITIES
    return [
        {
            "event_id": f"clean-{i}-{k}",
            "identity": f"svc-storm-{i}",
            "event_time": iso(start + timedelta(milliseconds=k * 300_000 // per + 3)),
            "input_tokens": 50,
            "output_tokens": 5,
            "cached_tokens": 0,
            "cost_usd": "0.0001",
            "status": "ok",
        }
        for i in range(IDENTITIES)
        for k in range(per)
    ]


@dataclass(frozen=True)
class Letter:
    """One dead letter a poison message must produce (raw None: the message's own bytes)."""

    reason: str
    format: str
    raw: bytes | None = None
    error: str = ""  # a part of the error message
    encoding: str = "text"


@dataclass(frozen=True)
class Poison:
    kind: str
    key: bytes | None
    value: bytes | None
    letters: tuple[Letter, ...]
    headers: tuple[tuple[str, bytes], ...] = ()
    events: int = 0  # valid events it carries (copies of the batch's)


def poisons(docs: list[dict]) -> list[Poison]:
    first = docs[0]  # svc-storm-0's earliest event
    key = first["identity"].encode()
    bad_element = {"event_id": "bad-element", "identity": "svc-storm-0", "event_time": "yesterday"}
    cloud_event = {
        "specversion": "1.0",
        "type": "meterguard.metering",
        "source": "/gateway/eu-1",
        "time": first["event_time"],
        "datacontenttype": "application/json",
        "data": {"identity": "svc-storm-1", "input_tokens": 3},
    }
    return [
        # First in every round: the id of `first`, which follows it (same key, partition).
        Poison(
            "negative_tokens",
            key,
            orjson.dumps({**first, "input_tokens": -5}),
            (Letter("invalid_event", "native", error="input_tokens"),),
        ),
        Poison(
            "invalid_json",
            b"svc-storm-2",
            b'{"event_id": "cut-short", "identity": "svc-storm-2", "event_t',
            (Letter("invalid_json", "unknown"),),
        ),
        Poison(
            "non_utf8_identity",
            b"\xff\xfe-key",
            b'{"event_id": "utf8", "identity": "bot-\xff\xfe", "event_time": "'
            + first["event_time"].encode()
            + b'"}',
            (Letter("invalid_json", "unknown", encoding="base64", error="UTF-8"),),
        ),
        Poison("empty_value", b"svc-storm-3", b"", (Letter("invalid_json", "unknown"),)),
        Poison(
            "tombstone",
            b"svc-storm-3",
            None,
            (Letter("empty_message", "unknown", b"", "no value"),),
        ),
        Poison(
            "array_with_bad_elements",
            key,
            orjson.dumps([first, 42, bad_element]),
            (
                Letter("not_an_object", "native", b"42", "got int"),
                Letter("invalid_event", "native", orjson.dumps(bad_element), "event_time"),
            ),
            events=1,
        ),
        Poison(
            "cloudevent_without_id",
            b"svc-storm-1",
            orjson.dumps(cloud_event),
            (Letter("invalid_event", "cloudevents", error="event_id"),),
            headers=(("content-type", b"application/cloudevents+json"),),
        ),
        Poison(
            "json_scalar",
            b"svc-storm-4",
            b'"metering"',
            (Letter("not_an_object", "native", error="got str"),),
        ),
        Poison("empty_array", b"svc-storm-4", b"[]", (Letter("empty_batch", "native"),)),
        Poison(
            "future_event",
            b"svc-storm-4",
            orjson.dumps({**first, "event_id": "future", "event_time": "2099-01-01T00:00:00Z"}),
            (Letter("event_time_in_future", "native", error="ahead"),),
        ),
        Poison(
            "control_character_identity",
            b"svc-storm-4",
            orjson.dumps({**first, "event_id": "ctrl", "identity": "svc-storm-4\u0007"}),
            (Letter("invalid_event", "native", error="control characters"),),
        ),
    ]


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    poison: Poison | None = None


def storm(docs: list[dict], bad: list[Poison], rng: random.Random) -> Iterator[Message]:
    """ROUNDS deliveries of `docs`, the poison messages interleaved at random places
    (negative_tokens first in each round: before the event whose id it carries)."""
    for round_ in range(ROUNDS):
        if round_ % 2 == 0:
            clean = [Message(d["identity"].encode(), orjson.dumps(d)) for d in docs]
        else:
            clean = [
                Message(d[0]["identity"].encode(), orjson.dumps(d))
                for n in range(0, len(docs), ARRAY_SIZE)
                for d in [docs[n : n + ARRAY_SIZE]]
            ]
        head, *rest = (Message(p.key, p.value, p.headers, p) for p in bad)
        # Each poison message after the round's first message (svc-storm-0's first event).
        for message in rest:
            clean.insert(rng.randint(1, len(clean)), message)
        yield head
        yield from clean


@dataclass
class StormFigures:
    """The run's figures (tests/faults/README.md)."""

    scenario: str
    sent: int  # messages produced, poison included
    unique: int  # distinct (identity, event_id) among the valid events
    copies: int  # valid events delivered beyond the first of each id
    counted: int  # events_new + events_late after the storm
    duplicates_counted: int  # events_duplicate after the storm
    dead_letters: dict[str, int]  # on the DLQ topic, by reason
    clean_events: int = 0
    clean_s: float = 0.0  # from producing the clean batch until it was all counted
    late: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.unique - self.counted)

    @property
    def double_counted(self) -> int:
        return max(0, self.counted - self.unique)

    def line(self) -> str:
        figures = {
            **asdict(self),
            "lost": self.lost,
            "double_counted": self.double_counted,
            "clean_s": round(self.clean_s, 2),
            "clean_events_per_s": round(self.clean_events / self.clean_s) if self.clean_s else 0,
        }
        return "FAULT FIGURES " + orjson.dumps(figures).decode()


async def send_all(bootstrap: str, topic: str, messages: list[Message]) -> list[tuple[int, int]]:
    """Produce in order; -> each message's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=m.key, value=m.value, headers=list(m.headers) or None)
            for m in messages
        ]
        await producer.flush()
        placed = [await f for f in futures]
    finally:
        await producer.stop()
    return [(md.partition, md.offset) for md in placed]


async def pipeline_counters(worker: Worker) -> dict[str, int]:
    return await worker.store.stats.pipeline_counters()


def minute_rows(docs: list[dict]) -> dict[str, dict[int, tuple[int, ...]]]:
    """identity -> epoch minute -> (calls, input, output, cached, cost nano-USD, errors)."""
    rows: dict[str, dict[int, list[int]]] = {}
    for d in docs:
        at = datetime.fromisoformat(d["event_time"].replace("Z", "+00:00"))
        minute = int(at.timestamp() * 1000) // 60_000
        row = rows.setdefault(d["identity"], {}).setdefault(minute, [0] * 6)
        cost = int(Decimal(d["cost_usd"]) * 1_000_000_000)
        values = (1, d["input_tokens"], d["output_tokens"], d["cached_tokens"], cost)
        for n, v in enumerate(values):
            row[n] += v
        row[5] += d["status"] == "error"
    return {i: {m: tuple(r) for m, r in by.items()} for i, by in rows.items()}


def row_of(window: MinuteWindow) -> tuple[int, ...]:
    w = window
    return (w.calls, w.input_tokens, w.output_tokens, w.cached_tokens, w.cost_nano_usd, w.errors)


def raw_bytes(letter: dict) -> bytes:
    if letter["raw_encoding"] == "base64":
        return base64.b64decode(letter["raw"])
    return letter["raw"].encode()


async def test_duplicate_storm_with_poison_counts_each_event_once_and_dead_letters_each_poison(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory
):
    docs = batch()
    bad = poisons(docs)
    messages = list(storm(docs, bad, random.Random(6)))
    unique = len(docs)
    copies = ROUNDS * unique + ROUNDS * sum(p.events for p in bad) - unique
    letters_expected = ROUNDS * sum(len(p.letters) for p in bad)
    worker = await start_worker(broker, redis_url, tmp_path_factory)
    settings = worker.settings
    try:
        placed = await send_all(broker.bootstrap, settings.topic_raw, messages)
        await worker.wait_counted(unique + copies, (*COUNTED, "events_duplicate"))

        async def all_dead_lettered() -> bool:
            stats = await pipeline_counters(worker)
            return stats.get("events_dead_lettered", 0) >= letters_expected

        await eventually(all_dead_lettered, "every dead letter counted", log=worker.log)
        dlq: list[dict] = []

        async def all_on_the_dlq() -> bool:
            dlq[:] = (await read_topics(settings, [settings.topic_dlq]))[settings.topic_dlq]
            return len(dlq) >= letters_expected

        await eventually(all_on_the_dlq, "every dead letter on the DLQ", log=worker.log)
        stats = await pipeline_counters(worker)
        figures = StormFigures(
            "duplicate_storm",
            sent=len(messages),
            unique=unique,
            copies=copies,
            counted=sum(stats.get(s, 0) for s in COUNTED),
            duplicates_counted=stats.get("events_duplicate", 0),
            dead_letters=dict(sorted(Counter(x["reason"] for x in dlq).items())),
            late=stats.get("events_late", 0),
        )

        # The worker keeps going: a clean batch after the storm is counted in full.
        extra = clean_batch()
        started = time.monotonic()
        await send_all(
            broker.bootstrap,
            settings.topic_raw,
            [Message(d["identity"].encode(), orjson.dumps(d)) for d in extra],
        )
        await worker.wait_counted(unique + len(extra), COUNTED)
        figures.clean_events, figures.clean_s = len(extra), time.monotonic() - started
        print(figures.line())
        assert worker.process.poll() is None

        # Counted exactly once: nothing lost, nothing doubled, every copy a duplicate.
        after = await pipeline_counters(worker)
        assert figures.lost == 0 and figures.double_counted == 0
        assert stats["events_new"] + stats.get("events_late", 0) == unique
        assert stats.get("events_late", 0) == 0  # each id first came in event-time order
        assert stats["events_duplicate"] == copies
        assert after["events_new"] + after.get("events_late", 0) == unique + len(extra)
        assert after["events_duplicate"] == copies

        # Every identity's minute windows are the unique events' exact sums.
        expected = minute_rows(docs + extra)
        assert sorted(expected) == [f"svc-storm-{i}" for i in range(IDENTITIES)]
        for identity, by_minute in expected.items():
            first, last = min(by_minute), max(by_minute)
            rows = await worker.store.windows.read(identity, first, last)
            got = {r.minute: row_of(r) for r in rows if r.calls}
            assert got == by_minute, identity
            counters = await worker.store.windows.counters(identity)
            mine = sum(1 for d in docs if d["identity"] == identity)
            assert counters["new"] == mine + len(extra) // IDENTITIES
            assert counters.get("late", 0) == 0

        # Every poison message has exactly its dead letters, with reason and original bytes.
        assert len(dlq) == letters_expected == stats["events_dead_lettered"]
        by_place: dict[tuple[int, int], list[dict]] = {}
        for letter in dlq:
            assert letter["topic"] == settings.topic_raw
            by_place.setdefault((letter["partition"], letter["offset"]), []).append(letter)
        poisoned = {place: m.poison for m, place in zip(messages, placed, strict=True) if m.poison}
        assert set(by_place) == set(poisoned)
        for place, poison in poisoned.items():
            assert poison is not None
            got_letters = sorted(by_place[place], key=lambda x: x["reason"])
            want = sorted(poison.letters, key=lambda x: x.reason)
            assert [x["reason"] for x in got_letters] == [w.reason for w in want], poison.kind
            for letter, w in zip(got_letters, want, strict=True):
                original = (poison.value or b"") if w.raw is None else w.raw
                assert raw_bytes(letter) == original, poison.kind
                assert letter["raw_encoding"] == w.encoding, poison.kind
                assert letter["format"] == w.format, poison.kind
                assert w.error in letter["error"], (poison.kind, letter["error"])
                assert letter["headers"] == ({k: v.decode() for k, v in poison.headers} or None)
        kinds = Counter(p.kind for p in poisoned.values())
        assert kinds == {p.kind: ROUNDS for p in bad}
    finally:
        await worker.stop()


def crashed(worker: Worker) -> bool:
    """Faust logs an agent that raised (the agent is then gone; the process stays up)."""
    return "Crashed reason=" in worker.log.read_text(errors="replace")


async def test_an_oversize_message_is_dead_lettered_and_the_worker_goes_on(
    broker: EmbeddedBroker, redis_url: str, tmp_path_factory: pytest.TempPathFactory
):
    docs = batch()[:PER_IDENTITY]  # svc-storm-0's events
    first = docs[0]
    oversize = orjson.dumps({**first, "attributes": {"pad": "x" * MAX_MESSAGE_BYTES}})
    key = first["identity"].encode()
    messages = [Message(key, oversize)] + [Message(key, orjson.dumps(d)) for d in docs]
    worker = await start_worker(broker, redis_url, tmp_path_factory)
    settings = worker.settings
    try:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_request_size=4 << 20)
        await producer.start()
        try:
            for m in messages:
                await producer.send(settings.topic_raw, key=m.key, value=m.value)
            await producer.flush()
        finally:
            await producer.stop()

        async def counted_or_crashed() -> bool:
            stats = await pipeline_counters(worker)
            return crashed(worker) or sum(stats.get(s, 0) for s in COUNTED) >= len(docs)

        await eventually(counted_or_crashed, "the events after the oversize one", log=worker.log)
        assert not crashed(worker), worker.log.read_text(errors="replace")[-3000:]
        dlq = (await read_topics(settings, [settings.topic_dlq]))[settings.topic_dlq]
        assert [x["reason"] for x in dlq] == ["oversize"]
        letter = dlq[0]
        # The letter keeps the first bytes, the size and the hash; the whole stays on the raw
        # topic at its partition and offset.
        assert letter["raw_truncated"] is True
        assert oversize.startswith(raw_bytes(letter))
        assert len(raw_bytes(letter)) == MAX_DEAD_LETTER_RAW_BYTES
        assert letter["raw_size"] == len(oversize)
        assert letter["raw_sha256"] == hashlib.sha256(oversize).hexdigest()
        assert letter["offset"] is not None
        assert str(MAX_MESSAGE_BYTES) in letter["error"]
    finally:
        await worker.stop()
