"""OTLP protobuf, as the real OpenTelemetry SDK encodes it (issue 11).

The spans are made by the OTel SDK (`TracerProvider`, GenAI semantic-convention attributes)
and encoded by the SDK's own OTLP encoder (`opentelemetry-exporter-otlp-proto-common`
`encode_spans`, what the OTLP exporters and the Collector's `otlp_proto` Kafka encoding send).
The expected events are computed from the SDK's finished spans, not from our decoder.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import decode_message
from meterguard.streams.decoding.formats import OTLP_PROTOBUF
from tests.support.otel_sdk import capturing_tracer


def ingest_now() -> datetime:
    # Read when decoding, not at collection: the spans are made with the wall clock, and in
    # the full suite this module's tests run minutes after it is collected (beyond the
    # 5-minute future-skew limit, which then dead-letters them).
    return datetime.now(UTC) + timedelta(minutes=1)


def sdk_spans() -> list[ReadableSpan]:
    """An agent run: invoke_agent (in-process) around two chat calls, one failing."""
    provider, exporter, tracer = capturing_tracer("support-svc")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support-agent"}
    with tracer.start_as_current_span("invoke_agent support-agent", attributes=agent):
        for i, failed in enumerate((False, True)):
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 0 if failed else 40,
            }
            if failed:
                attrs["error.type"] = "RateLimitError"
            with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as span:
                span.set_attributes(attrs)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def expected(spans: list[ReadableSpan]) -> list[dict]:
    """What every chat span must become, from the SDK's own span objects."""
    out = []
    for s in spans:
        if s.attributes.get("gen_ai.operation.name") != "chat":
            continue
        ctx = s.get_span_context()
        out.append(
            {
                "event_id": f"otel-{ctx.trace_id:032x}-{ctx.span_id:016x}",
                "identity": "support-agent",  # inherited from the invoke_agent parent
                "input_tokens": s.attributes["gen_ai.usage.input_tokens"],
                "output_tokens": s.attributes["gen_ai.usage.output_tokens"],
                "model": "gpt-4o-mini",
                "status": "error" if "error.type" in s.attributes else "ok",
                "event_time_ns": s.end_time,
            }
        )
    return out


def seen(events: list[MeteringEvent]) -> list[dict]:
    return [
        {
            "event_id": e.event_id,
            "identity": e.identity,
            "input_tokens": e.input_tokens,
            "output_tokens": e.output_tokens,
            "model": e.model,
            "status": e.status,
            "event_time_ns": e.event_time_ms * 1_000_000,
        }
        for e in events
    ]


@pytest.fixture(scope="module")
def spans() -> list[ReadableSpan]:
    return sdk_spans()


def test_the_sdk_exports_children_before_their_parent(spans) -> None:
    """Why identity must be looked up across the whole export (issue 11)."""
    names = [s.attributes["gen_ai.operation.name"] for s in spans]
    assert names == ["chat", "chat", "invoke_agent"]


def test_a_protobuf_export_without_any_header_becomes_its_chat_calls(spans) -> None:
    value = encode_spans(spans).SerializeToString()
    assert value[:1] == b"\x0a"  # field 1, resource_spans: what the sniffing relies on
    result = decode_message(value, [], ingest_now())
    assert result.format == OTLP_PROTOBUF
    assert result.dead_letters == []
    assert result.ignored == 1  # the invoke_agent span: it wraps its children's usage
    want = expected(spans)
    got = seen(result.events)
    for w, g in zip(want, got, strict=True):  # event times are kept to the millisecond
        assert abs(g.pop("event_time_ns") - w.pop("event_time_ns")) < 1_000_000
    assert got == want


def test_protobuf_and_otlp_json_of_one_export_give_the_same_events(spans) -> None:
    request = encode_spans(spans)
    at = ingest_now()
    from_proto = decode_message(request.SerializeToString(), [], at)
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    for rs in doc["resourceSpans"]:  # OTLP/JSON ids are hex (opentelemetry-proto spec)
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    from_json = decode_message(orjson.dumps(doc), [], at)
    assert from_json.format == "otlp"
    assert len(from_json.events) == 2
    assert [e.model_dump() for e in from_json.events] == [e.model_dump() for e in from_proto.events]


def test_the_protobuf_content_type_header_is_read_not_refused(spans) -> None:
    value = encode_spans(spans).SerializeToString()
    result = decode_message(value, [("content-type", b"application/x-protobuf")], ingest_now())
    assert len(result.events) == 2 and result.format == OTLP_PROTOBUF


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"not json, not protobuf", [], "invalid_json"),
        (b"\x0a\xff\xff", [], "invalid_json"),  # starts like an export, is none: as native
        (b"\x0a\xff\xff", [("content-type", b"application/x-protobuf")], "invalid_protobuf"),
        (b'{"resourceSpans": [', [], "invalid_json"),
    ],
)
def test_unreadable_bytes_are_dead_lettered_with_a_reason(value, headers, reason) -> None:
    result = decode_message(value, headers, ingest_now())
    assert len(result.items) == 1
    letter = result.items[0]
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason
    assert letter.raw_encoding in ("text", "base64")  # nothing is lost


def test_wrapper_and_memory_operations_are_ignored_and_a_remote_agent_call_is_counted() -> None:
    """GenAI semantic conventions: invoke_workflow (may carry the aggregate), plan and memory
    operations are not model calls; invoke_agent is INTERNAL in-process (its children carry
    the usage) but CLIENT for a remote agent, whose usage only that span reports."""
    provider, exporter, tracer = capturing_tracer("orchestrator")
    usage = {"gen_ai.usage.input_tokens": 900, "gen_ai.usage.output_tokens": 300}
    workflow = {"gen_ai.operation.name": "invoke_workflow", "gen_ai.agent.name": "flow", **usage}
    with tracer.start_as_current_span("invoke_workflow flow", attributes=workflow):
        for op in ("plan", "search_memory", "create_memory"):
            with tracer.start_as_current_span(op, attributes={"gen_ai.operation.name": op}):
                pass
        local = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "local", **usage}
        with tracer.start_as_current_span("invoke_agent local", attributes=local):
            pass
        remote = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "remote", **usage}
        with tracer.start_as_current_span(
            "invoke_agent remote", kind=SpanKind.CLIENT, attributes=remote
        ):
            pass
    provider.shutdown()
    value = encode_spans(exporter.get_finished_spans()).SerializeToString()
    result = decode_message(value, [], ingest_now())
    assert result.dead_letters == []
    assert result.ignored == 5  # workflow, plan, two memory operations, the local agent
    (event,) = result.events
    assert (event.identity, event.operation) == ("remote", "invoke_agent")
    assert (event.input_tokens, event.output_tokens) == (900, 300)
