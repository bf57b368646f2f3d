"""Records inside one message: each is an event or its own dead letter; ignored parts counted."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import (
    MAX_MESSAGE_BYTES,
    MAX_RECORDS_PER_MESSAGE,
    Origin,
    decode_message,
)
from tests.support.format_samples import DATA

INGEST = datetime(2025, 6, 3, 14, 30, tzinfo=UTC)
ORIGIN = Origin("metering.raw", 2, 7)


def otlp_sample() -> dict:
    return orjson.loads((DATA / "otlp_openai_agent.json").read_bytes())


def spans_of(doc: dict) -> list[dict]:
    return [s for r in doc["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]


def attr(span: dict, key: str, value: dict) -> None:
    span["attributes"] = [a for a in span["attributes"] if a["key"] != key]
    span["attributes"].append({"key": key, "value": value})


def chat_span(doc: dict, span_id: str) -> dict:
    return next(s for s in spans_of(doc) if s["spanId"] == span_id)


def reasons(items: list) -> list[str]:
    return [i.reason if isinstance(i, DeadLetter) else "event" for i in items]


def test_bad_spans_are_dead_letters_of_their_own_and_good_siblings_survive() -> None:
    doc = otlp_sample()
    chat_span(doc, "3a1f2c9d8e7b6a50")["endTimeUnixNano"] = "yesterday"
    attr(chat_span(doc, "7d3e1a2b9c8f0e61"), "gen_ai.usage.input_tokens", {"intValue": "-5"})
    bad_id = chat_span(doc, "91a0b2c3d4e5f607")
    bad_id["spanId"] = "zz"
    result = decode_message(orjson.dumps(doc), None, INGEST, ORIGIN)
    assert reasons(result.items) == [
        "event",
        "invalid_event",
        "invalid_event",
        "invalid_event",
        "event",
    ]
    assert result.ignored == 3
    time_letter, tokens_letter, id_letter = result.items[1:4]
    assert isinstance(time_letter, DeadLetter) and "endTimeUnixNano" in time_letter.error
    assert isinstance(tokens_letter, DeadLetter) and "input_tokens" in tokens_letter.error
    assert isinstance(id_letter, DeadLetter) and "spanId" in id_letter.error
    # Each carries its own span as raw, and the message's origin.
    assert orjson.loads(id_letter.raw) == bad_id
    assert (id_letter.topic, id_letter.partition, id_letter.offset) == ("metering.raw", 2, 7)
    assert id_letter.format == "otlp"


def test_genai_span_without_identity_is_a_missing_identity_dead_letter() -> None:
    doc = otlp_sample()
    report = doc["resourceSpans"][1]
    report["resource"]["attributes"] = [
        a for a in report["resource"]["attributes"] if a["key"] != "service.name"
    ]
    result = decode_message(orjson.dumps(doc), None, INGEST, ORIGIN)
    letter = result.items[-1]
    assert isinstance(letter, DeadLetter) and letter.reason == "missing_identity"
    assert "gen_ai.agent.name, gen_ai.agent.id, resource:service.name" in letter.error
    assert len(result.events) == 4


def test_export_with_only_non_genai_spans_is_all_ignored_not_dead() -> None:
    doc = otlp_sample()
    doc["resourceSpans"] = doc["resourceSpans"][:1]
    doc["resourceSpans"][0]["scopeSpans"] = [
        doc["resourceSpans"][0]["scopeSpans"][i] for i in (0, 3)
    ]
    result = decode_message(orjson.dumps(doc), None, INGEST, ORIGIN)
    assert (result.items, result.ignored, result.format) == ([], 2, "otlp")


def test_export_without_any_span_is_an_empty_batch_dead_letter() -> None:
    (letter,) = decode_message(b'{"resourceSpans": []}', None, INGEST).items
    assert isinstance(letter, DeadLetter) and letter.reason == "empty_batch"


def test_malformed_otlp_structure_is_dead_lettered_where_it_breaks() -> None:
    doc = otlp_sample()
    doc["resourceSpans"].append({"resource": {"attributes": "nope"}, "scopeSpans": []})
    doc["resourceSpans"][0]["scopeSpans"].append({"spans": "nope"})
    result = decode_message(orjson.dumps(doc), None, INGEST, ORIGIN)
    assert sorted(reasons(result.dead_letters)) == ["invalid_record", "invalid_record"]
    assert len(result.events) == 5


def test_agent_spans_are_ignored_unless_the_mapping_counts_them() -> None:
    from meterguard.streams.decoding.formats.mapping import MappingConfig, OtlpMapping

    value = (DATA / "otlp_openai_agent.json").read_bytes()
    counting = MappingConfig(otlp=OtlpMapping(ignore_operations=frozenset()))
    result = decode_message(value, None, INGEST, mapping=counting)
    assert (len(result.events), result.ignored) == (6, 2)
    agent = next(e for e in result.events if e.operation == "invoke_agent")
    assert (agent.identity, agent.input_tokens) == ("triage-agent", 3815)


def test_base64_span_ids_from_protobuf_json_exporters_are_read_as_hex() -> None:
    doc = otlp_sample()
    span = chat_span(doc, "3a1f2c9d8e7b6a50")
    span["spanId"] = "Oh8snY57alA="  # base64 of 3a1f2c9d8e7b6a50
    events = decode_message(orjson.dumps(doc), None, INGEST).events
    assert "3a1f2c9d8e7b6a50" in {e.span_id for e in events}


def test_far_future_span_is_refused_per_record() -> None:
    doc = otlp_sample()
    future = INGEST + timedelta(hours=1)
    ns = str(int(future.timestamp()) * 1_000_000_000)
    chat_span(doc, "3a1f2c9d8e7b6a50")["endTimeUnixNano"] = ns
    result = decode_message(orjson.dumps(doc), None, INGEST)
    assert reasons(result.items).count("event_time_in_future") == 1
    assert len(result.events) == 4


def test_cloudevents_batch_bad_elements_die_alone() -> None:
    batch = orjson.loads((DATA / "cloudevents_batch.json").read_bytes())
    bad = copy.deepcopy(batch[0])
    bad["subject"] = "svc\ncrawler"
    no_identity = copy.deepcopy(batch[0])
    del no_identity["subject"]
    oldspec = {**batch[0], "specversion": "0.3"}
    result = decode_message(orjson.dumps([bad, 7, no_identity, oldspec, *batch]), None, INGEST)
    assert reasons(result.items) == [
        "invalid_event",
        "not_an_object",
        "missing_identity",
        "unsupported_format",
        "event",
        "event",
        "event",
    ]
    assert orjson.loads(result.items[0].raw) == bad  # type: ignore[union-attr]
    assert result.items[1].raw == "7"  # type: ignore[union-attr]


def test_too_many_records_in_one_message_is_one_dead_letter() -> None:
    ce = {"specversion": "1.0", "id": "x", "subject": "s", "time": "2025-06-03T14:00:00Z"}
    value = orjson.dumps([ce] * (MAX_RECORDS_PER_MESSAGE + 1))
    (letter,) = decode_message(value, None, INGEST).items
    assert isinstance(letter, DeadLetter) and letter.reason == "too_many_records"


@pytest.mark.parametrize(
    "value",
    [
        b'{"resourceSpans": [' + b"1," * (MAX_MESSAGE_BYTES // 2) + b"1]}",
        b'{"resourceSpans": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"specversion": "1.0", "data": "\xff"}',
        b'[{"specversion": "1.0"}, ' + b"{" * 3000,
    ],
    ids=["oversize", "deep", "invalid-utf8", "truncated"],
)
def test_hostile_containers_are_single_dead_letters(value: bytes) -> None:
    result = decode_message(value, None, INGEST)
    (letter,) = result.items
    assert isinstance(letter, DeadLetter)
    assert letter.reason in {"oversize", "invalid_json"}


def test_litellm_failure_row_and_naive_utc_times() -> None:
    row = orjson.loads((DATA / "litellm_spend_log.json").read_bytes())
    row.update(
        status="failure",
        startTime="2025-06-03 14:22:12.402",
        endTime="2025-06-03 14:22:14.957",
        request_duration_ms=None,
        metadata={**row["metadata"], "error_information": {"error_class": "RateLimitError"}},
    )
    (event,) = decode_message(orjson.dumps(row), None, INGEST).items
    assert isinstance(event, MeteringEvent)
    assert (event.status, event.error_type) == ("error", "RateLimitError")
    assert event.event_time == datetime(2025, 6, 3, 14, 22, 14, 957000, tzinfo=UTC)
    assert event.latency_ms == pytest.approx(2555.0)


def test_openai_response_without_any_identity_names_the_paths_tried() -> None:
    doc = orjson.loads((DATA / "openai_chat_completion.json").read_bytes())
    (letter,) = decode_message(orjson.dumps(doc), None, INGEST).items
    assert isinstance(letter, DeadLetter) and letter.reason == "missing_identity"
    assert "header:mg-identity" in letter.error


@pytest.mark.parametrize("name", ["otlp_openai_agent", "cloudevents_batch", "litellm_spend_log"])
def test_mutated_samples_never_raise_and_never_vanish(name: str) -> None:
    import random

    rng = random.Random(name)
    template = bytearray(orjson.dumps(orjson.loads((DATA / f"{name}.json").read_bytes())))
    for _ in range(400):
        data = bytearray(template)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        result = decode_message(bytes(data), None, INGEST, ORIGIN)
        assert result.items or result.ignored
        assert all(isinstance(i, MeteringEvent | DeadLetter) for i in result.items)
        assert not any(
            isinstance(i, DeadLetter) and i.reason == "internal_error" for i in result.items
        )
