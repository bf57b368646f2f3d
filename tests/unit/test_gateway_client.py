"""Gateway client and middleware (meterguard/gateway): no network, httpx transports only.

The feed is a fake worker behind `httpx.MockTransport` whose SSE bodies the test writes
chunk by chunk; the middleware is called through `httpx.ASGITransport`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from deploy.examples.gateway_proxy import create_app
from meterguard.gateway import SSEParser, ThrottleClient, ThrottleMiddleware
from meterguard.gateway.asgi import identity_from_headers
from meterguard.gateway.sse import ServerSentEvent
from meterguard.models import ThrottleCommand, ThrottleLimits
from tests.support.polling import eventually

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
POLL_S = 0.005  # in process, the client's task gets there within milliseconds


def command(
    identity: str,
    version: int,
    action: str = "throttle",
    rpm: int | None = None,
    tpm: int | None = None,
    expires_at: datetime = T0 + timedelta(minutes=15),
) -> ThrottleCommand:
    return ThrottleCommand.model_validate(
        {
            "command_id": f"c-{identity}-{version}",
            "identity": identity,
            "action": action,
            "limits": ThrottleLimits(requests_per_minute=rpm, tokens_per_minute=tpm),
            "reason": "calls 180/min vs baseline 6",
            "issued_at": T0,
            "expires_at": expires_at,
            "version": version,
        }
    )


def sse_command(c: ThrottleCommand) -> bytes:
    return f"event: command\nid: {c.version}\ndata: {c.model_dump_json()}\n\n".encode()


def sse_ready(count: int) -> bytes:
    return f'event: ready\ndata: {{"count": {count}}}\n\n'.encode()


class FakeWorker:
    """Serves one prepared SSE connection per request; `None` in a queue ends that stream."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Queue[bytes | None]] = []
        self.requests = 0

    def connection(self, *chunks: bytes | None) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        for chunk in chunks:
            queue.put_nowait(chunk)
        self.pending.append(queue)
        return queue

    async def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/throttles/stream"
        self.requests += 1
        if not self.pending:
            return httpx.Response(503)  # restarting: the client must back off and retry
        queue = self.pending.pop(0)

        async def body() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                yield chunk

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    def client(self, **kwargs) -> ThrottleClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handle))
        kwargs.setdefault("clock", lambda: T0 + timedelta(minutes=1))
        return ThrottleClient("http://mg", http=http, backoff_base_s=0.01, **kwargs)


# -- SSE parsing --------------------------------------------------------------------------

STREAM = (
    "\ufeff: keep-alive\r\n"
    'event: command\r\nid: 7\r\ndata: {"a":\r\ndata:  1}\r\n\r\n'
    "data: no event name\rretry: 2500\r\r"
    "event: ready\nfield-without-colon\ndata\n\n"
    "event: lonely-without-data\n\n"
    "data: unterminated at end of stream"
)
EXPECTED = [
    ServerSentEvent(event="command", data='{"a":\n 1}', id="7"),
    ServerSentEvent(event="message", data="no event name", id="7", retry_ms=2500),
    ServerSentEvent(event="ready", data="", id="7", retry_ms=2500),
]


def test_sse_parser_joins_data_lines_skips_comments_and_handles_every_line_ending():
    assert SSEParser().feed(STREAM) == EXPECTED


def test_sse_parser_gives_the_same_events_for_any_chunking():
    for size in (1, 2, 3, 7, 64):
        parser = SSEParser()
        events = []
        for i in range(0, len(STREAM), size):
            events += parser.feed(STREAM[i : i + size])
        assert events == EXPECTED, f"chunk size {size}"


def test_sse_parser_waits_for_the_lf_of_a_crlf_split_across_chunks():
    parser = SSEParser()
    assert parser.feed("data: x\r\n\r") == []
    # Had the lone CR been taken as a line end, the LF would end a second, empty line.
    assert parser.feed("\ndata: y\r\n\r\n") == [
        ServerSentEvent(data="x"),
        ServerSentEvent(data="y"),
    ]


# -- the cache ----------------------------------------------------------------------------


