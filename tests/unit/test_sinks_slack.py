"""Slack sink (sinks/slack.py): episodes grouped, bursts digested, hostile text inert."""

from __future__ import annotations

import httpx
import orjson
import pytest

from meterguard.sinks.base import Delivered, Failed, Retry
from meterguard.sinks.slack import SlackSink, digest_message, latest_per_episode, plan_messages
from tests.support.alerts import HOSTILE, make_alert
from tests.support.slack_blocks import parsed_texts, plain_texts

URL = "https://hooks.slack.com/services/T000/B000/XXXX"


def test_alerts_of_one_episode_become_one_message_with_the_latest_state():
    burst = [
        make_alert(severity="warning", minute=0),
        make_alert(severity="critical", minute=1),
        make_alert(severity="info", status="resolved", minute=6),
    ]
    (message,) = plan_messages(burst, digest_threshold=5)
    assert message.carries == (0, 1, 2)
    assert "RESOLVED" in message.body["blocks"][0]["text"]["text"]


def test_escalation_at_the_same_minute_shows_the_critical_state():
    same_minute = [make_alert(severity="critical"), make_alert(severity="warning")]
    ((latest, carried),) = latest_per_episode(same_minute)
    assert latest.severity == "critical" and carried == (0, 1)


def test_different_episodes_get_their_own_messages_up_to_the_threshold():
    alerts = [make_alert(f"svc-{i}") for i in range(3)] + [make_alert("svc-0", episode=200)]
    messages = plan_messages(alerts, digest_threshold=4)
    assert [m.carries for m in messages] == [(0,), (1,), (2,), (3,)]


def test_more_episodes_than_the_threshold_become_one_digest():
    alerts = [make_alert(f"svc-{i:02}", severity="warning") for i in range(14)]
    alerts.append(make_alert("svc-worst", severity="critical"))
    (digest,) = plan_messages(alerts, digest_threshold=5)
    assert digest.carries == tuple(range(15))
    listing = digest.body["blocks"][1]["text"]
    assert listing["type"] == "plain_text"
    lines = listing["text"].splitlines()
    assert "svc-worst" in lines[0]  # the most severe first
    assert len(lines) == 11 and lines[-1] == "and 5 more"
    assert digest.body["text"].startswith("15 meterguard alerts: 1 critical, 14 warning")


@pytest.mark.parametrize("many", [False, True])
def test_hostile_identity_cannot_ping_or_link_in_any_text_slack_parses(many):
    count = 8 if many else 1
    alerts = [make_alert(f"{HOSTILE} {i}") for i in range(count)]
    for message in plan_messages(alerts, digest_threshold=5, dashboard_url="https://mg.example"):
        for text in parsed_texts(message.body):
            assert "<" not in text and ">" not in text
        assert "&lt;!channel&gt;" in message.body["text"]
        assert HOSTILE in plain_texts(message.body)  # shown verbatim, but never parsed


def test_digest_lists_every_episode_when_few_and_links_the_dashboard():
    body = digest_message([make_alert("a"), make_alert("b")], dashboard_url="https://mg.example")
    assert "more" not in body["blocks"][1]["text"]["text"]
    assert body["blocks"][-1]["elements"][0]["url"] == "https://mg.example"


class SlackStub:
    def __init__(self, *statuses: int, retry_after: str | None = None) -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(orjson.loads(request.content))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"retry-after": self.retry_after} if self.retry_after else {}
        return httpx.Response(status, headers=headers, text="ok" if status == 200 else "no")


async def deliver(stub: SlackStub, alerts, threshold: int = 5):
    async with httpx.AsyncClient(transport=httpx.MockTransport(stub)) as client:
        return await SlackSink(URL, client, digest_threshold=threshold).deliver(alerts)


async def test_every_alert_of_a_message_shares_its_outcome():
    stub = SlackStub(200)
    alerts = [make_alert(minute=0), make_alert(minute=1)]
    assert await deliver(stub, alerts) == [Delivered(200), Delivered(200)]
    assert len(stub.bodies) == 1


async def test_rate_limit_with_retry_after_is_a_retry_and_stops_the_batch():
    stub = SlackStub(429, retry_after="30")
    alerts = [make_alert(f"svc-{i}") for i in range(3)]
    outcomes = await deliver(stub, alerts)
    assert outcomes == [Retry("HTTP 429", 30.0, 429)] * 3
    assert len(stub.bodies) == 1  # the other two messages were not sent into the limit


async def test_server_errors_are_retried_and_bad_requests_fail():
    outcomes = await deliver(SlackStub(503, 404), [make_alert("a"), make_alert("b")])
    assert outcomes == [Retry("HTTP 503", None, 503), Failed("HTTP 404", 404)]


async def test_network_error_is_retried():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as client:
        (outcome,) = await SlackSink(URL, client).deliver([make_alert()])
    assert isinstance(outcome, Retry)
