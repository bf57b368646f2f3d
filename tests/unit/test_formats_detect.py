"""Format detection (streams/decoding/formats/detect.py): headers beat content; native stays
native."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import Origin, decode, decode_message

INGEST = datetime(2025, 6, 3, 14, 30, tzinfo=UTC)
NATIVE = orjson.dumps(
    {"event_id": "n-1", "identity": "svc-a", "event_time": "2025-06-03T14:00:00Z", "team": "x"}
)
CE = {
    "specversion": "1.0",
    "id": "ce-1",
    "source": "/gw",
    "type": "usage",
    "subject": "svc-ce",
    "time": "2025-06-03T14:00:00Z",
    "data": {"input_tokens": 5},
}


def fmt(value: bytes | None, headers: dict[str, bytes] | None = None) -> str:
    return decode_message(value, headers, INGEST).format


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"event_id": "a", "identity": "b", "event_time": 1}, "native"),
        ({"event_id": "a", "resourceSpans": [], "specversion": "1.0"}, "native"),
        ({"resourceSpans": []}, "otlp"),
        (CE, "cloudevents"),
        ([CE, CE], "cloudevents-batch"),
        ({"request_id": "r", "startTime": "2025-06-03T14:00:00Z"}, "litellm"),
        ({"id": "x", "response_cost": 0.1, "startTime": 1748959200.0}, "litellm"),
        ({"id": "c", "model": "m", "usage": {}}, "openai"),
        ({"identity": "b"}, "native"),
        ([1, 2], "native"),
        ([], "native"),
        ("text", "native"),
    ],
)
def test_content_decides_when_no_header_does(doc: object, expected: str) -> None:
    assert fmt(orjson.dumps(doc)) == expected


def test_native_input_decodes_exactly_as_decode_does() -> None:
    result = decode_message(NATIVE, None, INGEST, Origin("t", 0, 1))
    assert result.items == [decode(NATIVE, INGEST, Origin("t", 0, 1))]
    assert (result.format, result.ignored) == ("native", 0)


# Not `[]`: a native array is a batch of events (its empty form an `empty_batch` letter,
# tests/unit/test_native_batches.py), while `decode` reads exactly one event object.
@pytest.mark.parametrize(
    "data",
    [b"", b"nope", b"42", b'{"identity": "x"}', b'{"event_id": "x", "identity": "\\u0000"}'],
)
def test_native_dead_letters_keep_decodes_reason_and_raw(data: bytes) -> None:
    (letter,) = decode_message(data, None, INGEST).items
    old = decode(data, INGEST)
    assert isinstance(letter, DeadLetter) and isinstance(old, DeadLetter)
    assert (letter.reason, letter.error, letter.raw) == (old.reason, old.error, old.raw)


def test_ce_specversion_header_makes_a_native_looking_value_binary_mode_data() -> None:
    headers = {
        "ce_specversion": b"1.0",
        "ce_id": b"bin-1",
        "ce_time": b"2025-06-03T14:00:00Z",
        "ce_subject": b"svc-bin",
        "ce_source": b"/gw",
        "ce_type": b"usage",
    }
    result = decode_message(NATIVE, headers, INGEST)
    assert result.format == "cloudevents-binary"
    (event,) = result.items
    assert isinstance(event, MeteringEvent)
    # The envelope's id wins; the data's own identity comes before ce_subject (the default map).
    assert (event.event_id, event.identity, event.team) == ("bin-1", "svc-a", "x")


def test_structured_content_type_beats_otlp_looking_content() -> None:
    headers = {"content-type": b"application/cloudevents+json; charset=utf-8"}
    result = decode_message(b'{"resourceSpans": []}', headers, INGEST)
    assert result.format == "cloudevents"
    (letter,) = result.items
    assert isinstance(letter, DeadLetter) and letter.reason == "unsupported_format"
    assert "specversion" in letter.error


def test_batch_content_type_reads_an_array_of_events() -> None:
    headers = {"content-type": b"application/cloudevents-batch+json"}
    result = decode_message(orjson.dumps([CE]), headers, INGEST)
    assert result.format == "cloudevents-batch"
    assert [e.identity for e in result.events] == ["svc-ce"]


def test_mg_format_header_beats_content() -> None:
    litellm_looking_native = orjson.dumps(
        {"request_id": "r", "startTime": "2025-06-03T14:00:00Z", "event_id": "e", "identity": "i"}
    )
    assert fmt(litellm_looking_native) == "native"
    assert fmt(litellm_looking_native, {"mg-format": b"litellm"}) == "litellm"


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({"mg-format": b"avro"}, "mg-format"),
        ({"content-type": b"application/cloudevents+avro"}, "avro"),
    ],
)
def test_formats_we_do_not_read_are_refused_with_a_reason(
    headers: dict[str, bytes], needle: str
) -> None:
    (letter,) = decode_message(NATIVE, headers, INGEST).items
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "unsupported_format" and needle in letter.error
    assert letter.raw.encode() == NATIVE


def test_header_names_are_case_insensitive_and_undecodable_values_ignored() -> None:
    headers = [("Content-Type", b"application/cloudevents+json"), ("mg-identity", b"\xff")]
    assert fmt(orjson.dumps(CE), headers) == "cloudevents"  # type: ignore[arg-type]


def test_a_message_without_value_is_an_empty_message() -> None:
    (letter,) = decode_message(None, None, INGEST).items
    assert isinstance(letter, DeadLetter) and letter.reason == "empty_message"


def test_malformed_headers_never_raise() -> None:
    headers = [("a", b"b"), ("x",), 5, ("c", None), (b"name", b"v"), ("ce_id", "text")]
    result = decode_message(NATIVE, headers, INGEST)  # type: ignore[arg-type]
    assert isinstance(result.items[0], MeteringEvent)
