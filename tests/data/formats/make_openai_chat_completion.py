"""Regenerate openai_chat_completion.json + .headers.json and its native twin with the
`openai` package's own types.

    .venv/bin/python tests/data/formats/make_openai_chat_completion.py [OUT_DIR]

The value is a `openai.types.chat.ChatCompletion`, built from the SDK's own pydantic types
(`ChatCompletionMessage`, `Choice`, `CompletionUsage` and its token details) and serialised
with the SDK's `.model_dump_json()`, the way an app or gateway logs the response object the
client returned: every field of the type, unset ones as null. A chat completion names no
caller, so the gateway that publishes it says who in Kafka headers (`mg-identity`, `mg-team`,
`mg-environment`). Id and time are fixed. The native twin is written from this script's own
inputs, never from our decoder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)

HERE = Path(__file__).resolve().parent
NAME = "openai_chat_completion"
HEADERS = {
    "mg-identity": "svc-support-summariser",
    "mg-team": "support",
    "mg-environment": "prod",
}
ID = "chatcmpl-BeTs9Qv2Np5Lx8Kz0Wc3Hd7Ym1Ra"
CREATED = 1748960547  # 2025-06-03T14:22:27Z
MODEL = "gpt-4.1-2025-04-14"
PROMPT, COMPLETION, CACHED = 3021, 389, 2816


def completion() -> ChatCompletion:
    return ChatCompletion(
        id=ID,
        object="chat.completion",
        created=CREATED,
        model=MODEL,
        system_fingerprint="fp_b3f1157249",
        service_tier="default",
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(
                    role="assistant",
                    content="Summary: the customer ...",
                    refusal=None,
                    annotations=[],
                ),
                logprobs=None,
                finish_reason="stop",
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=PROMPT,
            completion_tokens=COMPLETION,
            total_tokens=PROMPT + COMPLETION,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=CACHED, audio_tokens=0),
            completion_tokens_details=CompletionTokensDetails(
                reasoning_tokens=0,
                audio_tokens=0,
                accepted_prediction_tokens=0,
                rejected_prediction_tokens=0,
            ),
        ),
    )


def main(out: Path = HERE) -> None:
    (out / f"{NAME}.json").write_text(completion().model_dump_json())
    (out / f"{NAME}.headers.json").write_text(json.dumps(HEADERS, indent=2) + "\n")
    twin = {
        "event_id": ID,
        "identity": HEADERS["mg-identity"],
        "event_time": CREATED,
        "team": HEADERS["mg-team"],
        "environment": HEADERS["mg-environment"],
        "model": MODEL,
        "operation": "chat",
        "input_tokens": PROMPT,
        "output_tokens": COMPLETION,
        "cached_tokens": CACHED,
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
