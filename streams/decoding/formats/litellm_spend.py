"""LiteLLM spend-log rows (`LiteLLM_SpendLogs`) and standard logging payloads -> native documents.

Row field (standard logging payload field, where it differs) -> native field:

- `request_id` (`id`) -> event_id
- `endTime`, else `startTime` (epoch seconds) -> event_time; naive text is read as UTC
- mapping `identity`: `metadata.user_api_key_alias`, `api_key`, `metadata.user_api_key_hash`
- `api_key` (`metadata.user_api_key_hash`), the hashed virtual key -> credential_id
- mapping `team`: `metadata.user_api_key_team_alias`, `team_id`, `metadata.user_api_key_team_id`
- mapping `environment`: `metadata.spend_logs_metadata.environment`
- mapping `cost_usd`: `spend` (`response_cost`)
- `model`, `custom_llm_provider`, `call_type` -> model, provider, operation
- `prompt_tokens`, `completion_tokens` -> input_tokens, output_tokens
- `metadata.additional_usage_values.prompt_tokens_details.cached_tokens`, or
  `metadata.additional_usage_values.cache_read_input_tokens`
  (`metadata.usage_object.prompt_tokens_details.cached_tokens`) -> cached_tokens
- `status` `failure` -> status error; `error_information.error_class` (standard logging
  payload), else `metadata.error_information.error_class` (spend-log row) -> error_type
- a row's `metadata` and `request_tags` are JSON strings (`SpendLogsPayload`): read as objects
- a JSON array of payloads (the `generic_api` logger's `json_array` body): one record each
- `request_duration_ms`, else `endTime - startTime` -> latency_ms
- `mcp_namespaced_tool_name` (`metadata.mcp_tool_call_metadata.namespaced_tool_name`, else
  `.name`: litellm/types/utils.py StandardLoggingMCPToolCall; the row copies the namespaced
  name, proxy/spend_tracking/spend_tracking_utils.py), or `call_type` `call_mcp_tool` ->
  kind `tool.call`, tool_name
- `cache_key` (LiteLLM's hash of the request when caching is on) -> request_fingerprint

`end_user` and `user` are not mapped by default: point `identity` at them if your
non-human identities are end users rather than virtual keys.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson

from meterguard.streams.decoding.formats.common import (
    Headers,
    Normalised,
    Record,
    apply_mapping,
    as_raw,
    build,
    dead,
    dig,
    pick,
    put,
    require_identity,
    utc_if_naive,
)
from meterguard.streams.decoding.formats.mapping import LiteLLMMapping
from meterguard.timeutil import parse_event_time

_MCP_TOOL = (
    "mcp_namespaced_tool_name",
    "metadata.mcp_tool_call_metadata.namespaced_tool_name",
    "metadata.mcp_tool_call_metadata.name",
)
_MCP_CALL_TYPES = ("call_mcp_tool",)  # litellm/types/utils.py CallTypes.call_mcp_tool
_CACHED = (
    "metadata.additional_usage_values.prompt_tokens_details.cached_tokens",
    "metadata.additional_usage_values.cache_read_input_tokens",
    "metadata.usage_object.prompt_tokens_details.cached_tokens",
)


_ERROR_CLASS = ("error_information.error_class", "metadata.error_information.error_class")


def looks_like(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and "startTime" in obj
        and ("request_id" in obj or "response_cost" in obj)
    )


def unpacked(obj: dict[str, Any]) -> dict[str, Any]:
    """The row with `metadata` and `request_tags` as objects: a spend-log row stores them as
    JSON *strings* (`SpendLogsPayload.metadata: str  # json str`, written by
    `get_logging_payload` with `safe_dumps`); the standard logging payload as objects. A
    string that is not JSON is left as it is (and maps to nothing)."""
    out = obj
    for key in ("metadata", "request_tags"):
        value = obj.get(key)
        if isinstance(value, str) and value[:1] in ("{", "["):
            with contextlib.suppress(orjson.JSONDecodeError):
                out = {**out, key: orjson.loads(value)}
    return out


def translate(obj: dict[str, Any], mapping: LiteLLMMapping, headers: Headers) -> dict[str, Any]:
    obj = unpacked(obj)
    start, end = utc_if_naive(obj.get("startTime")), utc_if_naive(obj.get("endTime"))
    tool = pick(obj, *_MCP_TOOL)
    is_tool = tool is not None or obj.get("call_type") in _MCP_CALL_TYPES
    failed = "failure" in (obj.get("status"), dig(obj, "metadata.status"))
    doc = put(
        {},
        event_id=pick(obj, "request_id", "id"),
        event_time=end if end is not None else start,
        credential_id=pick(obj, "api_key", "metadata.user_api_key_hash"),
        model=obj.get("model"),
        provider=obj.get("custom_llm_provider"),
        operation=obj.get("call_type"),
        input_tokens=obj.get("prompt_tokens"),
        output_tokens=obj.get("completion_tokens"),
        cached_tokens=pick(obj, *_CACHED),
        status="error" if failed else None,
        # Top level in the standard logging payload (and present, empty, on success), under
        # metadata in a spend-log row.
        error_type=(pick(obj, *_ERROR_CLASS) or None) if failed else None,
        latency_ms=pick(obj, "request_duration_ms") or _elapsed_ms(start, end),
        kind="tool.call" if is_tool else None,
        tool_name=tool,
        request_fingerprint=_fingerprint(obj.get("cache_key")),
    )
    return apply_mapping(doc, mapping, lambda path: dig(obj, path), headers)


def normalise(obj: Any, raw: bytes, mapping: LiteLLMMapping, headers: Headers) -> Normalised:
    """One row or payload, or a JSON array of them: the `generic_api` logger's default
    `json_array` body (`integrations/generic_api/generic_api_callback.py`), one record each."""
    if isinstance(obj, list):
        out = Normalised()
        for item in obj:
            if not isinstance(item, dict):
                out.records.append(dead(as_raw(item), "invalid_record", "litellm: not an object"))
            else:
                out.records.append(_record(item, as_raw(item), mapping, headers))
        return out
    return Normalised([_record(obj, raw, mapping, headers)])


def _record(obj: dict[str, Any], raw: bytes, mapping: LiteLLMMapping, headers: Headers) -> Record:
    return build(raw, lambda: require_identity(translate(obj, mapping, headers), mapping.identity))


def _fingerprint(cache_key: Any) -> Any:
    # LiteLLM writes the placeholder "Cache OFF" when caching is disabled: not a fingerprint.
    return None if cache_key == "Cache OFF" else cache_key


def _elapsed_ms(start: Any, end: Any) -> float | None:
    """Latency is evidence, not a required field: unreadable times just leave it out (the
    event time itself is still validated like every other)."""
    if start is None or end is None:
        return None
    try:
        elapsed = (parse_event_time(end) - parse_event_time(start)).total_seconds() * 1000
    except ValueError:
        return None
    return elapsed if elapsed >= 0 else None
