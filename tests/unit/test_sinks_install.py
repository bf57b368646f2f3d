"""install_delivery (streams/delivery/deliverer.py): wiring only, nothing is started here."""

from __future__ import annotations

import faust
import pytest
import redis.asyncio as aioredis

from meterguard.sinks.slack_api import SlackApiSink
from meterguard.streams.delivery.deliverer import install_delivery
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.settings import Settings


def settings(**values) -> Settings:
    return Settings(_env_file=None, kafka_broker="kafka://127.0.0.1:1", **values)  # type: ignore[call-arg]


def agent_topics(app: faust.App) -> list[str]:
    return [t for agent in app.agents.values() for t in agent.channel.topics]  # type: ignore[attr-defined]


def test_no_destination_installs_nothing():
    app = faust.App("t-none", broker="kafka://127.0.0.1:1")
    install_delivery(app, settings(), aioredis.Redis(), PolicyConfig())
    assert agent_topics(app) == [] and not app._app_tasks


def test_a_destination_installs_one_enqueue_agent_on_the_alerts_topic_once():
    app = faust.App("t-one", broker="kafka://127.0.0.1:1")
    config = settings(webhook_url="https://siem.example/h", topic_alerts="x.alerts")
    unconnected = aioredis.Redis()  # connects on first command only; none is sent here
    install_delivery(app, config, unconnected, PolicyConfig())
    install_delivery(app, config, unconnected, PolicyConfig())  # create_app + a test harness
    assert agent_topics(app) == ["x.alerts"]
    assert len(app._app_tasks) == 1


def test_a_bot_token_and_channel_deliver_slack_through_the_web_api_instead_of_the_webhook():
    app = faust.App("t-slack-api", broker="kafka://127.0.0.1:1")
    config = settings(
        slack_webhook_url="https://hooks.slack.com/services/T/B/X",
        slack_bot_token="xoxb-secret",
        slack_channel="C123",
    )
    install_delivery(app, config, aioredis.Redis(), PolicyConfig())
    (route,) = app.meterguard_delivery.routes  # type: ignore[attr-defined]
    assert isinstance(route.sink, SlackApiSink) and route.sink.channel == "C123"
    assert route.key.startswith("slack-") and "xoxb" not in route.key


def test_a_missing_routing_secret_stops_the_worker_at_startup(monkeypatch):
    monkeypatch.delenv("SIEM_SECRET", raising=False)
    policy = PolicyConfig.model_validate(
        {"routing": {"webhooks": [{"url": "https://siem.example/h", "secret_env": "SIEM_SECRET"}]}}
    )
    with pytest.raises(ValueError, match="SIEM_SECRET"):
        install_delivery(
            faust.App("t-bad", broker="kafka://127.0.0.1:1"), settings(), aioredis.Redis(), policy
        )
