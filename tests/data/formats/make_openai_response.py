"""Regenerate openai_response.json and its native twin with the `openai` package's own types.

    .venv/bin/python tests/data/formats/make_openai_response.py [OUT_DIR]

The value is a Responses API `openai.types.responses.Response` (a reasoning model's answer: a
reasoning item and a message), built from the SDK's own pydantic types and serialised with the
SDK's `.to_json()`: API field names, the fields the response carries (unset ones left out),
indented, as `openai` prints a response. `Response.created_at` is typed `float`, so the SDK
writes `1748960552.0`. The caller is named by the request's `metadata`, which the API echoes
back (no Kafka headers). Id and time are fixed. The native twin is written from this script's
own inputs, never from our decoder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from openai.types.responses import (
    Response,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails
from openai.types.shared import Reasoning

HERE = Path(__file__).resolve().parent
NAME = "openai_response"
ID = "resp_6841f3a2c5d88190a1b2c3d4e5f60718"
CREATED_AT = 1748960552  # 2025-06-03T14:22:32Z
MODEL = "o4-mini-2025-04-16"
METADATA = {"identity": "agent-research", "team": "labs", "environment": "test"}
INPUT, CACHED, OUTPUT, REASONING = 4410, 0, 2290, 1856


def response() -> Response:
    return Response(
        id=ID,
        object="response",
        created_at=CREATED_AT,
        status="completed",
        error=None,
        incomplete_details=None,
        instructions=None,
        model=MODEL,
        output=[
            ResponseReasoningItem(
                id="rs_6841f3a2d0e48190b1c2d3e4f5a6b7c8", type="reasoning", summary=[]
            ),
            ResponseOutputMessage(
                id="msg_6841f3b9a1f88190c2d3e4f5a6b7c8d9",
                type="message",
                role="assistant",
                status="completed",
                content=[
                    ResponseOutputText(type="output_text", text="Findings: ...", annotations=[])
                ],
            ),
        ],
        parallel_tool_calls=True,
        previous_response_id=None,
        reasoning=Reasoning(effort="medium", summary=None),
        store=True,
        temperature=1.0,
        tool_choice="auto",
        tools=[],
        top_p=1.0,
        truncation="disabled",
        user=None,
        metadata=METADATA,
        usage=ResponseUsage(
            input_tokens=INPUT,
            input_tokens_details=InputTokensDetails(cached_tokens=CACHED, cache_write_tokens=0),
            output_tokens=OUTPUT,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=REASONING),
            total_tokens=INPUT + OUTPUT,
        ),
    )


def main(out: Path = HERE) -> None:
    (out / f"{NAME}.json").write_text(response().to_json())
    twin = {
        "event_id": ID,
        "identity": METADATA["identity"],
        "event_time": "2025-06-03T14:22:32Z",
        "team": METADATA["team"],
        "environment": METADATA["environment"],
        "model": MODEL,
        "operation": "chat",
        "input_tokens": INPUT,
        "output_tokens": OUTPUT,
        "cached_tokens": CACHED,
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
