"""Webhook sink (sinks/webhook.py) against httpx.MockTransport: signing, ids, outcomes."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from meterguard.sinks.base import Delivered, Failed, Retry
from meterguard.sinks.webhook import WebhookSink, webhook_body
from tests.support.alerts import make_alert

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
URL = "https://siem.example.com/hooks/meterguard"


class Receiver:
    """Records every request; answers with `reply(n)` for the n-th (0-based) one."""

    def __init__(self, reply: Callable[[int], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._reply = reply or (lambda n: httpx.Response(200))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._reply(len(self.requests) - 1)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


async def deliver_one(receiver: Receiver, secret: str | None = SECRET, **alert_fields):
    async with receiver.client() as client:
        sink = WebhookSink(URL, secret, client, timeout_s=1.0)
        return await sink.deliver([make_alert(**alert_fields)])


async def test_delivered_body_verifies_with_the_receivers_standard_webhooks_secret():
    receiver = Receiver()
    assert await deliver_one(receiver) == [Delivered(200)]
    request = receiver.requests[0]
    payload = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert payload["type"] == "meterguard.alert.firing"
    assert payload["data"]["alert_id"] == make_alert().alert_id
    assert request.headers["content-type"] == "application/json"


async def test_signature_does_not_verify_with_another_secret_or_a_changed_body():
    receiver = Receiver()
    await deliver_one(receiver)
    request = receiver.requests[0]
    other = "whsec_" + base64.b64encode(b"another-secret-another-secret!!!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.content, dict(request.headers))
    tampered = request.content.replace(b"critical", b"info")
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, dict(request.headers))


async def test_a_retried_alert_carries_the_same_webhook_id_and_body():
    receiver = Receiver(lambda n: httpx.Response(503 if n == 0 else 200))
    async with receiver.client() as client:
        sink = WebhookSink(URL, SECRET, client)
        alert = make_alert()
        assert isinstance((await sink.deliver([alert]))[0], Retry)
        assert await sink.deliver([alert]) == [Delivered(200)]
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{alert.alert_id}"
    assert first.content == second.content


async def test_each_alert_of_a_batch_gets_its_own_outcome_in_order():
    codes = {"a1": 200, "a2": 429, "a3": 404}

    def reply(request: httpx.Request) -> httpx.Response:
        alert_id = orjson.loads(request.content)["data"]["alert_id"]
        return httpx.Response(codes[alert_id], headers={"retry-after": "3"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        sink = WebhookSink(URL, SECRET, client)
        outcomes = await sink.deliver([make_alert(alert_id=a) for a in codes])
    assert outcomes == [Delivered(200), Retry("HTTP 429", 3.0, 429), Failed("HTTP 404", 404)]


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_network_errors_and_timeouts_are_retried(error):
    def reply(request: httpx.Request) -> httpx.Response:
        raise error

    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        (outcome,) = await WebhookSink(URL, SECRET, client).deliver([make_alert()])
    assert isinstance(outcome, Retry) and type(error).__name__ in outcome.reason


async def test_url_without_secret_sends_unsigned_and_warns_once(caplog):
    receiver = Receiver()
    with caplog.at_level(logging.WARNING, logger="meterguard.sinks"):
        async with receiver.client() as client:
            sink = WebhookSink(URL + "?token=hidden", None, client)
            await sink.deliver([make_alert(alert_id="a"), make_alert(alert_id="b")])
            await sink.deliver([make_alert(alert_id="c")])
    assert len(receiver.requests) == 3
    assert not any("webhook-signature" in r.headers for r in receiver.requests)
    warnings = [r for r in caplog.records if "unsigned" in r.getMessage()]
    assert len(warnings) == 1 and "hidden" not in warnings[0].getMessage()


def test_webhook_body_is_the_standard_webhooks_envelope_of_the_alert():
    alert = make_alert(status="resolved", severity="info")
    body = orjson.loads(webhook_body(alert))
    assert body == {
        "type": "meterguard.alert.resolved",
        "timestamp": "2026-11-22T10:01:01Z",
        "data": alert.model_dump(mode="json"),
    }
    assert webhook_body(alert) == webhook_body(alert)


def test_a_malformed_secret_fails_at_construction():
    with pytest.raises(Exception):  # noqa: B017, PT011 - binascii.Error or EmptyWebhookSecretError
        WebhookSink(URL, "whsec_", httpx.AsyncClient())
