"""LiteLLM as it really logs (issue 11). The payloads in tests/data/litellm/ were made by the
real `litellm` 1.110.2 (docs/research/producers/gen_litellm.py: `litellm.completion` /
`acompletion` with `mock_response`, a `CustomLogger` capturing `standard_logging_object`, and
the proxy's own `get_logging_payload` for the spend-log row).

litellm itself is in the dev extra (its proxy extra, some 18 more packages, is not: the proxy's
`get_logging_payload` made the recorded row). The fields we rely on, in its source:
- `SpendLogsPayload.metadata: str  # json str` and `request_tags: str  # json str`
  (litellm/proxy/_types.py), written with `safe_dumps` by `get_logging_payload`
  (litellm/proxy/spend_tracking/spend_tracking_utils.py);
- `StandardLoggingPayload.error_information` at the top level (litellm/types/utils.py), set
  with empty strings even on success;
- the `generic_api` logger's default `json_array` body: a JSON array of standard logging
  payloads (litellm/integrations/generic_api/generic_api_callback.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from meterguard.streams.decoding.decode import decode_message
from meterguard.streams.decoding.formats import LITELLM

DATA = Path(__file__).resolve().parents[1] / "data" / "litellm"
INGEST = datetime(2026, 12, 31, tzinfo=UTC)  # after the payloads' own clock
KEY_HASH = "ee76e1b63af0633323e0bf40a033e4cc37e90840ed1f004665f8cc3e73c8b54f"


def test_a_spend_log_row_reads_its_json_string_metadata() -> None:
    value = (DATA / "spend_logs_row.json").read_bytes()
    row = orjson.loads(value)
    assert isinstance(row["metadata"], str) and isinstance(row["request_tags"], str)
    result = decode_message(value, [], INGEST)
    assert result.format == LITELLM and result.dead_letters == []
    (event,) = result.events
    # The key's alias, from inside the metadata string; not the 64-hex hash.
    assert event.identity == "acme-prod-key"
    assert event.team == "Acme"  # metadata.user_api_key_team_alias
    assert event.credential_id == KEY_HASH
    assert (event.event_id, event.input_tokens, event.output_tokens) == (row["request_id"], 10, 20)
    assert event.cost_nano_usd == round(row["spend"] * 1e9)
    assert event.status == "ok" and event.error_type is None


def test_a_failure_keeps_its_error_class_from_the_top_level_error_information() -> None:
    value = (DATA / "standard_logging_failure.json").read_bytes()
    payload = orjson.loads(value)
    assert "error_class" not in (payload["metadata"].get("error_information") or {})
    (event,) = decode_message(value, [], INGEST).events
    assert event.status == "error"
    assert event.error_type == payload["error_information"]["error_class"] == "RateLimitError"
    assert event.identity == "acme-prod-key"


def test_the_generic_api_loggers_json_array_is_one_event_per_payload() -> None:
    value = (DATA / "generic_api_batch.json").read_bytes()
    payloads = orjson.loads(value)
    result = decode_message(value, [("content-type", b"application/json")], INGEST)
    assert result.format == LITELLM and result.dead_letters == []
    assert [e.event_id for e in result.events] == [p["id"] for p in payloads]
    assert [e.status for e in result.events] == ["ok", "error"]
    assert [e.error_type for e in result.events] == [None, "InternalServerError"]
    assert {e.identity for e in result.events} == {"acme-prod-key"}


def test_a_bad_element_of_the_array_is_its_own_dead_letter() -> None:
    payloads = orjson.loads((DATA / "generic_api_batch.json").read_bytes())
    result = decode_message(orjson.dumps([payloads[0], 42]), [], INGEST)
    assert len(result.events) == 1
    (letter,) = result.dead_letters
    assert letter.reason == "invalid_record" and letter.raw == "42"


def test_an_mcp_tool_call_is_a_tool_call_in_both_shapes() -> None:
    # The MCP fields as litellm types them: StandardLoggingMCPToolCall under the standard
    # payload's metadata (litellm/types/utils.py), and the row's copy of its namespaced name
    # (get_logging_payload, litellm/proxy/spend_tracking/spend_tracking_utils.py).
    from litellm.types.utils import StandardLoggingMCPToolCall

    payload = orjson.loads((DATA / "standard_logging_failure.json").read_bytes())
    call = StandardLoggingMCPToolCall(
        name="search", namespaced_tool_name="github/search", mcp_server_name="github"
    )
    payload = {**payload, "call_type": "call_mcp_tool", "status": "success"}
    payload["metadata"] = {**payload["metadata"], "mcp_tool_call_metadata": call}
    (event,) = decode_message(orjson.dumps(payload), [], INGEST).events
    assert (event.kind, event.tool_name, event.operation) == (
        "tool.call",
        "github/search",
        "call_mcp_tool",
    )
    row = orjson.loads((DATA / "spend_logs_row.json").read_bytes())
    row["mcp_namespaced_tool_name"] = "github/search"
    (event,) = decode_message(orjson.dumps(row), [], INGEST).events
    assert (event.kind, event.tool_name) == ("tool.call", "github/search")
