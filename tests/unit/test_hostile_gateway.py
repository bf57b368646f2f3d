"""Hostile input through the gateway's ASGI middleware (meterguard/gateway/asgi.py), in
process, with hypothesis (issue 14, security).

The middleware serves no route of its own and changes no meterguard state: it answers 429
for a throttled or blocked identity, else passes the request to the app it wraps, and reads
the app's JSON `usage` to charge tokens. Hostile here: any header names and values (the
identity and bearer headers included), and any response body the wrapped app (the model
call) returns. 0 exceptions; every request answered by the app or by a 429 whose body is
JSON and never carries the caller's bearer secret.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterguard.gateway import ThrottleClient, ThrottleMiddleware
from meterguard.models import ThrottleCommand

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SECRET_PART = "s3cr3t-part-of-the-key"
FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def command(identity: str, action: str, rpm: int | None, tpm: int | None) -> ThrottleCommand:
    return ThrottleCommand.model_validate(
        {
            "command_id": f"c-{identity}",
            "identity": identity,
            "action": action,
            "limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm},
            "reason": "test",
            "alert_id": "a-1",
            "issued_at": T0.isoformat(),
            "expires_at": (T0 + timedelta(hours=1)).isoformat(),
            "version": 1,
        }
    )


def client() -> ThrottleClient:
    c = ThrottleClient("http://mg", clock=lambda: T0, fail_mode="open")
    c.apply(command("svc-throttled", "throttle", 1, 100), T0)
    c.apply(command("svc-blocked", "block", None, None), T0)
    c.apply(command("key1", "throttle", None, 10), T0)  # a `<key id>.<secret>` bearer
    return c


identities = st.sampled_from(["svc-throttled", "svc-blocked", "key1", "svc-free", ""])
header_values = st.one_of(
    identities.map(str.encode),
    st.sampled_from([f"Bearer key1.{SECRET_PART}", "Bearer", "Basic x", "bearer  "]).map(
        str.encode
    ),
    st.binary(max_size=40),
)
headers = st.lists(
    st.tuples(
        st.sampled_from([b"x-meterguard-identity", b"authorization", b"content-type", b"x"])
        | st.binary(max_size=10),
        header_values,
    ),
    max_size=5,
)
bodies = st.one_of(
    st.binary(max_size=100),
    st.sampled_from(
        [
            b'{"usage": {"total_tokens": 1e400}}',  # json reads it as infinity
            b'{"usage": {"total_tokens": NaN}}',
            b'{"usage": {"prompt_tokens": "a", "completion_tokens": "b"}}',
            b'{"usage": {"total_tokens": -5}}',
            b'{"usage": {"total_tokens": 100000000000000000000000000}}',
            b'{"usage": [1, 2]}',
            b'{"usage": null}',
            b"[]",
            b'{"usage": {"prompt_tokens": 1e308, "completion_tokens": 1e308}}',
        ]
    ),
    st.recursive(
        st.none() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=15), inner),
        max_leaves=8,
    ).map(lambda doc: json.dumps({"usage": doc}).encode()),
)


@FUZZ
@given(
    who=st.sampled_from(
        [
            (b"x-meterguard-identity", b"key1"),
            (b"x-meterguard-identity", b"svc-throttled"),
            (b"authorization", f"Bearer key1.{SECRET_PART}".encode()),
            (b"x", b""),
        ]
    ),
    request_headers=headers,
    body=bodies,
    content_type=st.sampled_from([b"application/json", b"text/plain", b""]),
    chunks=st.integers(1, 3),
)
async def test_hostile_headers_and_responses_never_crash_the_middleware(
    who: tuple[bytes, bytes],
    request_headers: list[tuple[bytes, bytes]],
    body: bytes,
    content_type: bytes,
    chunks: int,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", content_type)]}
        )  # fmt: skip
        step = max(1, len(body) // chunks)
        parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part,
                        "more_body": i < len(parts) - 1})  # fmt: skip

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    # The first identity header wins (dict of the list): the drawn one, then hostile ones.
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat",
        "headers": [who, *request_headers],
    }
    middleware = ThrottleMiddleware(app, client())
    for _ in range(3):  # the second and third call see what the first one charged
        sent.clear()
        await middleware(scope, receive, send)
        start = sent[0]
        assert start["type"] == "http.response.start"
        assert start["status"] in (200, 429, 503)  # 503: a client that fails closed
        if start["status"] != 200:
            refusal = b"".join(m.get("body", b"") for m in sent[1:])
            doc = json.loads(refusal)
            assert doc["error"] in ("throttled", "throttle_view_unavailable")
            assert SECRET_PART not in refusal.decode()
