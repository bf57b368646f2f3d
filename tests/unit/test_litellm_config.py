"""deploy/litellm/config.yaml: LiteLLM's generic_api logger pointed at a worker's ingest."""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml

from meterguard.streams.settings import Settings
from meterguard.streams.web.ingest import plan
from tests.unit.test_litellm_real_payloads import DATA, INGEST

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "litellm" / "config.yaml"


def test_the_config_sends_every_call_to_the_ingest_route() -> None:
    doc = yaml.safe_load(CONFIG.read_text())
    (name,) = doc["litellm_settings"]["callbacks"]
    callback = doc["callback_settings"][name]
    assert callback["callback_type"] == "generic_api"
    assert callback["endpoint"] == f"http://127.0.0.1:{Settings().web_port}/api/events"
    assert "headers" not in callback  # the token comes from GENERIC_LOGGER_HEADERS
    assert 'GENERIC_LOGGER_HEADERS="Authorization=Bearer $MG_API_TOKEN"' in CONFIG.read_text()
    assert callback["log_format"] in ("json_array", "ndjson")


def test_both_log_formats_give_one_event_per_payload() -> None:
    """json_array (the default) and ndjson, both sent as application/json by the logger."""
    payloads = orjson.loads((DATA / "generic_api_batch.json").read_bytes())
    as_array = orjson.dumps(payloads)
    as_ndjson = b"\n".join(orjson.dumps(p) for p in payloads)
    headers = {"content-type": "application/json"}
    for body in (as_array, as_ndjson):
        work = plan(body, headers, INGEST)
        assert (work.accepted, work.dead_lettered) == (len(payloads), 0)