async def test_snapshot_then_a_change_updates_the_cache():
    worker = FakeWorker()
    feed = worker.connection(
        b": keep-alive\n\n",
        sse_command(command("a", 1, rpm=10)),
        sse_command(command("b", 1, action="block")),
        sse_ready(2),
    )
    async with worker.client() as client:
        await client.wait_ready(timeout=3)
        assert {i: c.version for i, c in client.commands().items()} == {"a": 1, "b": 1}
        feed.put_nowait(sse_command(command("a", 2, rpm=5)))
        await eventually(
            lambda: client.get("a") == command("a", 2, rpm=5),
            "the change",
            timeout=3,
            interval=POLL_S,
        )


async def test_commands_before_ready_are_not_in_force_until_the_snapshot_completes():
    worker = FakeWorker()
    feed = worker.connection(sse_command(command("a", 1, action="block")))
    async with worker.client() as client:
        await eventually(feed.empty, "the command to be read", timeout=3, interval=POLL_S)
        assert not client.ready and client.get("a") is None
        feed.put_nowait(sse_ready(1))
        await client.wait_ready(timeout=3)
        assert client.get("a") is not None


def test_a_lower_version_than_held_is_ignored():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    assert client.apply(command("a", 5, rpm=10))
    assert not client.apply(command("a", 3, action="block"))
    assert client.get("a") == command("a", 5, rpm=10)
    client.replace([command("a", 4, action="block")])  # a lagging worker's snapshot
    assert client.get("a") == command("a", 5, rpm=10)


def test_release_removes_the_command_and_stale_ones_cannot_bring_it_back():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    client.apply(command("a", 5, action="block"))
    assert not client.apply(command("a", 4, action="release"))
    assert client.get("a") is not None
    assert client.apply(command("a", 6, action="release"))
    assert client.get("a") is None and client.decide("a").allowed
    assert not client.apply(command("a", 5, action="block"))  # replayed from before the release
    client.replace([command("a", 5, action="block")])
    assert client.get("a") is None
    assert client.apply(command("a", 7, action="block"))  # a genuinely new one


def test_an_expired_command_lets_the_identity_through_and_is_dropped():
    now = [T0]
    client = ThrottleClient("http://mg", clock=lambda: now[0])
    client.apply(command("a", 1, action="block", expires_at=T0 + timedelta(minutes=5)))
    assert client.decide("a").status == 429
    now[0] = T0 + timedelta(minutes=5)
    assert client.decide("a") == client.decide("b")  # allowed, no command
    assert client.decide("a").status == 200
    assert client.commands() == {}
    assert not client.apply(command("a", 2, action="block", expires_at=T0))  # born expired


def test_block_refuses_every_request_until_expiry():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    client.apply(command("a", 1, action="block", expires_at=T0 + timedelta(seconds=90)))
    for minute in range(3):
        decision = client.decide("a", now=T0 + timedelta(seconds=30 * minute))
        assert (decision.allowed, decision.status) == (False, 429)
        assert decision.retry_after_s == 90 - 30 * minute
    client.apply(command("a", 2, action="block", expires_at=T0 + timedelta(days=30)))
    assert client.decide("a").retry_after_s == 300  # come back soon: a release may lift it


def test_requests_per_minute_gives_429_after_the_limit_and_200_in_the_next_minute():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    client.apply(command("a", 1, rpm=3))
    at = T0 + timedelta(seconds=45)
    assert [client.decide("a", now=at).status for _ in range(4)] == [200, 200, 200, 429]
    assert client.decide("a", now=at).retry_after_s == 15  # the minute turns in 15 s
    assert client.decide("a", now=T0 + timedelta(minutes=1)).status == 200


def test_tokens_per_minute_counts_declared_and_recorded_tokens():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    client.apply(command("a", 1, tpm=100))
    assert client.decide("a", tokens=60).allowed
    assert not client.decide("a", tokens=50).allowed  # would go over
    client.record_tokens("a", 40)
    assert not client.decide("a").allowed  # at the limit: nothing more this minute
    assert client.decide("a", now=T0 + timedelta(minutes=1)).allowed


