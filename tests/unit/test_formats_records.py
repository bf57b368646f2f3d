"""Records inside one message: each is an event or its own dead letter; ignored parts counted."""

from __future__ import annotations

import copy
import json
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
OTLP = "otlp_collector_two_services"  # support-agent's request (four scopes) + report-writer's


def otlp_sample() -> dict:
    return orjson.loads((DATA / f"{OTLP}.json").read_bytes())


def spans_of(doc: dict) -> list[dict]:
    return [s for r in doc["resourceSpans"] for sc in r["scopeSpans"] for s in sc["spans"]]


def resource_named(doc: dict, service: str) -> dict:
    return next(
        r
        for r in doc["resourceSpans"]
        if {"key": "service.name", "value": {"stringValue": service}} in r["resource"]["attributes"]
    )


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
    # In the export's order: the three chat spans, the tool span, report-writer's chat span.
    assert reasons(result.items) == [
        "invalid_event",
        "invalid_event",
        "invalid_event",
        "event",
        "event",
    ]
    assert result.ignored == 3
    time_letter, tokens_letter, id_letter = result.items[0:3]
    assert isinstance(time_letter, DeadLetter) and "endTimeUnixNano" in time_letter.error
    assert isinstance(tokens_letter, DeadLetter) and "input_tokens" in tokens_letter.error
    assert isinstance(id_letter, DeadLetter) and "spanId" in id_letter.error
    # Each carries its own span as raw, and the message's origin.
    assert orjson.loads(id_letter.raw) == bad_id
    assert (id_letter.topic, id_letter.partition, id_letter.offset) == ("metering.raw", 2, 7)
    assert id_letter.format == "otlp"


def test_genai_span_without_identity_is_a_missing_identity_dead_letter() -> None:
    doc = otlp_sample()
    report = resource_named(doc, "report-writer")  # OpenLIT: no agent span, a root span
    assert report is doc["resourceSpans"][-1]
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
    support = resource_named(doc, "support-agent")
    http = ("opentelemetry.instrumentation.fastapi", "opentelemetry.instrumentation.httpx")
    support["scopeSpans"] = [s for s in support["scopeSpans"] if s["scope"]["name"] in http]
    assert len(support["scopeSpans"]) == 2
    doc["resourceSpans"] = [support]
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

    value = (DATA / f"{OTLP}.json").read_bytes()
    counting = MappingConfig(otlp=OtlpMapping(ignore_operations=frozenset()))
    result = decode_message(value, None, INGEST, mapping=counting)
    assert (len(result.events), result.ignored) == (6, 2)
    agent = next(e for e in result.events if e.operation == "invoke_agent")
    # The app sums its model calls' usage on its agent span: 1289 + 2526 input tokens.
    assert (agent.identity, agent.input_tokens) == ("triage-agent", 3815)


def test_base64_span_ids_from_protobuf_json_exporters_are_read_as_hex() -> None:
    doc = otlp_sample()
    span = chat_span(doc, "3a1f2c9d8e7b6a50")
    span["spanId"] = "Oh8snY57alA="  # base64 of 3a1f2c9d8e7b6a50
    events = decode_message(orjson.dumps(doc), None, INGEST).events
    assert "3a1f2c9d8e7b6a50" in {e.span_id for e in events}


def test_numbers_unquoted_and_empty_parent_ids_read_like_the_sdks_json() -> None:
    """Writers of OTLP/JSON differ where the proto3 JSON mapping lets them: 64-bit integers
    as JSON numbers rather than strings, an empty `parentSpanId` written rather than left out.
    Both read exactly like the Collector-style JSON of the sample."""
    doc = otlp_sample()
    for span in spans_of(doc):
        span.setdefault("parentSpanId", "")
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            span[key] = int(span[key])
        for attribute in span["attributes"]:
            if "intValue" in attribute["value"]:
                attribute["value"]["intValue"] = int(attribute["value"]["intValue"])
    as_written = decode_message((DATA / f"{OTLP}.json").read_bytes(), None, INGEST, ORIGIN)
    edited = decode_message(orjson.dumps(doc), None, INGEST, ORIGIN)
    assert b'"intValue":1289' in orjson.dumps(doc) and b'"parentSpanId":""' in orjson.dumps(doc)
    assert (edited.items, edited.ignored) == (as_written.items, as_written.ignored)
    assert len(edited.events) == 5


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


def spend_log_row() -> tuple[dict, dict]:
    """LiteLLM's real spend-log row, and its `metadata` (a JSON string in the row) parsed."""
    row = orjson.loads((DATA / "litellm_spend_logs_payload.json").read_bytes())
    assert isinstance(row["metadata"], str)
    return row, orjson.loads(row["metadata"])


@pytest.mark.parametrize("metadata_as", ["json-string", "object"])
def test_litellm_failure_row_and_naive_utc_times(metadata_as: str) -> None:
    """The real row made a failure, with naive times. Its `metadata` as get_logging_payload
    writes it (a JSON string), or as the row reads back from LiteLLM's database (an object:
    `metadata Json?` in litellm/proxy/schema.prisma)."""
    row, metadata = spend_log_row()
    metadata["error_information"] = {
        "error_code": "429",
        "error_class": "RateLimitError",
        "llm_provider": "openai",
        "traceback": "",
        "error_message": "litellm.RateLimitError: RateLimitError: OpenAIException",
    }
    row.update(
        status="failure",
        startTime="2025-06-03 14:22:12.402",
        endTime="2025-06-03 14:22:14.957",
        request_duration_ms=None,
        metadata=json.dumps(metadata) if metadata_as == "json-string" else metadata,
    )
    (event,) = decode_message(orjson.dumps(row), None, INGEST).items
    assert isinstance(event, MeteringEvent)
    assert (event.status, event.error_type) == ("error", "RateLimitError")
    assert event.event_time == datetime(2025, 6, 3, 14, 22, 14, 957000, tzinfo=UTC)
    assert event.latency_ms == pytest.approx(2555.0)
    assert event.identity == metadata["user_api_key_alias"] == "acme-prod-key"


def test_litellm_row_environment_and_cached_tokens_come_from_its_metadata_string() -> None:
    row, metadata = spend_log_row()
    assert metadata["additional_usage_values"]["prompt_tokens_details"] is None  # none cached
    metadata["spend_logs_metadata"] = {"environment": "prod"}  # the caller's spend-log metadata
    metadata["additional_usage_values"]["prompt_tokens_details"] = {"cached_tokens": 8}
    row["metadata"] = json.dumps(metadata)
    (event,) = decode_message(orjson.dumps(row), None, INGEST).items
    assert isinstance(event, MeteringEvent)
    assert (event.environment, event.cached_tokens) == ("prod", 8)


def test_openai_response_without_any_identity_names_the_paths_tried() -> None:
    doc = orjson.loads((DATA / "openai_chat_completion.json").read_bytes())
    (letter,) = decode_message(orjson.dumps(doc), None, INGEST).items
    assert isinstance(letter, DeadLetter) and letter.reason == "missing_identity"
    assert "header:mg-identity" in letter.error


@pytest.mark.parametrize(
    "name", [OTLP, "otlp_openai_agents_v2", "cloudevents_batch", "litellm_spend_logs_payload"]
)
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
