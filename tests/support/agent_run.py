"""An agent run made by the real OpenTelemetry SDK, exported as its batch processor does: the
model calls (which end first) in one export, the agent span that names the agent later.

Spans carry no `gen_ai.agent.name` of their own, as the GenAI agent conventions put it on the
`invoke_agent` span only; each export is the protobuf the OTLP exporters send.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.trace import SpanKind, set_span_in_context

from tests.support.otel_sdk import capturing_tracer

SECOND_NS = 1_000_000_000


@dataclass(frozen=True)
class AgentRun:
    calls: bytes  # the export with the model calls (their parent is not in it)
    agent: bytes  # the later export with the agent span
    call_event_ids: list[str]
    trace_id: str
    service: str
    agent_name: str


# What the OTel contrib openai-agents instrumentation stamps on every span it makes
# (OpenAIAgentsInstrumentor: agent_name_default, agent_id_default); only the agent span gets
# the agent's real name.
INSTRUMENTATION_DEFAULTS = {"gen_ai.agent.name": "OpenAI Agent", "gen_ai.agent.id": "agent"}


def agent_run(
    service: str,
    agent_name: str | None,
    calls: int,
    start: datetime,
    seconds_apart: int = 2,
    stamped: dict[str, str] | None = None,
) -> AgentRun:
    """`calls` chat spans under one invoke_agent span (named `agent_name`, or nothing);
    `stamped`: attributes put on every span, as an instrumentation's defaults."""
    provider, exporter, tracer = capturing_tracer(service)
    t0 = int(start.astimezone(UTC).timestamp()) * SECOND_NS
    attrs: dict[str, str] = {**(stamped or {}), "gen_ai.operation.name": "invoke_agent"}
    if agent_name is not None:
        attrs["gen_ai.agent.name"] = agent_name
    agent = tracer.start_span(f"invoke_agent {agent_name}", start_time=t0, attributes=attrs)
    for i in range(calls):
        call = tracer.start_span(
            "chat gpt-4o-mini",
            context=set_span_in_context(agent),
            kind=SpanKind.CLIENT,
            start_time=t0 + i * seconds_apart * SECOND_NS,
            attributes={
                **(stamped or {}),
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100 + i,
                "gen_ai.usage.output_tokens": 10,
            },
        )
        call.end(end_time=t0 + (i * seconds_apart + 1) * SECOND_NS)
    agent.end(end_time=t0 + (calls * seconds_apart + 1) * SECOND_NS)
    provider.shutdown()
    spans = list(exporter.get_finished_spans())
    children, parent = spans[:-1], spans[-1:]
    trace_id = f"{parent[0].context.trace_id:032x}"
    ids = [f"otel-{trace_id}-{s.context.span_id:016x}" for s in children]
    return AgentRun(
        encode_spans(children).SerializeToString(),
        encode_spans(parent).SerializeToString(),
        ids,
        trace_id,
        service,
        agent_name or "",
    )