async def test_reconnect_after_the_stream_ends_resyncs_from_the_snapshot():
    worker = FakeWorker()
    worker.connection(
        sse_command(command("a", 1, action="block")),
        sse_command(command("b", 1, action="block")),
        sse_ready(2),
        None,  # worker restart
    )
    async with worker.client() as client:
        await client.wait_ready(timeout=3)
        assert set(client.commands()) == {"a", "b"}
        # The second attempt gets a 503 and backs off.
        await eventually(lambda: worker.requests >= 2, "a reconnect", timeout=3, interval=POLL_S)
        # A connection that drops mid-snapshot changes nothing.
        worker.connection(sse_command(command("c", 1, action="block")), None)
        # Meanwhile "a" was released and "b" renewed: the next snapshot says so.
        worker.connection(sse_command(command("b", 2, action="block")), sse_ready(1))
        await eventually(
            lambda: client.connections == 2, "the second snapshot", timeout=3, interval=POLL_S
        )
        assert {i: c.version for i, c in client.commands().items()} == {"b": 2}


async def test_wait_ready_times_out_while_the_worker_is_down():
    async with FakeWorker().client() as client:
        with pytest.raises(TimeoutError):
            await client.wait_ready(timeout=0.05)
        assert client.decide("anyone").allowed  # fail open


# -- the middleware -----------------------------------------------------------------------


async def echo_app(scope, receive, send) -> None:
    body = b'{"usage": {"total_tokens": 30}}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def gateway(client: ThrottleClient, app=echo_app) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=ThrottleMiddleware(app, client))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_middleware_refuses_a_throttled_identity_with_429_and_passes_others():
    client = ThrottleClient("http://mg", clock=lambda: T0 + timedelta(seconds=50))
    client.apply(command("runaway", 3, rpm=1))
    async with gateway(client) as http:
        first = await http.post("/v1/chat", headers={"x-meterguard-identity": "runaway"})
        refused = await http.post("/v1/chat", headers={"x-meterguard-identity": "runaway"})
        quiet = await http.post("/v1/chat", headers={"x-meterguard-identity": "svc-quiet"})
        anonymous = await http.post("/v1/chat")
    assert first.status_code == 200
    assert refused.status_code == 429 and refused.headers["retry-after"] == "10"
    assert refused.json() == {
        "error": "throttled",
        "identity": "runaway",
        "reason": "calls 180/min vs baseline 6",
        "command_id": "c-runaway-3",
    }
    assert quiet.status_code == 200 and anonymous.status_code == 200


async def test_middleware_charges_response_usage_to_tokens_per_minute():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    client.apply(command("a", 1, tpm=50))
    async with gateway(client) as http:
        headers = {"x-meterguard-identity": "a"}
        statuses = [(await http.post("/", headers=headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # 30 + 30 tokens reached the limit of 50


def test_identity_is_the_header_else_the_bearer_key_id_never_the_secret():
    def scope(*headers: tuple[bytes, bytes]) -> dict:
        return {"type": "http", "headers": list(headers)}

    assert identity_from_headers(scope((b"x-meterguard-identity", b"agent-7"))) == "agent-7"
    assert identity_from_headers(scope((b"authorization", b"Bearer kid42.s3cret"))) == "kid42"
    hashed = identity_from_headers(scope((b"authorization", b"Bearer sk-s3cret")))
    # LiteLLM's hash_token (litellm/proxy/utils.py): sha256(key).hexdigest(), the spend log's
    # api_key: the same key has the same identity in both.
    assert hashed == hashlib.sha256(b"sk-s3cret").hexdigest()
    assert identity_from_headers(scope((b"authorization", b"Basic abc"))) is None
    assert identity_from_headers(scope()) is None


async def test_example_gateway_serves_the_completion_and_refuses_a_blocked_identity():
    client = ThrottleClient("http://mg", clock=lambda: T0)
    client.apply(command("blocked", 1, action="block"))
    transport = httpx.ASGITransport(app=create_app(client))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        ok = await http.post("/v1/chat/completions", headers={"x-meterguard-identity": "fine"})
        refused = await http.post(
            "/v1/chat/completions", headers={"x-meterguard-identity": "blocked"}
        )
        missing = await http.get("/nope")
    assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"
    assert refused.status_code == 429 and refused.json()["error"] == "throttled"
    assert missing.status_code == 404
