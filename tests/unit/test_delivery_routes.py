"""Which destinations deliver in order per identity, and the outbox cap's wiring
(streams/delivery/deliverer.py); nothing is started or connected here."""

from __future__ import annotations

import faust
import redis.asyncio as aioredis

from meterguard.streams.delivery.deliverer import install_delivery
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.settings import Settings


def installed(**values):
    app = faust.App("t-routes", broker="kafka://127.0.0.1:1")
    config = Settings(_env_file=None, kafka_broker="kafka://127.0.0.1:1", **values)  # type: ignore[call-arg]
    install_delivery(app, config, aioredis.Redis(), PolicyConfig())
    return app.meterguard_delivery  # type: ignore[attr-defined]


def test_webhooks_are_ordered_per_identity_and_slack_groups_bursts_instead():
    deliverer = installed(
        webhook_url="https://siem.example/h,https://soar.example/h",
        slack_webhook_url="https://hooks.slack.com/services/T/B/X",
    )
    assert {r.destination.kind: r.ordered for r in deliverer.routes} == {
        "webhook": True,
        "slack": False,
    }
    assert [r.ordered for r in deliverer.routes] == [True, True, False]


def test_the_outbox_is_capped_per_destination_by_the_setting():
    assert installed(webhook_url="https://siem.example/h").outbox.max_pending == 10_000
    capped = installed(webhook_url="https://siem.example/h", outbox_max_pending=50)
    assert capped.outbox.max_pending == 50


def test_a_destination_is_retried_for_about_an_hour_by_default():
    retry = installed(webhook_url="https://siem.example/h").retry
    waits = [min(retry.max_s, retry.base_s * 2 ** (a - 1)) / 2 for a in range(1, 128)]
    assert retry.max_attempts == 128 and 55 * 60 < sum(waits) < 65 * 60
