"""Slack message formatting (sinks/slack_format.py): hostile identities cannot ping or link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from meterguard.models import Alert
from meterguard.sinks.slack_format import alert_message, escape_mrkdwn

T = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def alert(identity: str, summary: str = "calls 412/min vs baseline 9 (46x)") -> Alert:
    return Alert(
        alert_id="a1",
        identity=identity,
        detector="retry_loop",
        severity="critical",
        score=0.93,
        status="firing",
        title="t",
        summary=summary,
        evidence={"repeats": 70},
        window_start=T,
        window_end=T + timedelta(minutes=1),
        event_time=T + timedelta(seconds=75),
        team="billing",
        environment="prod",
        throttle_command_id=None,
    )


def mrkdwn_texts(message: dict) -> list[str]:
    """Every string Slack would parse as mrkdwn: the fallback and mrkdwn text objects."""
    found = [message["text"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message["blocks"])
    return found


def test_identity_with_mentions_and_links_cannot_ping_or_link_anyone():
    hostile = "<!channel> <@U123> <https://evil.example|click me> & co"
    message = alert_message(alert(hostile, summary=f"{hostile}: the same request sent 70 times"))
    for text in mrkdwn_texts(message):
        assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in message["text"]
    # Blocks carry the identity as plain_text, which Slack never parses for mentions.
    body = orjson.dumps(message["blocks"]).decode()
    assert '"type":"mrkdwn"' not in body
    assert hostile in body


def test_message_carries_severity_identity_team_environment_summary_and_numbers():
    message = alert_message(alert("svc-billing-017"), dashboard_url="https://mg.example/")
    body = orjson.dumps(message).decode()
    for expected in (
        "CRITICAL",
        "retry loop",
        "svc-billing-017",
        "Team: billing",
        "Environment: prod",
        "Score: 0.93",
        "46x",
        "10:00–10:01 UTC",
    ):
        assert expected in body
    button = message["blocks"][-1]["elements"][0]
    assert button["url"] == "https://mg.example/?identity=svc-billing-017"


def test_dashboard_link_encodes_the_identity():
    message = alert_message(alert("a b/&c?"), dashboard_url="https://mg.example")
    assert message["blocks"][-1]["elements"][0]["url"].endswith("identity=a%20b%2F%26c%3F")


def test_escape_handles_ampersands_first():
    assert escape_mrkdwn("<&>") == "&lt;&amp;&gt;"
