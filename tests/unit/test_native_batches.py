"""A native message may carry many events: a JSON array of native event objects (issue 13).

Each element is validated on its own exactly like a single native message; a bad element is a
dead letter of its own carrying that element's JSON (as a CloudEvents batch element's does),
and the whole-message rules (size, `too_many_records`, `empty_batch`) apply to the array.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import (
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    Origin,
    decode,
    decode_message,
)

INGEST = datetime(2025, 1, 6, 8, 0, 30, tzinfo=UTC)
ORIGIN = Origin(topic="metering.raw", partition=3, offset=4711)
HEADERS = [("mg-source", b"gw-7")]


def event(n: int, **fields: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "event_id": f"evt-{n}",
        "identity": "svc-billing",
        "event_time": "2025-01-06T08:00:00Z",
        "input_tokens": n,
    }
    doc.update(fields)
    return {k: v for k, v in doc.items() if v is not ...}


def reasons(items: list[MeteringEvent | DeadLetter]) -> list[str]:
    return [i.reason if isinstance(i, DeadLetter) else "event" for i in items]


def test_an_array_of_native_events_is_each_event_in_order() -> None:
    docs = [event(n) for n in range(5)]
    result = decode_message(orjson.dumps(docs), None, INGEST, ORIGIN)
    assert (result.format, result.ignored) == ("native", 0)
    assert [e.event_id for e in result.events] == [f"evt-{n}" for n in range(5)]
    # Each exactly what the same object alone on the topic gives.
    assert result.items == [decode(orjson.dumps(d), INGEST, ORIGIN) for d in docs]


def test_a_one_element_array_is_the_event_alone() -> None:
    alone = orjson.dumps(event(1))
    assert decode_message(b"[" + alone + b"]", None, INGEST).items == [decode(alone, INGEST)]


def test_the_mg_format_header_reads_an_array_as_native_events() -> None:
    value = orjson.dumps([event(1), event(2)])
    result = decode_message(value, [("mg-format", b"native")], INGEST)
    assert (result.format, reasons(result.items)) == ("native", ["event", "event"])


def test_bad_elements_die_alone_with_their_own_json_and_the_single_event_error() -> None:
    too_early = event(3, event_time="1999-01-01T00:00:00Z")
    future = event(4, event_time=(INGEST + timedelta(hours=1)).isoformat())
    no_identity = event(5, identity=...)
    docs: list[object] = [event(1), 7, too_early, "text", future, no_identity, None, event(2)]
    result = decode_message(orjson.dumps(docs), HEADERS, INGEST, ORIGIN)
    assert reasons(result.items) == [
        "event",
        "not_an_object",
        "invalid_event",
        "not_an_object",
        "event_time_in_future",
        "invalid_event",
        "not_an_object",
        "event",
    ]
    for doc, item in zip(docs, result.items, strict=True):
        if isinstance(item, DeadLetter):
            alone = decode(orjson.dumps(doc), INGEST, ORIGIN)
            assert isinstance(alone, DeadLetter)
            assert (item.reason, item.error) == (alone.reason, alone.error)
            assert orjson.loads(item.raw) == doc  # the element, not the whole array
            assert (item.topic, item.partition, item.offset) == ("metering.raw", 3, 4711)
            assert (item.format, item.headers) == ("native", {"mg-source": "gw-7"})
    assert result.items[1].error == "expected a JSON object, got int"  # type: ignore[union-attr]


def test_an_element_cannot_set_its_own_ingest_time() -> None:
    docs = [event(1, ingest_time="2020-01-01T00:00:00Z"), event(2)]
    result = decode_message(orjson.dumps(docs), None, INGEST)
    assert [e.ingest_time for e in result.events] == [INGEST, INGEST]


def test_an_empty_array_is_one_empty_batch_letter_with_the_message_bytes() -> None:
    (letter,) = decode_message(b"[ ]", HEADERS, INGEST, ORIGIN).items
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.raw, letter.format) == ("empty_batch", "[ ]", "native")
    assert letter.error == "the message holds no records"
    assert (letter.offset, letter.headers) == (4711, {"mg-source": "gw-7"})


def test_more_elements_than_the_limit_is_one_too_many_records_letter() -> None:
    value = b"[" + b",".join([b"1"] * (MAX_RECORDS_PER_MESSAGE + 1)) + b"]"
    (letter,) = decode_message(value, None, INGEST, ORIGIN).items
    assert isinstance(letter, DeadLetter) and letter.reason == "too_many_records"
    assert letter.error == (
        f"{MAX_RECORDS_PER_MESSAGE + 1} records in one message, limit {MAX_RECORDS_PER_MESSAGE}"
    )
    assert letter.raw.encode() == value


def test_exactly_the_limit_of_elements_is_read() -> None:
    small = {"event_id": "e", "identity": "s", "event_time": 1736150400}
    value = orjson.dumps([{**small, "event_id": f"e{n}"} for n in range(MAX_RECORDS_PER_MESSAGE)])
    assert len(value) <= MAX_MESSAGE_BYTES
    result = decode_message(value, None, INGEST)
    assert len(result.events) == MAX_RECORDS_PER_MESSAGE and not result.dead_letters


@pytest.mark.parametrize("value", [b"[" + b'"x",' * (MAX_MESSAGE_BYTES // 4) + b'"x"]'])
def test_an_oversize_array_is_one_oversize_letter(value: bytes) -> None:
    (letter,) = decode_message(value, None, INGEST).items
    assert isinstance(letter, DeadLetter) and letter.reason == "oversize"


def test_decode_still_reads_exactly_one_event_object() -> None:
    letter = decode(orjson.dumps([event(1)]), INGEST)
    assert isinstance(letter, DeadLetter) and letter.reason == "not_an_object"
