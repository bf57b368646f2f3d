"""Slack Web API sink (sinks/slack_api.py) against a local chat.postMessage / chat.update.

An integration test: slack-sdk talks aiohttp, so the Slack API is a real local HTTP server
(tests/support/slack_emulator.py), not a mock transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from meterguard.sinks.base import Delivered, Failed, Retry
from meterguard.sinks.routing import RoutingConfig, SlackApi, destinations
from meterguard.sinks.slack_api import MemoryThreadStore, SlackApiSink, thread_key
from meterguard.streams.tools.embedded import free_port
from tests.support.alerts import HOSTILE, make_alert
from tests.support.slack_blocks import parsed_texts
from tests.support.slack_emulator import SlackEmulator

TOKEN, CHANNEL = "xoxb-test-token", "C123"


@pytest.fixture
async def slack() -> AsyncIterator[SlackEmulator]:
    emulator = await SlackEmulator().start()
    yield emulator
    await emulator.stop()


def sink_for(base_url: str, threads: MemoryThreadStore, threshold: int = 5) -> SlackApiSink:
    client = AsyncWebClient(token=TOKEN, base_url=base_url, timeout=2, retry_handlers=[])
    return SlackApiSink(client, CHANNEL, threads, "https://mg.example", threshold)


def header(blocks: list[dict[str, Any]]) -> str:
    return blocks[0]["text"]["text"]


async def test_first_alert_of_an_episode_posts_a_top_level_message(slack: SlackEmulator):
    threads = MemoryThreadStore()
    alert = make_alert(severity="warning")
    assert await sink_for(slack.base_url, threads).deliver([alert]) == [Delivered(200)]
    (call,) = slack.calls
    assert call.method == "chat.postMessage" and call.authorization == f"Bearer {TOKEN}"
    assert call.body["channel"] == CHANNEL and "thread_ts" not in call.body
    (message,) = slack.top_level()
    assert "WARNING" in header(message.blocks)
    assert threads.threads == {thread_key(alert): message.ts}


async def test_escalation_is_a_thread_reply_and_the_parent_shows_the_new_severity(slack):
    sink = sink_for(slack.base_url, MemoryThreadStore())
    await sink.deliver([make_alert(severity="warning", minute=0)])
    outcome = await sink.deliver([make_alert(severity="critical", minute=2)])
    assert outcome == [Delivered(200)]
    (parent,) = slack.top_level()
    assert [c.method for c in slack.calls] == ["chat.postMessage"] * 2 + ["chat.update"]
    assert slack.calls[1].body["thread_ts"] == parent.ts
    assert slack.calls[2].body["ts"] == parent.ts
    (reply,) = slack.replies(parent.ts)
    assert "CRITICAL" in header(reply.blocks) and "CRITICAL" in header(parent.blocks)


async def test_resolution_is_a_reply_and_the_parent_shows_resolved(slack: SlackEmulator):
    sink = sink_for(slack.base_url, MemoryThreadStore())
    await sink.deliver([make_alert(minute=0)])
    await sink.deliver([make_alert(severity="info", status="resolved", minute=9)])
    (parent,) = slack.top_level()
    assert "RESOLVED" in header(parent.blocks) and parent.edits == 1
    assert "RESOLVED" in header(slack.replies(parent.ts)[0].blocks)


async def test_another_episode_of_the_same_identity_gets_its_own_message(slack):
    sink = sink_for(slack.base_url, MemoryThreadStore())
    await sink.deliver([make_alert(episode=100)])
    await sink.deliver([make_alert(episode=200)])
    assert len(slack.top_level()) == 2 and not any(m.thread_ts for m in slack.messages.values())


async def test_rate_limit_is_a_retry_with_retry_after_and_stops_the_batch(slack):
    slack.fail_next("chat.postMessage", 429, "ratelimited", **{"Retry-After": "7"})
    outcomes = await sink_for(slack.base_url, MemoryThreadStore()).deliver(
        [make_alert("a"), make_alert("b")]
    )
    assert outcomes == [Retry("slack ratelimited", 7.0, 429)] * 2
    assert len(slack.calls) == 1 and not slack.messages


@pytest.mark.parametrize("code", ["channel_not_found", "invalid_auth", "not_in_channel"])
async def test_permanent_slack_errors_fail_with_the_error_code(slack, code):
    slack.fail_next("chat.postMessage", 200, code)
    (outcome,) = await sink_for(slack.base_url, MemoryThreadStore()).deliver([make_alert()])
    assert outcome == Failed(f"slack error {code}")


async def test_server_errors_and_an_unreachable_slack_are_retried(slack: SlackEmulator):
    slack.fail_next("chat.postMessage", 503, "service_unavailable")
    (outcome,) = await sink_for(slack.base_url, MemoryThreadStore()).deliver([make_alert()])
    assert outcome == Retry("slack HTTP 503", None, 503)
    down = f"http://127.0.0.1:{free_port()}/api/"
    (outcome,) = await sink_for(down, MemoryThreadStore()).deliver([make_alert()])
    assert isinstance(outcome, Retry) and "network" in outcome.reason


async def test_a_failed_reply_is_retried_without_showing_anything_twice(slack):
    sink = sink_for(slack.base_url, MemoryThreadStore())
    await sink.deliver([make_alert(severity="warning")])
    escalation = make_alert(severity="critical", minute=2)
    slack.fail_next("chat.postMessage", 500, "internal_error")
    assert await sink.deliver([escalation]) == [Retry("slack HTTP 500", None, 500)]
    (parent,) = slack.top_level()
    assert not slack.replies(parent.ts) and parent.edits == 0
    assert await sink.deliver([escalation]) == [Delivered(200)]
    assert len(slack.replies(parent.ts)) == 1 and parent.edits == 1


async def test_a_posted_reply_counts_as_delivered_when_the_parent_edit_fails(slack):
    sink = sink_for(slack.base_url, MemoryThreadStore())
    await sink.deliver([make_alert(severity="warning")])
    slack.fail_next("chat.update", 200, "cant_update_message")
    assert await sink.deliver([make_alert(severity="critical", minute=2)]) == [Delivered(200)]
    (parent,) = slack.top_level()
    assert len(slack.replies(parent.ts)) == 1 and "WARNING" in header(parent.blocks)


async def test_a_posted_message_counts_as_delivered_when_its_thread_cannot_be_stored(slack):
    class Forgetful(MemoryThreadStore):
        async def put(self, key: str, ts: str) -> None:
            raise ConnectionError("redis down")

    assert await sink_for(slack.base_url, Forgetful()).deliver([make_alert()]) == [Delivered(200)]


async def test_a_storm_of_new_episodes_is_one_digest_without_threads(slack):
    threads = MemoryThreadStore()
    storm = [make_alert(f"svc-{i:02}") for i in range(8)]
    outcomes = await sink_for(slack.base_url, threads, threshold=5).deliver(storm)
    assert outcomes == [Delivered(200)] * 8
    (digest,) = slack.top_level()
    assert digest.text.startswith("8 meterguard alerts") and threads.threads == {}


async def test_known_episodes_are_threaded_even_in_a_storm_of_new_ones(slack):
    threads = MemoryThreadStore()
    sink = sink_for(slack.base_url, threads, threshold=2)
    await sink.deliver([make_alert("known", severity="warning")])
    batch = [make_alert("known", severity="critical", minute=3)]
    batch += [make_alert(f"new-{i}") for i in range(3)]
    assert await sink.deliver(batch) == [Delivered(200)] * 4
    parent, digest = slack.top_level()
    assert len(slack.replies(parent.ts)) == 1 and "CRITICAL" in header(parent.blocks)
    assert digest.text.startswith("3 meterguard alerts")


async def test_a_channel_ping_identity_never_reaches_text_slack_parses(slack):
    sink = sink_for(slack.base_url, MemoryThreadStore(), threshold=2)
    await sink.deliver([make_alert(HOSTILE, severity="warning")])
    await sink.deliver([make_alert(HOSTILE, status="resolved", severity="info", minute=5)])
    await sink.deliver([make_alert(f"{HOSTILE} {i}") for i in range(4)])  # a digest
    assert [c.method for c in slack.calls].count("chat.update") == 1
    for call in slack.calls:
        for text in parsed_texts(call.body):
            assert "<" not in text and ">" not in text
        assert "&lt;!channel&gt;" in call.body["text"]


def test_the_web_api_replaces_the_webhook_and_its_key_holds_no_token():
    api = SlackApi.of("https://slack.com/api/", TOKEN, CHANNEL)
    found = destinations(
        RoutingConfig(), None, None, "https://hooks.slack.com/services/T/B/X", {}, api
    )
    (dest,) = found
    assert dest.kind == "slack" and dest.channel == CHANNEL and dest.secret == TOKEN
    assert TOKEN not in dest.key and TOKEN not in dest.public_name and TOKEN not in repr(api)
    assert dest.public_name == "https://slack.com/api/#C123"


@pytest.mark.parametrize(("token", "channel"), [(TOKEN, None), (None, CHANNEL)])
def test_a_bot_token_without_a_channel_or_the_reverse_is_refused(token, channel):
    with pytest.raises(ValueError, match="MG_SLACK_CHANNEL"):
        SlackApi.of("https://slack.com/api/", token, channel)


async def test_a_deleted_episode_message_starts_the_episode_again_instead_of_failing(slack):
    threads = MemoryThreadStore()
    alert = make_alert(severity="critical", minute=2)
    await threads.put(thread_key(alert), "1600000000.000001")  # a ts Slack no longer has
    assert await sink_for(slack.base_url, threads).deliver([alert]) == [Delivered(200)]
    (message,) = slack.top_level()
    assert "CRITICAL" in header(message.blocks)
    assert threads.threads == {thread_key(alert): message.ts}
