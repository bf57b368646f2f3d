"""Captured samples of every input format decode to exactly their native equivalents
(the samples: tests/support/format_samples.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.decoding.decode import Origin, decode, decode_message
from tests.support.format_samples import SAMPLES, native_lines, sample

INGEST = datetime(2025, 6, 3, 14, 30, tzinfo=UTC)
ORIGIN = Origin("metering.raw", 1, 99)
EXPECTED = {
    "otlp_openai_agent": ("otlp", 3),  # format, ignored records
    "otlp_sdk_protobuf": ("otlp-protobuf", 1),  # the invoke_agent span
    "cloudevents_structured": ("cloudevents", 0),
    "cloudevents_batch": ("cloudevents-batch", 0),
    "cloudevents_binary": ("cloudevents-binary", 0),
    "openai_chat_completion": ("openai", 0),
    "openai_response": ("openai", 0),
    "litellm_spend_log": ("litellm", 0),
}


def native_equivalent(name: str) -> list[MeteringEvent]:
    events = []
    for line in native_lines(name):
        event = decode(line, INGEST, ORIGIN)
        assert isinstance(event, MeteringEvent), event
        events.append(event)
    return events


def test_every_sample_is_listed() -> None:
    assert set(SAMPLES) == set(EXPECTED)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_decodes_to_exactly_its_native_equivalent(name: str) -> None:
    value, headers = sample(name)
    result = decode_message(value, headers, INGEST, ORIGIN)
    assert result.dead_letters == []
    assert result.items == native_equivalent(name)
    assert (result.format, result.ignored) == EXPECTED[name]


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_events_serialise_like_their_native_equivalent(name: str) -> None:
    """What the worker publishes on metering.events is byte-identical too."""
    value, headers = sample(name)
    published = [e.to_json() for e in decode_message(value, headers, INGEST, ORIGIN).events]
    assert published == [e.to_json() for e in native_equivalent(name)]


def test_headers_as_a_mapping_read_like_a_list_of_pairs() -> None:
    value, headers = sample("cloudevents_binary")
    assert headers is not None
    as_list = decode_message(value, headers, INGEST, ORIGIN)
    as_dict = decode_message(value, dict(headers), INGEST, ORIGIN)
    as_tuple = decode_message(value, tuple(headers), INGEST, ORIGIN)
    assert as_list == as_dict == as_tuple


def test_otlp_tool_and_chat_spans_inherit_the_agent_from_their_parent_span() -> None:
    value, _ = sample("otlp_openai_agent")
    events = decode_message(value, None, INGEST, ORIGIN).events
    agent_spans = [e for e in events if e.trace_id == "5b8efff798038103d269b633813fc60c"]
    assert {e.identity for e in agent_spans} == {"triage-agent"}
    assert {e.parent_span_id for e in agent_spans} == {"b7ad6b7169203331"}
    assert [e.kind for e in agent_spans] == ["tool.call", "llm.call", "llm.call", "llm.call"]


def test_binary_cloudevent_dead_letter_keeps_the_ce_headers_as_evidence() -> None:
    value, headers = sample("cloudevents_binary")
    assert headers is not None
    bad = [(k, b"not a time" if k == "ce_time" else v) for k, v in headers]
    (letter,) = decode_message(value, bad, INGEST, ORIGIN).items
    assert not isinstance(letter, MeteringEvent)
    assert letter.reason == "invalid_event" and "event_time" in letter.error
    assert letter.format == "cloudevents-binary"
    assert letter.headers is not None and letter.headers["ce_id"] == dict(headers)["ce_id"].decode()
    assert letter.raw.encode() == value
    assert (letter.topic, letter.partition, letter.offset) == ("metering.raw", 1, 99)
