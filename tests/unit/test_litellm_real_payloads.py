"""LiteLLM as it really logs (issue 11). The payloads in tests/data/litellm/ were made by the
real `litellm` 1.110.2 (docs/research/producers/gen_litellm.py: `litellm.completion` /
`acompletion` with `mock_response`, a `CustomLogger` capturing `standard_logging_object`, and
the proxy's own `get_logging_payload` for the spend-log row).

litellm is not in the test extra: its proxy code needs some 18 more packages
(`litellm[proxy]` does not resolve for 1.110.2), far heavier than the rest of the suite. The
fields we rely on are pinned to its source instead:
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
