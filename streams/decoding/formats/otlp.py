"""OpenTelemetry GenAI spans in OTLP/JSON (`resourceSpans`) -> one native document per call.

A span is a metering record when it carries any `gen_ai.*` attribute and its
`gen_ai.operation.name` is not one the mapping ignores (by default agent, workflow, planning
and memory spans: they wrap, and often repeat, their children's usage, or call no model),
except an `invoke_agent` CLIENT span with `gen_ai.usage.*`: a remote agent's call, counted.
Other spans (HTTP, DB, app code) are counted as
`ignored`, not dead letters. A GenAI span that cannot be used (bad ids or time, no identity)
is a dead letter of its own, with the span's JSON as raw; its siblings are unaffected.

- `otel-<traceId>-<spanId>` (lower-case hex) -> event_id: stable across re-exports
- `endTimeUnixNano` -> event_time: usage is known, and billed, when the call ends
- `endTimeUnixNano - startTimeUnixNano` -> latency_ms
- `gen_ai.operation.name` `execute_tool` -> kind `tool.call` (else `llm.call`); -> operation
- `gen_ai.usage.input_tokens`, else `gen_ai.usage.prompt_tokens` -> input_tokens
- `gen_ai.usage.output_tokens`, else `gen_ai.usage.completion_tokens` -> output_tokens
- `gen_ai.usage.cache_read.input_tokens` (current), `gen_ai.usage.cache_read_input_tokens`,
  `gen_ai.usage.cached_tokens` -> cached_tokens
- `gen_ai.response.model`, else `gen_ai.request.model` -> model
- `gen_ai.provider.name`, else `gen_ai.system` -> provider; `gen_ai.tool.name` -> tool_name
- `status.code` 2 or an `error.type` attribute -> status error; `error.type` -> error_type
- `traceId`, `spanId` -> trace_id, span_id; the nearest ancestor that is itself a metered call
  -> parent_span_id (agent and workflow spans are skipped: the call tree links calls)
- mapping `identity`: `gen_ai.agent.name`, `gen_ai.agent.id` (on the nearest agent span, else
  the span and its ancestors), `resource:service.name`
- mapping `team`: `meterguard.team`; `environment`: `meterguard.environment`,
  `deployment.environment.name`, `deployment.environment`; `cost_usd`: `gen_ai.usage.cost`

Attribute lookups by bare name inherit down the trace: a tool span without `gen_ai.agent.name`
is attributed to the agent span above it in the same export. When no span of the export names
it and its parents leave the export (the agent span ends, and is exported, after its calls),
the record is *held* with its fallback identity: streams/decoding/trace_attribution.py settles
it once the ancestor arrives, from the links every export leaves (`Normalised.links`).
The SDK's default `service.name` (`unknown_service[:<process>]`) names nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from meterguard.streams.decoding.formats.common import (
    Headers,
    Normalised,
    Record,
    Unusable,
    apply_mapping,
    as_raw,
    build,
    dead,
    put,
    require_identity,
)
from meterguard.streams.decoding.formats.mapping import OtlpMapping
from meterguard.streams.decoding.formats.otlp_values import (
    Attrs,
    attributes,
    dig_dict,
    first_set,
    hex_id,
    instant,
    nanos,
    nanos_or_none,
)
from meterguard.streams.decoding.trace_attribution import SpanLink

_MAX_ANCESTORS = 64  # a parent chain longer than any real trace (and a guard against cycles)
_AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent"})
_NO_SERVICE = "unknown_service"
_SET_IDENTITY = (
    "set gen_ai.agent.name (or gen_ai.agent.id) on the agent span (invoke_agent) above it, or "
    "service.name on the resource (OTEL_SERVICE_NAME), or map another attribute "
    "(MG_MAPPING_FILE otlp.identity)"
)
UNNAMED = "unnamed-span"  # a held span's identity until an ancestor names it (never counted)
SpanIndex = dict[tuple[Any, Any], tuple[Attrs, Any]]  # (traceId, spanId) -> (attrs, parent)


def normalise(
    doc: dict[str, Any], raw: bytes, mapping: OtlpMapping, headers: Headers
) -> Normalised:
    out = Normalised()
    spans: list[tuple[dict[str, Any], Attrs, Attrs]] = []  # (span, its attributes, resource)
    for resource_spans in _list(doc.get("resourceSpans"), "resourceSpans", out, raw):
        if not isinstance(resource_spans, dict):
            out.records.append(dead(as_raw(resource_spans), "invalid_record", "not an object"))
            continue
        try:
            resource = attributes(dig_dict(resource_spans, "resource").get("attributes"))
        except Unusable as exc:
            out.records.append(dead(as_raw(resource_spans), exc.reason, exc.error))
            continue
        for scope in _list(resource_spans.get("scopeSpans"), "scopeSpans", out, resource_spans):
            if not isinstance(scope, dict):
                out.records.append(dead(as_raw(scope), "invalid_record", "not an object"))
                continue
            for span in _list(scope.get("spans"), "spans", out, scope):
                if not isinstance(span, dict):
                    out.records.append(dead(as_raw(span), "invalid_record", "not an object"))
                    continue
                if (bad := _non_text_id(span)) is not None:  # ids key the span index below
                    out.records.append(dead(as_raw(span), "invalid_event", bad))
                    continue
                try:
                    spans.append((span, attributes(span.get("attributes")), resource))
                except Unusable as exc:
                    out.records.append(dead(as_raw(span), exc.reason, exc.error))
    by_id = {
        (s.get("traceId"), s.get("spanId")): (attrs, s.get("parentSpanId")) for s, attrs, _ in spans
    }
    inheritable = tuple(p for p in mapping.identity if ":" not in p)  # bare attribute names
    genai_traces = {s.get("traceId") for s, attrs, _ in spans if _genai(attrs)}
    calls = {
        (s.get("traceId"), s.get("spanId"))
        for s, attrs, _ in spans
        if _genai(attrs) and not _wrapper(s, attrs, mapping)
    }
    for span, attrs, resource in spans:
        if (span.get("traceId"), span.get("spanId")) not in calls:
            out.ignored += 1
        else:
            agent, leaves = _nearest_agent(span, by_id, inheritable)
            held = _held_at(span, leaves) if agent is None else None
            caller = _calling_span(span, by_id, calls)
            record = _span_record(
                span, attrs, resource, by_id, mapping, headers, agent, held, caller
            )
            out.records.append(record)
    out.links = _links(spans, genai_traces, inheritable)
    return out


def _non_text_id(span: dict[str, Any]) -> str | None:
    """What is wrong with a span whose traceId, spanId or parentSpanId is there but not text
    (hex or base64, read by `hex_id` later), else None."""
    for name in ("traceId", "spanId", "parentSpanId"):
        value = span.get(name)
        if value is not None and not isinstance(value, str):
            return f"{name}: expected hex digits, not {type(value).__name__}"
    return None


def _links(
    spans: list[tuple[dict[str, Any], Attrs, Attrs]],
    traces: set[Any],
    inheritable: tuple[str, ...],
) -> list[SpanLink]:
    """Every span of a trace with GenAI spans: its parent, and the agent it names if it is an
    agent span (what settles a held span: _nearest_agent's rule across exports)."""
    links: list[SpanLink] = []
    for span, attrs, _ in spans:
        if span.get("traceId") not in traces:
            continue
        try:
            trace_id = hex_id(span.get("traceId"), 16, "traceId")
            span_id = hex_id(span.get("spanId"), 8, "spanId")
            parent = span.get("parentSpanId") or None
            parent_id = hex_id(parent, 8, "parentSpanId") if parent else None
        except Unusable:
            continue  # its own record (if any) says why
        agent = first_set(attrs, *inheritable) if _names_agent(attrs, inheritable) else None
        links.append(SpanLink(trace_id, span_id, parent_id, str(agent) if agent else None))
    return links


def _nearest_agent(
    span: dict[str, Any], by_id: SpanIndex, inheritable: tuple[str, ...]
) -> tuple[Attrs | None, Any]:
    """The nearest agent span that names an agent (the span itself, else an ancestor in this
    export), or None and the first ancestor outside the export (None if the chain ends here).

    An agent span (`invoke_agent`, `create_agent`) is where the GenAI conventions name the
    agent; a model or tool span's own `gen_ai.agent.*` is only a fallback: instrumentations
    stamp defaults there (the OTel contrib openai-agents instrumentation puts
    `gen_ai.agent.name` "OpenAI Agent" and `gen_ai.agent.id` "agent" on every span, the real
    name on the agent span only)."""
    trace = span.get("traceId")
    own = by_id.get((trace, span.get("spanId")), ({}, None))[0]
    if _names_agent(own, inheritable):
        return own, None
    parent, seen = span.get("parentSpanId"), 0
    while parent and seen < _MAX_ANCESTORS:
        found = by_id.get((trace, parent))
        if found is None:
            return None, parent  # the chain leaves the export here
        above, parent = found
        if _names_agent(above, inheritable):
            return above, None
        seen += 1
    return None, None  # the whole chain is here: nothing exported later can name it


def _names_agent(attrs: Attrs, inheritable: tuple[str, ...]) -> bool:
    return (
        attrs.get("gen_ai.operation.name") in _AGENT_OPERATIONS
        and first_set(attrs, *inheritable) is not None
    )


def _held_at(span: dict[str, Any], leaves: Any) -> tuple[str, str] | None:
    """(trace_id, the first ancestor outside the export): an agent span exported later may
    name this span's agent (streams/decoding/trace_attribution.py)."""
    if not leaves:
        return None
    try:
        return hex_id(span.get("traceId"), 16, "traceId"), hex_id(leaves, 8, "parentSpanId")
    except Unusable:
        return None


def _genai(attrs: Attrs) -> bool:
    return any(key.startswith("gen_ai.") for key in attrs)


def _wrapper(span: dict[str, Any], attrs: Attrs, mapping: OtlpMapping) -> bool:
    """An ignored operation (agent, workflow, memory spans), unless a remote agent's call."""
    return _ignored(span, attrs, mapping) and not _remote_agent_call(span, attrs)


def _calling_span(span: dict[str, Any], by_id: SpanIndex, calls: set[Any]) -> Any:
    """The nearest ancestor that is itself a metered call: the event's `parent_span_id`, so
    the call tree (store/trace.lua: agent chains, root-caller cost) links calls to calls
    through the agent and workflow spans it never sees. None: no call above it up to the
    trace's root in this export; the raw parent when the chain leaves the export first."""
    trace, parent, seen = span.get("traceId"), span.get("parentSpanId") or None, 0
    while parent and seen < _MAX_ANCESTORS:
        if (trace, parent) in calls:
            return parent
        found = by_id.get((trace, parent))
        if found is None:
            return parent  # outside this export: as the producer wrote it
        parent = found[1] or None
        seen += 1
    return None


def _ignored(span: dict[str, Any], attrs: Attrs, mapping: OtlpMapping) -> bool:
    return attrs.get("gen_ai.operation.name") in mapping.ignore_operations


def _remote_agent_call(span: dict[str, Any], attrs: Attrs) -> bool:
    """An invoke_agent CLIENT span (kind 3) with usage: the call to a remote agent, the only
    record of what it spent (GenAI agent spans: CLIENT for remote agents, INTERNAL in-process)."""
    return (
        attrs.get("gen_ai.operation.name") == "invoke_agent"
        and span.get("kind") in (3, "3", "SPAN_KIND_CLIENT")
        and any(key.startswith("gen_ai.usage.") for key in attrs)
    )


def _span_record(
    span: dict[str, Any],
    attrs: Attrs,
    resource: Attrs,
    by_id: SpanIndex,
    mapping: OtlpMapping,
    headers: Headers,
    agent: Attrs | None,
    held: tuple[str, str] | None,
    caller: Any,
) -> Record:
    def make(placeholder: str | None = None) -> dict[str, Any]:
        trace_id = hex_id(span.get("traceId"), 16, "traceId")
        span_id = hex_id(span.get("spanId"), 8, "spanId")
        parent_id = hex_id(caller, 8, "parentSpanId") if caller else None
        end = nanos(span.get("endTimeUnixNano"), "endTimeUnixNano")
        start = nanos_or_none(span.get("startTimeUnixNano"))
        operation = attrs.get("gen_ai.operation.name")
        status = span.get("status")
        code = status.get("code") if isinstance(status, dict) else None
        failed = code in (2, "2", "STATUS_CODE_ERROR") or "error.type" in attrs
        doc = put(
            {},
            event_id=f"otel-{trace_id}-{span_id}",
            event_time=instant(end),
            kind="tool.call" if operation == "execute_tool" else None,
            input_tokens=first_set(attrs, *_keys("input_tokens", "prompt_tokens")),
            output_tokens=first_set(attrs, *_keys("output_tokens", "completion_tokens")),
            cached_tokens=first_set(
                attrs, *_keys("cache_read.input_tokens", "cache_read_input_tokens", "cached_tokens")
            ),
            model=first_set(attrs, "gen_ai.response.model", "gen_ai.request.model"),
            provider=first_set(attrs, "gen_ai.provider.name", "gen_ai.system"),
            operation=operation,
            tool_name=attrs.get("gen_ai.tool.name"),
            status="error" if failed else None,
            error_type=attrs.get("error.type"),
            latency_ms=(end - start) / 1e6 if start is not None and end >= start else None,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_id,
        )
        lookup = _inherited(span, attrs, resource, by_id, agent, mapping)
        apply_mapping(doc, mapping, lookup, headers)
        if placeholder is not None and not doc.get("identity"):
            doc["identity"] = placeholder
        return require_identity(doc, mapping.identity, hint=_SET_IDENTITY)

    raw = as_raw(span)
    record = build(raw, make)
    if held is None:
        return record
    if record.doc is not None:
        return replace(record, held=held)
    if record.reason != "missing_identity":
        return record
    # Nothing names it yet: held under a placeholder, a dead letter if no ancestor names it.
    placeholder = build(raw, lambda: make(UNNAMED))
    if placeholder.doc is None:
        return record
    return replace(placeholder, held=held, unnamed=record.error)


def _inherited(
    span: dict[str, Any],
    attrs: Attrs,
    resource: Attrs,
    by_id: SpanIndex,
    agent: Attrs | None,
    mapping: OtlpMapping,
) -> Callable[[str], Any]:
    """Bare names: the span, then its ancestors in the export, then the resource; but the
    identity's names are read on the nearest agent span when there is one, and the cost's on
    the span or the resource, never an ancestor span (an agent span's usage sums its
    children's: inherited, it would double)."""

    def lookup(path: str) -> Any:
        if agent is not None and path in mapping.identity:
            return agent.get(path)
        if path in mapping.cost_usd:
            return attrs[path] if attrs.get(path) is not None else resource.get(path)
        if path == "resource:service.name":
            name = resource.get("service.name")
            # The SDK's default when nobody set one (OTel resource semconv): names no workload.
            return None if isinstance(name, str) and name.startswith(_NO_SERVICE) else name
        if path.startswith("resource:"):
            return resource.get(path[len("resource:") :])
        if path.startswith("span:"):
            return attrs.get(path[len("span:") :])
        if attrs.get(path) is not None:
            return attrs[path]
        trace, parent, seen = span.get("traceId"), span.get("parentSpanId"), 0
        while parent and seen < _MAX_ANCESTORS:
            found = by_id.get((trace, parent))
            if found is None:
                break
            above, parent = found
            if above.get(path) is not None:
                return above[path]
            seen += 1
        return resource.get(path)

    return lookup


def _keys(*names: str) -> tuple[str, ...]:
    return tuple(f"gen_ai.usage.{name}" for name in names)


def _list(value: Any, name: str, out: Normalised, parent: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        out.records.append(dead(as_raw(parent), "invalid_record", f"{name}: expected an array"))
        return []
    return value
