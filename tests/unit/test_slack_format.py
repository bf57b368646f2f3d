"""Slack message formatting (sinks/slack_format.py): hostile identities cannot ping or link."""

from __future__ import annotations

import orjson

from meterguard.models import Alert
from meterguard.sinks.slack_format import alert_message, escape_mrkdwn
from tests.support.alerts import make_alert
from tests.support.slack_blocks import parsed_texts


def alert(identity: str, summary: str = "calls 412/min vs baseline 9 (46x)") -> Alert:
    return make_alert(
        identity, "retry_loop", alert_id="a1", summary=summary, evidence={"repeats": 70}
    )


def test_identity_with_mentions_and_links_cannot_ping_or_link_anyone():
    hostile = "<!channel> <@U123> <https://evil.example|click me> & co"
    message = alert_message(alert(hostile, summary=f"{hostile}: the same request sent 70 times"))
    for text in parsed_texts(message):
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
