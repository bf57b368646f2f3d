"""ThrottleMiddleware: pure ASGI enforcement of meterguard's throttle commands.

Refuses a throttled or blocked identity with 429, `Retry-After` and a small JSON body before
the wrapped app (the model call) runs; everything else passes through untouched. A client
that fails closed (gateway/fail_mode.py) refuses identified requests with 503 while its view
of the throttles is stale; requests with no identity are never metered, so they pass. For a
throttled identity it also reads `usage` from the app's JSON response, so tokens_per_minute
is enforced on real usage (streamed responses carry no such body and count requests only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meterguard.gateway.client import Decision, ThrottleClient

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
IdentityFrom = Callable[[Scope], str | None]

IDENTITY_HEADER = b"x-meterguard-identity"
MAX_USAGE_BODY = 1 << 20  # read usage from bodies up to 1 MiB; larger ones count requests only


def identity_from_headers(scope: Scope) -> str | None:
    """`x-meterguard-identity`, else the key id of the bearer token.

    The header must be set by a trusted hop (the auth layer in front), which strips any
    value a caller sent: a caller who can name itself can dodge its own throttle.
    The key id is the part before the first `.` of `<key id>.<secret>` tokens; any other
    token is named by the SHA-256 hex of the whole token, so the secret never becomes an
    identity that is logged, shown on the dashboard or echoed in a 429 body. That is LiteLLM's
    name for a virtual key too (`hash_token`, litellm/proxy/utils.py: the spend log's
    `api_key`, `user_api_key_hash`), so a key the gateway throttles is the key LiteLLM's
    spend logs meter (README "Identity of an API key"). Producers of metering events must
    name the identity the same way.
    """
    headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
    named = headers.get(IDENTITY_HEADER, b"").decode("latin-1").strip()
    if named:
        return named
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    key_id, dot, _secret = token.partition(".")
    if dot and key_id:
        return key_id
    return hashlib.sha256(token.encode()).hexdigest()


class ThrottleMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        client: ThrottleClient,
        identity_from: IdentityFrom = identity_from_headers,
    ) -> None:
        self.app = app
        self.client = client
        self.identity_from = identity_from

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan, websockets: not ours to meter
            return
        identity = self.identity_from(scope)
        if identity is None:
            await self.app(scope, receive, send)
            return
        decision = self.client.decide(identity)
        if not decision.allowed:
            await _refuse(send, identity, decision)
            return
        if decision.command is None:
            await self.app(scope, receive, send)  # the common path: no command, no overhead
            return
        await self.app(scope, receive, _UsageTap(send, self.client, identity))


def refusal_body(identity: str, decision: Decision) -> dict[str, Any]:
    """The JSON body of a refusal (the LiteLLM hook's `detail` too): 429 names the command,
    503 says the gateway fails closed while its throttle view is stale."""
    command = decision.command
    if command is None:
        return {
            "error": "throttle_view_unavailable",
            "identity": identity,
            "reason": "meterguard's throttle feed is down; this gateway fails closed",
            "command_id": None,
        }
    return {
        "error": "throttled",
        "identity": identity,
        "reason": command.reason,
        "command_id": command.command_id,
    }


async def _refuse(send: Send, identity: str, decision: Decision) -> None:
    body = json.dumps(refusal_body(identity, decision)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(decision.retry_after_s).encode()),
    ]
    await send({"type": "http.response.start", "status": decision.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _UsageTap:
    """Passes every message on; keeps a copy of a JSON body to charge its `usage` tokens."""

    def __init__(self, send: Send, client: ThrottleClient, identity: str) -> None:
        self.send, self.client, self.identity = send, client, identity
        self.body: bytearray | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            if headers.get(b"content-type", b"").startswith(b"application/json"):
                self.body = bytearray()
        elif message["type"] == "http.response.body" and self.body is not None:
            self.body += message.get("body", b"")
            if len(self.body) > MAX_USAGE_BODY:
                self.body = None
            elif not message.get("more_body", False):
                self.client.record_tokens(self.identity, _usage_tokens(bytes(self.body)))
        await self.send(message)


def _usage_tokens(body: bytes) -> int:
    """Total tokens of an OpenAI-style response (`usage.total_tokens` or its parts), else 0."""
    try:
        usage = json.loads(body).get("usage") or {}
        total = usage.get("total_tokens")
        if total is None:
            total = usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0)
        return int(total)
    except (ValueError, TypeError, AttributeError, OverflowError):  # OverflowError: 1e400
        return 0
