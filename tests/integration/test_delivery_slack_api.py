"""Slack Web API delivery end to end: a real worker, Tansu, Redis and a local Slack API.

Traffic goes in two phases so that an episode's alerts cannot all land in one delivery
batch: the runaway bursts (its episode fires, and is delivered), then every identity is back
to normal (the episode resolves). The channel must show one message per episode, with the
later alerts of each episode in its thread.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from meterguard.sinks.routing import RoutingConfig, SlackApi, destinations
from meterguard.streams.delivery.outbox import Outbox
from meterguard.streams.settings import Settings
from meterguard.streams.tools.embedded import EmbeddedBroker, EmbeddedRedis
from tests.support.polling import eventually
from tests.support.slack_emulator import SlackEmulator
from tests.support.traffic import mixed, series
from tests.support.worker_process import Worker, produce, start_worker

CHANNEL, TOKEN = "C123", "xoxb-test"
QUIET = 3
ALERT_ID = re.compile(r"alert ([0-9a-f]{32})")
Episode = tuple[str, str, object]


@dataclass
class Run:
    worker: Worker
    slack: SlackEmulator
    alerts: list[dict] = field(default_factory=list)  # as published on the alerts topic

    def episode_of(self) -> dict[str, Episode]:
        return {
            a["alert_id"]: (a["identity"], a["detector"], a["evidence"]["episode_start_minute"])
            for a in self.alerts
        }


async def collect(settings: Settings, into: list[dict], started: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic_alerts,
        bootstrap_servers=settings.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    started.set()
    try:
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                into += [orjson.loads(r.value) for r in records]
    finally:
        await consumer.stop()


def alert_id_in(blocks: list[dict]) -> str:
    """The id in an alert message's context line (`… · alert <id>`)."""
    context = blocks[3]["elements"][0]["text"]
    match = ALERT_ID.search(context)
    assert match, context
    return match.group(1)


async def all_delivered(run: Run, outbox: Outbox, dest: str, status: str) -> bool:
    if not any(a["status"] == status and a["identity"] == "agent-runaway" for a in run.alerts):
        return False
    return all([await outbox.is_done(dest, a["alert_id"]) for a in list(run.alerts)])


@pytest.fixture(scope="module")
async def run(
    broker: EmbeddedBroker, redis_server: EmbeddedRedis, tmp_path_factory
) -> AsyncIterator[Run]:
    slack = await SlackEmulator().start()
    env = {
        "MG_SLACK_BOT_TOKEN": TOKEN,
        "MG_SLACK_CHANNEL": CHANNEL,
        "MG_SLACK_API_URL": slack.base_url,
        "MG_SLACK_GROUP_SECONDS": "1",
        "MG_SLACK_DIGEST_THRESHOLD": "50",  # this test is about threads, not digests
        "MG_SINK_TIMEOUT_S": "2",
    }
    worker = await start_worker(broker, redis_server.url, tmp_path_factory, env)
    settings = worker.settings
    state, listening = Run(worker, slack), asyncio.Event()
    collector = asyncio.create_task(collect(settings, state.alerts, listening))
    await listening.wait()
    (dest,) = destinations(
        RoutingConfig(), None, None, None, {}, SlackApi(slack.base_url, TOKEN, CHANNEL)
    )
    outbox = Outbox(worker.store.redis, settings.key_prefix)
    # Recent event times (the future-skew check allows none ahead of now): 95 minutes back.
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=95)
    tag = settings.key_prefix
    burst = mixed(quiet=QUIET, prefix=f"{tag}-", start=start)  # 75 minutes, runaway from 65
    calm_start = start + timedelta(minutes=75)
    calm = [
        doc
        for name in [f"svc-quiet-{i}" for i in range(QUIET)] + ["agent-runaway"]
        for doc in series(name, 15, 6, start=calm_start, prefix=f"{tag}-calm-")
    ]
    calm.sort(key=lambda e: (e["event_time"], e["event_id"]))
    try:
        await produce(broker.bootstrap, settings.topic_raw, burst)
        await worker.wait_counted(len(burst))
        await eventually(
            lambda: all_delivered(state, outbox, dest.key, "firing"),
            "the firing alerts in Slack",
            log=worker.log,
        )
        await produce(broker.bootstrap, settings.topic_raw, calm)
        await worker.wait_counted(len(burst) + len(calm))
        await eventually(
            lambda: all_delivered(state, outbox, dest.key, "resolved"),
            "the resolution in Slack",
            log=worker.log,
        )
        yield state
    finally:
        collector.cancel()
        await worker.stop()
        await slack.stop()


def test_the_channel_shows_exactly_one_message_per_episode(run: Run):
    episode_of = run.episode_of()
    tops = run.slack.top_level()
    shown = [episode_of[alert_id_in(m.blocks)] for m in tops]
    assert sorted(shown, key=repr) == sorted(set(episode_of.values()), key=repr)
    assert all(m.channel == CHANNEL for m in run.slack.messages.values())
    assert {c.authorization for c in run.slack.calls} == {f"Bearer {TOKEN}"}


def test_later_alerts_of_an_episode_are_replies_in_its_thread(run: Run):
    episode_of = run.episode_of()
    parent_of: dict[Episode, str] = {}
    replies: dict[Episode, list[str]] = defaultdict(list)
    for message in run.slack.messages.values():  # in posting order
        episode = episode_of[alert_id_in(message.blocks)]
        if message.thread_ts is None:
            parent_of[episode] = message.ts
        else:
            assert message.thread_ts == parent_of[episode]
            replies[episode].append(message.ts)
    runaway = [e for e in parent_of if e[0] == "agent-runaway"]
    assert runaway and all(replies[e] for e in runaway)  # resolved in its thread


def test_each_threaded_parent_shows_its_episode_latest_state(run: Run):
    episode_of = run.episode_of()
    last_alert = {episode_of[a["alert_id"]]: a for a in run.alerts}  # keyed by identity: in order
    threaded = [m for m in run.slack.top_level() if run.slack.replies(m.ts)]
    assert threaded
    for message in threaded:
        latest = last_alert[episode_of[alert_id_in(message.blocks)]]
        assert alert_id_in(message.blocks) == latest["alert_id"] and message.edits >= 1
        if latest["status"] == "resolved":
            assert "RESOLVED" in message.blocks[0]["text"]["text"]
