"""The demo's traffic schedule (pure): warm-up before the first top-of-hour, incidents just
before simulated time catches up with the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meterguard.streams.tools.demo import CATCH_UP_S, Schedule

WARM_UP_MINUTES = 60  # SpikeConfig.warmup_minutes


@pytest.mark.parametrize("minute", range(0, 60, 7))
def test_schedule_starts_at_ten_to_the_hour_and_incidents_follow_the_warm_up(minute: int):
    now = datetime(2026, 11, 22, 11, minute, 42, tzinfo=UTC)
    plan = Schedule.for_now(now)
    backfill = (now.replace(second=0) - plan.start) / timedelta(minutes=1)
    assert plan.start.minute == 50  # the first :00 burst falls inside the warm-up
    assert 70 <= backfill < 130
    assert plan.incident_after_minutes > WARM_UP_MINUTES
    assert plan.incident_after_minutes <= plan.incident_latest_start < backfill
    catch_up_s = backfill * 60 / plan.speed
    assert catch_up_s == pytest.approx(CATCH_UP_S, abs=1e-6) or plan.speed == 40.0


def test_explicit_speed_is_kept():
    plan = Schedule.for_now(datetime(2026, 11, 22, 11, 5, tzinfo=UTC), speed=10.0)
    assert plan.speed == 10.0


def test_demo_names_its_destinations_without_their_secrets():
    from meterguard.streams.settings import Settings
    from meterguard.streams.tools.demo_text import describe_destinations

    none = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "not delivered anywhere" in describe_destinations(none)
    configured = Settings(  # type: ignore[call-arg]
        _env_file=None,
        webhook_url="https://siem.example:8443/hook?token=abc, http://10.0.0.5/x",
        slack_webhook_url="https://hooks.slack.com/services/T000/B000/SECRETPART",
    )
    text = describe_destinations(configured)
    assert "https://siem.example:8443" in text and "http://10.0.0.5" in text
    assert "hooks.slack.com" in text and "unsigned" in text
    assert "token=abc" not in text and "SECRETPART" not in text


def test_demo_sums_deliveries_by_outcome_over_sinks():
    from meterguard.streams.tools.demo_text import delivery_counts

    text = "\n".join(
        [
            "# HELP meterguard_sink_deliveries_total Alert delivery attempts",
            'meterguard_sink_deliveries_total{outcome="delivered",sink="webhook"} 3.0',
            'meterguard_sink_deliveries_total{outcome="delivered",sink="slack"} 2.0',
            'meterguard_sink_deliveries_total{outcome="retry",sink="webhook"} 1.0',
            'meterguard_sink_deliveries_created{outcome="retry",sink="webhook"} 1.7e9',
        ]
    )
    assert delivery_counts(text) == {"delivered": 5.0, "retry": 1.0}


def test_demo_names_the_slack_channel_in_web_api_mode_never_the_token():
    from meterguard.streams.settings import Settings
    from meterguard.streams.tools.demo_text import describe_destinations

    settings = Settings.model_validate(
        {"slack_bot_token": "xoxb-SECRET", "slack_channel": "C123", "slack_webhook_url": None}
    )
    text = describe_destinations(settings)
    assert "C123" in text and "Web API" in text and "SECRET" not in text
