"""A child span exported before the agent span above it keeps its agent's identity.

Exports come from the real OTel SDK (tests/support/agent_run.py), model calls first, as its
batch processor sends them; the rules are streams/decoding/trace_attribution.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.trace import set_span_in_context

from meterguard.models import DeadLetter, MeteringEvent
from meterguard.streams.decoding.decode import DecodeResult, Origin, decode_message
from meterguard.streams.decoding.trace_attribution import HeldSpan, TraceAttribution
from meterguard.streams.offline.messages import DecodeContext, OfflineDecoder, RawMessage
from tests.support.agent_run import INSTRUMENTATION_DEFAULTS, agent_run
from tests.support.otel_sdk import capturing_tracer

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
NOW = START + timedelta(minutes=5)
HOLD = timedelta(seconds=60)


def decode(value: bytes) -> DecodeResult:
    return decode_message(value, None, NOW, Origin())


def test_calls_whose_agent_span_is_not_in_the_export_are_held_not_billed_to_the_service():
    run = agent_run("support-svc", "triage-agent", calls=3, start=START)
    calls = decode(run.calls)
    assert calls.items == []  # not billed to support-svc
    assert [h.event.event_id for h in calls.held] == run.call_event_ids
    assert {h.event.identity for h in calls.held} == {"support-svc"}  # the fallback
    assert {h.trace_id for h in calls.held} == {run.trace_id}
    agent = decode(run.agent)
    assert agent.items == [] and agent.ignored == 1  # the agent span is no metering record
    assert [(link.agent, link.parent_span_id) for link in agent.links] == [("triage-agent", None)]


def test_the_agent_span_arriving_later_names_every_held_call():
    run = agent_run("support-svc", "triage-agent", calls=3, start=START)
    traces = TraceAttribution(HOLD)
    calls, agent = decode(run.calls), decode(run.agent)
    assert traces.admit(calls.links, calls.held, NOW) == []
    settled = traces.admit(agent.links, agent.held, NOW + timedelta(seconds=5))
    assert [e.event_id for e in settled] == run.call_event_ids
    assert all(isinstance(e, MeteringEvent) and e.identity == "triage-agent" for e in settled)
    assert [e.input_tokens for e in settled if isinstance(e, MeteringEvent)] == [100, 101, 102]
    assert traces.waiting == 0


def test_a_redelivered_call_keeps_the_identity_first_decided():
    run = agent_run("support-svc", "triage-agent", calls=2, start=START)
    traces = TraceAttribution(HOLD)
    calls, agent = decode(run.calls), decode(run.agent)
    traces.admit(calls.links, calls.held, NOW)
    traces.admit(agent.links, agent.held, NOW)
    again = traces.admit(calls.links, calls.held, NOW + timedelta(seconds=1))
    assert [(e.event_id, e.identity) for e in again if isinstance(e, MeteringEvent)] == [
        (event_id, "triage-agent") for event_id in run.call_event_ids
    ]


def test_past_the_hold_the_calls_fall_back_to_the_service():
    run = agent_run("support-svc", "triage-agent", calls=2, start=START)
    traces = TraceAttribution(HOLD)
    calls = decode(run.calls)
    traces.admit(calls.links, calls.held, NOW)
    assert traces.due(NOW + HOLD - timedelta(milliseconds=1)) == []
    settled = traces.due(NOW + HOLD)
    assert [(e.event_id, e.identity) for e in settled if isinstance(e, MeteringEvent)] == [
        (event_id, "support-svc") for event_id in run.call_event_ids
    ]


def test_an_agent_span_that_names_nobody_settles_the_calls_at_once_with_the_fallback():
    run = agent_run("support-svc", None, calls=2, start=START)
    traces = TraceAttribution(HOLD)
    calls, agent = decode(run.calls), decode(run.agent)
    traces.admit(calls.links, calls.held, NOW)
    settled = traces.admit(agent.links, agent.held, NOW)  # the chain reached the root
    assert {e.identity for e in settled if isinstance(e, MeteringEvent)} == {"support-svc"}
    assert len(settled) == 2


def test_with_nothing_naming_it_a_call_becomes_a_dead_letter_that_says_what_to_set():
    # The SDK's default service.name names no workload.
    run = agent_run("unknown_service:python", None, calls=1, start=START)
    traces = TraceAttribution(HOLD)
    calls, agent = decode(run.calls), decode(run.agent)
    assert calls.items == [] and len(calls.held) == 1
    traces.admit(calls.links, calls.held, NOW)
    [letter] = traces.admit(agent.links, agent.held, NOW)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "missing_identity"
    assert "set gen_ai.agent.name" in letter.error and "service.name" in letter.error


def test_a_span_whose_whole_chain_is_in_its_export_is_never_held():
    run = agent_run("support-svc", None, calls=1, start=START)
    # One export with both spans: nothing names an agent, the service is the identity now.
    both = ExportTraceServiceRequest()
    both.MergeFromString(run.calls)
    both.MergeFromString(run.agent)
    result = decode(both.SerializeToString())
    assert result.held == []
    assert [e.identity for e in result.events] == ["support-svc"]


def test_a_held_span_round_trips_through_json():
    run = agent_run("support-svc", "triage-agent", calls=1, start=START)
    [held] = decode(run.calls).held
    assert HeldSpan.from_json(held.to_json()) == held


@pytest.mark.parametrize("batch_size", [1, 2, 5000])
def test_replay_settles_on_the_datas_clock_the_same_way_however_the_input_is_cut(
    batch_size: int,
):
    runs = [agent_run("svc", f"agent-{i}", 2, START + timedelta(seconds=i)) for i in range(3)]
    later = agent_run("svc", "agent-3", 2, START + 2 * HOLD)  # moves the data's clock on
    messages = [
        runs[0].calls, runs[1].calls, runs[1].agent, runs[2].calls, runs[0].agent,
        later.calls,  # run 2's calls wait past the hold, on event time: they fall back
        runs[2].agent,  # too late for them
    ]  # fmt: skip
    decoder = OfflineDecoder(DecodeContext(timedelta(minutes=5), trace_hold=HOLD))
    identities: dict[str, str] = {}
    for i in range(0, len(messages), batch_size):
        cut = messages[i : i + batch_size]
        batch = [RawMessage(m, Origin("f", None, i + n)) for n, m in enumerate(cut)]
        for event in decoder.batch(batch, NOW).events:
            identities[event.event_id] = event.identity
    for event in decoder.finish().events:  # `later`'s agent never comes: the end settles it
        identities[event.event_id] = event.identity
    assert identities == {
        **dict.fromkeys(runs[0].call_event_ids, "agent-0"),
        **dict.fromkeys(runs[1].call_event_ids, "agent-1"),
        **dict.fromkeys(runs[2].call_event_ids, "svc"),
        **dict.fromkeys(later.call_event_ids, "svc"),
    }


def test_the_agent_span_names_the_calls_not_the_defaults_an_instrumentation_stamps_on_them():
    run = agent_run("support-svc", "triage-agent", 2, START, stamped=INSTRUMENTATION_DEFAULTS)
    both = ExportTraceServiceRequest()
    both.MergeFromString(run.calls)
    both.MergeFromString(run.agent)
    assert {e.identity for e in decode(both.SerializeToString()).events} == {"triage-agent"}
    # Exported apart: the stamped name does not settle them; the agent span does.
    calls, agent = decode(run.calls), decode(run.agent)
    assert {h.event.identity for h in calls.held} == {"OpenAI Agent"}  # only the fallback
    traces = TraceAttribution(HOLD)
    traces.admit(calls.links, calls.held, NOW)
    settled = traces.admit(agent.links, agent.held, NOW)
    assert {e.identity for e in settled if isinstance(e, MeteringEvent)} == {"triage-agent"}


def test_a_call_never_inherits_the_cost_its_agent_span_sums():
    run = agent_run("support-svc", "triage-agent", 1, START)
    both = ExportTraceServiceRequest()
    both.MergeFromString(run.calls)
    both.MergeFromString(run.agent)
    agent_span = both.resource_spans[1].scope_spans[0].spans[0]
    cost = agent_span.attributes.add()
    cost.key, cost.value.double_value = "gen_ai.usage.cost", 0.5
    [event] = decode(both.SerializeToString()).events
    assert event.cost_nano_usd == 0


def test_a_call_is_linked_to_the_call_above_it_through_agent_spans():
    # Agent-as-tool in one export: triage-agent's tool call starts billing-agent, whose chat
    # call's parent is billing-agent's invoke_agent span, no metered call: the decoder links
    # the chat call to the tool call, so the call tree (agent chains, root-caller cost) sees
    # triage-agent -> billing-agent.
    provider, exporter, tracer = capturing_tracer("support-svc")
    t0 = int(START.timestamp()) * 1_000_000_000
    second = 1_000_000_000

    def start(name: str, parent: object, **attrs: object) -> object:
        context = set_span_in_context(parent) if parent is not None else None  # type: ignore[arg-type]
        return tracer.start_span(name, context=context, start_time=t0, attributes=attrs)

    a = start("invoke_agent triage", None, **{"gen_ai.operation.name": "invoke_agent",
                                             "gen_ai.agent.name": "triage-agent"})  # fmt: skip
    tool = start("execute_tool ask_billing", a, **{"gen_ai.operation.name": "execute_tool",
                                                  "gen_ai.tool.name": "ask_billing"})  # fmt: skip
    b = start("invoke_agent billing", tool, **{"gen_ai.operation.name": "invoke_agent",
                                              "gen_ai.agent.name": "billing-agent"})  # fmt: skip
    chat = start("chat", b, **{"gen_ai.operation.name": "chat",
                               "gen_ai.usage.input_tokens": 10})  # fmt: skip
    for span in (chat, b, tool, a):
        span.end(end_time=t0 + second)  # type: ignore[attr-defined]
    provider.shutdown()
    events = decode(encode_spans(exporter.get_finished_spans()).SerializeToString()).events
    by_identity = {e.identity: e for e in events}
    assert set(by_identity) == {"triage-agent", "billing-agent"}
    tool_call, chat_call = by_identity["triage-agent"], by_identity["billing-agent"]
    assert tool_call.parent_span_id is None  # a root of the call tree
    assert chat_call.parent_span_id == tool_call.span_id
