"""Regenerate cloudevents_batch.json and its native twin with the real `cloudevents` SDK 2.x
(and, for the third event's data, the `openai` package's own ChatCompletion type).

    .venv/bin/python tests/data/formats/make_cloudevents_batch.py [OUT_DIR]

The SDK has no batch API: `cloudevents` 2.2.0 has no `write_batch` or batch binding anywhere
(`grep -ri batch .venv/lib/python3.11/site-packages/cloudevents` finds nothing); batch support
is still an open request upstream (cloudevents/sdk-python issue #130, PR #299, which scopes
it to JSON + HTTP). The Kafka protocol binding does not support batch mode either
(cloudevents/spec `cloudevents/bindings/kafka-protocol-binding.md` §1.3), so it defines no
header for one, and this message has none: the content says what it is. The value is therefore
built by the JSON Batch Format's own rule (`json-format.md` §4: a JSON array of events in the
JSON format) from the SDK's own encoding of each event, `JSONFormat().write(event)`, joined
with ", " so the bytes equal `json.dumps([...])` of the three events, as the SDK writes JSON.

The third event's data is an OpenAI chat completion, as a gateway forwards it: a
`openai.types.chat.ChatCompletion` built from its own types and turned into the event data
with the SDK's `.to_dict()`. Ids and times are fixed. The native twin is written from this
script's own inputs, never from our decoder.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from openai.types.chat import ChatCompletion, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)

HERE = Path(__file__).resolve().parent
NAME = "cloudevents_batch"
SOURCE = "/gateways/us-east-2"
EDT = timezone(timedelta(hours=-4))


def completion() -> ChatCompletion:
    return ChatCompletion(
        id="chatcmpl-BeTr2Jk8Xw4Qz1Lp7Vn3Ys6Dm0Ha",
        object="chat.completion",
        created=1748960541,
        model="gpt-4o-2024-08-06",
        system_fingerprint="fp_07871e2ad8",
        service_tier="default",
        choices=[
            Choice(
                index=0,
                message=ChatCompletionMessage(
                    role="assistant", content="Done.", refusal=None, annotations=[]
                ),
                logprobs=None,
                finish_reason="stop",
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=2210,
            completion_tokens=58,
            total_tokens=2268,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=1920, audio_tokens=0),
            completion_tokens_details=CompletionTokensDetails(
                reasoning_tokens=0,
                audio_tokens=0,
                accepted_prediction_tokens=0,
                rejected_prediction_tokens=0,
            ),
        ),
    )


# (attributes, data, native twin) per event, in batch order.
EVENTS: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        {
            "id": "evt-7f3a-0001",
            "subject": "svc-crawler",
            "type": "ai.usage",
            "time": datetime(2025, 6, 3, 14, 22, 10, 4000, tzinfo=UTC),
        },
        {
            "team": "search",
            "environment": "prod",
            "model": "text-embedding-3-small",
            "operation": "embeddings",
            "input_tokens": 8191,
            "cost_usd": 0.00016382,
        },
        {"identity": "svc-crawler", "event_time": "2025-06-03T14:22:10.004Z"},
    ),
    (
        {  # data.identity wins over the subject (a shared key's name)
            "id": "evt-7f3a-0002",
            "subject": "shared-pool-key",
            "type": "ai.usage",
            "time": datetime(2025, 6, 3, 10, 22, 11, 250000, tzinfo=EDT),  # 14:22:11.250Z
        },
        {
            "identity": "agent-sql-writer",
            "team": "search",
            "environment": "staging",
            "model": "gpt-4o-mini",
            "input_tokens": 640,
            "output_tokens": 75,
            "status": "error",
            "error_type": "context_length_exceeded",
        },
        {"event_time": "2025-06-03T14:22:11.250Z"},
    ),
    (
        {
            "id": "evt-7f3a-0003",
            "subject": "agent-planner",
            "type": "openai.chat.completion",
            "time": datetime(2025, 6, 3, 14, 22, 21, 730000, tzinfo=UTC),
            "datacontenttype": "application/json",
        },
        completion().to_dict(),
        {  # what the chat completion says, under the envelope's id, time and subject
            "identity": "agent-planner",
            "event_time": "2025-06-03T14:22:21.730Z",
            "model": "gpt-4o-2024-08-06",
            "operation": "chat",
            "input_tokens": 2210,
            "output_tokens": 58,
            "cached_tokens": 1920,
        },
    ),
]


def main(out: Path = HERE) -> None:
    fmt = JSONFormat()
    encoded = []
    lines = []
    for attributes, data, twin in EVENTS:
        event = CloudEvent(
            attributes={"specversion": "1.0", "source": SOURCE, **attributes}, data=data
        )
        encoded.append(fmt.write(event))
        native = {"event_id": attributes["id"], "source": SOURCE, **twin}
        if attributes["type"] == "ai.usage":  # native data: its fields are the event's
            native = {**native, **data}
        lines.append(orjson.dumps(native) + b"\n")
    (out / f"{NAME}.json").write_bytes(b"[" + b", ".join(encoded) + b"]")
    (out / f"{NAME}.native.jsonl").write_bytes(b"".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
