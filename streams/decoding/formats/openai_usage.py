"""OpenAI-style responses (chat completions, responses, text completions) -> native documents.

- header `mg-event-id`, else `id` -> event_id (an embeddings response has no id: without the
  header it is a dead letter `missing_event_id` that says so)
- header `mg-event-time`, else `created` (chat, epoch seconds), else `created_at` (responses
  API) -> event_time (none: `missing_event_time`)
- `model` (the resolved model the provider answered with) -> model
- `object`: `chat.completion` and `response` -> operation `chat`; `text_completion` -> same;
  `list` with `data` (`CreateEmbeddingResponse`) -> `embeddings`
- `usage.prompt_tokens`, else `usage.input_tokens` -> input_tokens
- `usage.completion_tokens`, else `usage.output_tokens` -> output_tokens
- `usage.prompt_tokens_details.cached_tokens`, else `usage.input_tokens_details.cached_tokens`
  -> cached_tokens
- an `error` object or `status: failed` -> status error; `error.code` (else `.type`) -> error_type
- identity, team, environment, source, cost_usd: the `openai:` mapping (a response names no
  caller: by default the gateway says who in header `mg-identity`)

The same translation serves an OpenAI response carried as CloudEvents data.
"""

from __future__ import annotations

from typing import Any

from meterguard.streams.decoding.formats.common import (
    Headers,
    Normalised,
    Unusable,
    apply_mapping,
    build,
    dig,
    pick,
    put,
    require_identity,
)
from meterguard.streams.decoding.formats.mapping import OpenAIMapping

_OPERATIONS = {"chat.completion": "chat", "response": "chat", "text_completion": "text_completion"}


def looks_like(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("usage"), dict) and "model" in obj


def translate(obj: dict[str, Any], mapping: OpenAIMapping, headers: Headers) -> dict[str, Any]:
    """The native document, identity not yet required (a CloudEvent may still supply it)."""
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        raise Unusable("invalid_event", "usage: expected an object")
    created = obj.get("created")
    kind = obj.get("object")
    embeddings = kind == "list" and isinstance(obj.get("data"), list)
    event_id = headers.get("mg-event-id") or obj.get("id")
    if not event_id:
        what = "an embeddings response" if embeddings else "the response"
        raise Unusable(
            "missing_event_id",
            f"{what} carries no id (OpenAI's CreateEmbeddingResponse has none): the gateway "
            "must send the request's id in Kafka header mg-event-id",
        )
    event_time = headers.get("mg-event-time") or (
        created if created is not None else obj.get("created_at")
    )
    if event_time is None:
        raise Unusable(
            "missing_event_time",
            "the response carries no created time: the gateway must send header mg-event-time "
            "(RFC 3339 or epoch seconds)",
        )
    error = obj.get("error")
    failed = isinstance(error, dict) or obj.get("status") == "failed"
    doc = put(
        {},
        event_id=event_id,
        event_time=event_time,
        model=obj.get("model"),
        operation="embeddings"
        if embeddings
        else _OPERATIONS.get(kind)
        if isinstance(kind, str)
        else None,
        input_tokens=pick(usage, "prompt_tokens", "input_tokens"),
        output_tokens=pick(usage, "completion_tokens", "output_tokens"),
        cached_tokens=pick(
            usage, "prompt_tokens_details.cached_tokens", "input_tokens_details.cached_tokens"
        ),
        status="error" if failed else None,
        error_type=pick(error, "code", "type") if isinstance(error, dict) else None,
    )
    return apply_mapping(doc, mapping, lambda path: dig(obj, path), headers)


def normalise(
    obj: dict[str, Any], raw: bytes, mapping: OpenAIMapping, headers: Headers
) -> Normalised:
    record = build(
        raw, lambda: require_identity(translate(obj, mapping, headers), mapping.identity)
    )
    return Normalised([record])
