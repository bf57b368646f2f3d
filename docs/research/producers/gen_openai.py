#!/usr/bin/env python3
"""Parse OpenAI-shaped responses through the real `openai` client (no network).

An httpx.MockTransport serves HAND-WRITTEN JSON bodies shaped like the OpenAI API; the real
openai client parses them into its pydantic types (CreateEmbeddingResponse, ChatCompletion,
Response). The bodies are not captured from OpenAI's servers; they exercise the field names
the SDK types declare (src/openai/types/...).

Outputs (samples/): openai_embeddings.json, openai_chat_completion.json, openai_responses.json
(each = {"wire": <body served>, "parsed": <model.model_dump(mode="json")>, "type": <class>})

Run: /tmp/issue11/venv/bin/python gen_openai.py
"""
import json
import os

import httpx
import openai

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")

EMB = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093, 0.0158]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}
CHAT = {
    "id": "chatcmpl-AbC123",
    "object": "chat.completion",
    "created": 1767225600,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_0123456789",
    "service_tier": "default",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "hi", "refusal": None}}],
    "usage": {
        "prompt_tokens": 1290, "completion_tokens": 180, "total_tokens": 1470,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    },
}
RESP = {
    "id": "resp_67ccd2bed1ec8190b14f964abc054267",
    "object": "response",
    "created_at": 1767225600,
    "status": "completed",
    "model": "gpt-4o-mini-2024-07-18",
    "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}]}],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 1290,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
        "output_tokens": 180,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 1470,
    },
}

ROUTES = {"/v1/embeddings": EMB, "/v1/chat/completions": CHAT, "/v1/responses": RESP}


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=ROUTES[request.url.path])


def main():
    os.makedirs(OUT, exist_ok=True)
    client = openai.OpenAI(api_key="sk-test", base_url="http://mock.local/v1",
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    emb = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    chat = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    resp = client.responses.create(model="gpt-4o-mini", input="hi")
    for name, wire, obj in [("openai_embeddings.json", EMB, emb), ("openai_chat_completion.json", CHAT, chat),
                            ("openai_responses.json", RESP, resp)]:
        rec = {"type": type(obj).__module__ + "." + type(obj).__name__, "wire": wire,
               "parsed": obj.model_dump(mode="json")}
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(rec, f, indent=2)
        print(name, rec["type"], "fields:", sorted(type(obj).model_fields))
    print("embeddings has id attr:", hasattr(emb, "id"), "| usage:", emb.usage)
    print("chat cached:", chat.usage.prompt_tokens_details.cached_tokens,
          "| responses cached:", resp.usage.input_tokens_details.cached_tokens)


if __name__ == "__main__":
    main()
