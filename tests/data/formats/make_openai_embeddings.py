"""Regenerate openai_embeddings.json + .headers.json and its native twin with the `openai`
package's own types.

    .venv/bin/python tests/data/formats/make_openai_embeddings.py [OUT_DIR]

The value is a `openai.types.CreateEmbeddingResponse` (`Embedding` items, `Usage` with prompt
and total tokens only), built from the SDK's own types and serialised with `.model_dump_json()`
as an app logs the object the client returned. The type has no `id` and no `created`
(src/openai/types/create_embedding_response.py), so the gateway that publishes it sends the
request's id and time in Kafka headers `mg-event-id` and `mg-event-time`, and the caller in
`mg-identity` / `mg-team` / `mg-environment`. The vector is short because the request asked for
`dimensions=8`. The native twin is written from this script's own inputs, never from our decoder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.create_embedding_response import Usage

HERE = Path(__file__).resolve().parent
NAME = "openai_embeddings"
HEADERS = {
    "mg-identity": "svc-kb-indexer",
    "mg-team": "search",
    "mg-environment": "prod",
    "mg-event-id": "req_7c2e9a41d03b4f58a6e1",
    "mg-event-time": "2025-06-03T14:22:05.310Z",
}
MODEL = "text-embedding-3-small"
TOKENS = 412
VECTOR = [0.0023, -0.0093, 0.0158, -0.0417, 0.0862, 0.0011, -0.0239, 0.0744]


def response() -> CreateEmbeddingResponse:
    return CreateEmbeddingResponse(
        object="list",
        data=[Embedding(object="embedding", index=0, embedding=VECTOR)],
        model=MODEL,
        usage=Usage(prompt_tokens=TOKENS, total_tokens=TOKENS),
    )


def main(out: Path = HERE) -> None:
    (out / f"{NAME}.json").write_text(response().model_dump_json())
    (out / f"{NAME}.headers.json").write_text(json.dumps(HEADERS, indent=2) + "\n")
    twin = {
        "event_id": HEADERS["mg-event-id"],
        "identity": HEADERS["mg-identity"],
        "event_time": HEADERS["mg-event-time"],
        "team": HEADERS["mg-team"],
        "environment": HEADERS["mg-environment"],
        "model": MODEL,
        "operation": "embeddings",
        "input_tokens": TOKENS,
    }
    (out / f"{NAME}.native.jsonl").write_bytes(orjson.dumps(twin) + b"\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
