"""Captured samples of every input format decode to exactly their native equivalents, and each
sample's generator still reproduces it (the samples: tests/support/format_samples.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from meterguard.models import MeteringEvent
from meterguard.streams.decoding.decode import Origin, decode, decode_message
from tests.support.format_samples import (
    DATA,
    SAMPLES,
    generator,
    native_lines,
    sample,
    sample_files,
)

INGEST = datetime(2025, 6, 3, 14, 30, tzinfo=UTC)
ORIGIN = Origin("metering.raw", 1, 99)
EXPECTED = {  # format, ignored records
    "otlp_collector_two_services": ("otlp", 3),  # the HTTP server and client spans, the agent's
    "otlp_openai_agents_v2": ("otlp", 4),  # the workflow and agent spans of both runs
    "otlp_sdk_protobuf": ("otlp-protobuf", 1),  # the invoke_agent span
    "cloudevents_structured": ("cloudevents", 0),
    "cloudevents_batch": ("cloudevents-batch", 0),
    "cloudevents_binary": ("cloudevents-binary", 0),
    "openai_chat_completion": ("openai", 0),
    "openai_response": ("openai", 0),
    "openai_embeddings": ("openai", 0),
    "litellm_spend_logs_payload": ("litellm", 0),
    "litellm_standard_logging": ("litellm", 0),
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
def test_sample_is_read_as_its_format_without_dead_letters(name: str) -> None:
    value, headers = sample(name)
    result = decode_message(value, headers, INGEST, ORIGIN)
    assert result.dead_letters == []
    assert (result.format, result.ignored) == EXPECTED[name]
    assert len(result.events) == len(native_lines(name))


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


def test_every_sample_has_its_generator() -> None:
    """No sample is typed by hand: each is made by a real producer library."""
    made = {name for name in SAMPLES if generator(name) is not None}
    assert made == set(SAMPLES)
    scripts = {p.name.removeprefix("make_").removesuffix(".py") for p in DATA.glob("make_*.py")}
    assert scripts == made  # no script without its sample


@pytest.mark.parametrize("name", SAMPLES)
def test_generator_reproduces_the_committed_sample_byte_for_byte(name: str, tmp_path: Path) -> None:
    """Each make_NAME.py, run into an empty directory, writes exactly the committed files.
    A difference after upgrading a producer library means: rerun the script, review the diff."""
    script = generator(name)
    assert script is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in sample_files(name))
    for committed in sample_files(name):
        assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), committed.name


def test_headers_as_a_mapping_read_like_a_list_of_pairs() -> None:
    value, headers = sample("cloudevents_binary")
    assert headers is not None
    as_list = decode_message(value, headers, INGEST, ORIGIN)
    as_dict = decode_message(value, dict(headers), INGEST, ORIGIN)
    as_tuple = decode_message(value, tuple(headers), INGEST, ORIGIN)
    assert as_list == as_dict == as_tuple


def test_otlp_tool_and_chat_spans_inherit_the_agent_from_their_parent_span() -> None:
    """The openai_v2 chat spans and the app's tool span name no agent; the agent span above
    them, in another scope of the export, does."""
    value, _ = sample("otlp_collector_two_services")
    spans = [
        s
        for r in orjson.loads(value)["resourceSpans"]
        for sc in r["scopeSpans"]
        for s in sc["spans"]
    ]
    naming = {
        s["spanId"] for s in spans if any(a["key"] == "gen_ai.agent.name" for a in s["attributes"])
    }
    assert naming == {"b7ad6b7169203331"}  # only the agent span names the agent
    events = decode_message(value, None, INGEST, ORIGIN).events
    agent_spans = [e for e in events if e.trace_id == "5b8efff798038103d269b633813fc60c"]
    assert {e.identity for e in agent_spans} == {"triage-agent"}
    # Their parent, the agent span, is no metered call, nor is anything above it: each call
    # is a root of the call tree (parent_span_id links calls to calls).
    assert {e.parent_span_id for e in agent_spans} == {None}
    assert [e.kind for e in agent_spans] == ["llm.call", "llm.call", "llm.call", "tool.call"]


def test_openai_agents_calls_are_billed_to_the_agent_that_made_them() -> None:
    value, _ = sample("otlp_openai_agents_v2")
    events = decode_message(value, None, INGEST, ORIGIN).events
    assert [e.kind for e in events] == ["llm.call", "tool.call", "llm.call", "llm.call"]
    assert {e.identity for e in events} == {"triage-agent"}


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


def test_no_two_samples_share_an_event() -> None:
    # The broker test produces every sample to one topic: a shared (identity, event_id) would
    # count once there, and hide a sample.
    seen = [
        (doc["identity"], doc["event_id"])
        for name in SAMPLES
        for doc in map(orjson.loads, native_lines(name))
    ]
    assert len(seen) == len(set(seen))
