"""An OpenAI embeddings response, as the `openai` client's own types serialise it (issue 11):
`CreateEmbeddingResponse` (src/openai/types/create_embedding_response.py) has no `id` and no
`created`, and its usage has no completion tokens."""

from __future__ import annotations

from datetime import UTC, datetime

from openai.types import CreateEmbeddingResponse

from meterguard.streams.decoding.decode import decode_message
from meterguard.streams.decoding.formats import OPENAI

INGEST = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def response() -> bytes:
    body = CreateEmbeddingResponse.model_validate(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    assert not hasattr(body, "id")
    return body.model_dump_json().encode()


def test_with_the_gateways_event_id_and_time_it_is_an_embeddings_call() -> None:
    headers = [
        ("mg-identity", b"svc-search"),
        ("mg-event-id", b"req-7f3a"),
        ("mg-event-time", b"2026-12-03T11:59:30Z"),
    ]
    result = decode_message(response(), headers, INGEST)
    assert result.format == OPENAI and result.dead_letters == []
    (event,) = result.events
    assert (event.event_id, event.identity, event.operation) == (
        "req-7f3a",
        "svc-search",
        "embeddings",
    )
    assert (event.input_tokens, event.output_tokens, event.model) == (
        8,
        0,
        "text-embedding-3-small",
    )
    assert event.event_time == datetime(2026, 12, 3, 11, 59, 30, tzinfo=UTC)


def test_without_them_the_dead_letter_says_which_header_to_send() -> None:
    result = decode_message(response(), [("mg-identity", b"svc-search")], INGEST)
    (letter,) = result.dead_letters
    assert letter.reason == "missing_event_id"
    assert "mg-event-id" in letter.error and "embeddings" in letter.error
    assert letter.format == OPENAI
    no_time = [("mg-identity", b"svc-search"), ("mg-event-id", b"req-1")]
    (letter,) = decode_message(response(), no_time, INGEST).dead_letters
    assert letter.reason == "missing_event_time" and "mg-event-time" in letter.error
