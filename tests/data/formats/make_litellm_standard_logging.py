"""Regenerate litellm_standard_logging.json and its native twin with real LiteLLM.

    .venv/bin/python tests/data/formats/make_litellm_standard_logging.py [OUT_DIR]

Runs `litellm.acompletion(model="gpt-4o-mini", mock_response={...})`: no network (the mock
stands in for OpenAI's answer, and `LITELLM_LOCAL_MODEL_COST_MAP=True` reads the bundled cost
map), but litellm's whole logging path runs: its `Logging` object, cost calculation and the
`StandardLoggingPayload` it hands every callback. A `CustomLogger` captures
`kwargs["standard_logging_object"]`, and the value is that payload serialised with litellm's own
`safe_dumps`, exactly the body its `generic_api` logger POSTs with `log_format="single"`
(litellm/integrations/generic_api/generic_api_callback.py, `_send_batch`): what a gateway
relaying that logger puts on Kafka.

The request carries proxy-style metadata, as the LiteLLM proxy adds it for a virtual key
(litellm/proxy/litellm_pre_call_utils.py: `user_api_key` and `user_api_key_hash` both the
key's sha256, the key's alias, team and user; `spend_logs_metadata`; `tags`).

Frozen fields: ids are passed in (`litellm_call_id`, `litellm_trace_id`, the mock response's
`id` and `created`). The clock cannot be: `startTime`, `endTime`, `completionStartTime` and
`response_time` are the only fields this script edits after the run (set to fixed instants,
`response_time` by litellm's own `StandardLoggingPayloadSetup.get_response_time`). Everything
else is litellm's output as it came. The native twin is written from this script's own inputs
(the cost is the one litellm billed), never from our decoder.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import: no cost-map fetch

import litellm
import orjson
from litellm.integrations.custom_logger import CustomLogger
from litellm.litellm_core_utils.litellm_logging import StandardLoggingPayloadSetup
from litellm.litellm_core_utils.safe_json_dumps import safe_dumps

HERE = Path(__file__).resolve().parent
NAME = "litellm_standard_logging"
MODEL = "gpt-4o-mini"
KEY_HASH = hashlib.sha256(b"sk-meterguard-ticket-router").hexdigest()  # proxy's hash_token()
METADATA = {
    "user_api_key": KEY_HASH,
    "user_api_key_hash": KEY_HASH,
    "user_api_key_alias": "agent-ticket-router",
    "user_api_key_team_id": "7e2b6c1a-team",
    "user_api_key_team_alias": "support-automation",
    "user_api_key_user_id": "default_user_id",
    "spend_logs_metadata": {"environment": "prod"},
    "tags": ["ticket-routing"],
}
CALL_ID = "2f7c9a41-8d3e-4b6a-9c15-0e7d3a5b8f21"
TRACE_ID = "f1b7c9e0-3a4d-4e8f-b2c6-9d0e1f2a3b4c"
RESPONSE_ID = "chatcmpl-BeTt3Xc8Lp1Qw5Zr9Nk2Vd6Hm4Ya"
PROMPT, COMPLETION, CACHED = 1540, 185, 1024
START_MS, END_MS = 1_748_960_532_402, 1_748_960_534_957  # 2025-06-03T14:22:12.402Z, 14.957Z
MOCK_RESPONSE = {  # OpenAI's answer, as the provider would send it
    "id": RESPONSE_ID,
    "object": "chat.completion",
    "created": 1748960534,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "queue: billing"},
        }
    ],
    "usage": {
        "prompt_tokens": PROMPT,
        "completion_tokens": COMPLETION,
        "total_tokens": PROMPT + COMPLETION,
        "prompt_tokens_details": {"cached_tokens": CACHED},
    },
}


class Capture(CustomLogger):
    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[dict[str, Any]] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.payloads.append(kwargs["standard_logging_object"])


async def standard_logging_payload() -> dict[str, Any]:
    capture = Capture()
    litellm.callbacks = [capture]
    await litellm.acompletion(
        model=MODEL,
        messages=[{"role": "user", "content": "Route ticket T-88412 to a queue."}],
        mock_response=MOCK_RESPONSE,
        metadata=METADATA,
        litellm_call_id=CALL_ID,
        litellm_trace_id=TRACE_ID,
    )
    for _ in range(200):  # success callbacks run as tasks after the call returns
        if capture.payloads:
            break
        await asyncio.sleep(0.01)
    (payload,) = capture.payloads
    return payload


def main(out: Path = HERE) -> None:
    payload = dict(asyncio.run(standard_logging_payload()))
    # The clock, frozen (the only post-edit): a non-streamed call's first token is its end.
    start, end = START_MS / 1000, END_MS / 1000
    payload.update(
        startTime=start,
        endTime=end,
        completionStartTime=end,
        response_time=StandardLoggingPayloadSetup.get_response_time(
            start_time_float=start,
            end_time_float=end,
            completion_start_time_float=end,
            stream=False,
        ),
    )
    (out / f"{NAME}.json").write_text(safe_dumps(payload))
    twin = {
        "event_id": RESPONSE_ID,
        "identity": METADATA["user_api_key_alias"],
        "event_time": "2025-06-03T14:22:14.957Z",
        "credential_id": KEY_HASH,
        "team": METADATA["user_api_key_team_alias"],
        "environment": METADATA["spend_logs_metadata"]["environment"],
        "model": MODEL,
        "provider": "openai",
        "operation": "acompletion",
        "input_tokens": PROMPT,
        "output_tokens": COMPLETION,
        "cached_tokens": CACHED,
        "cost_usd": payload["response_cost"],  # what litellm billed, from its cost map
        "latency_ms": float(END_MS - START_MS),
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
