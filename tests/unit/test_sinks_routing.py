"""Routing (sinks/routing.py): which alerts reach which destination, secrets from the env."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from meterguard.sinks.routing import (
    AlertFilter,
    Destination,
    RoutingConfig,
    WebhookRoute,
    destinations,
    public_url,
)
from meterguard.streams.policy.config import PolicyConfig
from tests.support.alerts import make_alert


def test_empty_filter_passes_every_alert():
    everything = AlertFilter()
    assert everything.matches(make_alert(severity="info", status="resolved", environment=None))


def test_min_severity_keeps_that_severity_and_above():
    warning_up = AlertFilter(min_severity="warning")
    assert warning_up.matches(make_alert(severity="critical"))
    assert warning_up.matches(make_alert(severity="warning"))
    assert not warning_up.matches(make_alert(severity="info", status="resolved"))


@pytest.mark.parametrize(
    ("rule", "passing", "blocked"),
    [
        ({"detectors": ["spike"]}, {"detector": "spike"}, {"detector": "budget"}),
        ({"environments": ["prod"]}, {"environment": "prod"}, {"environment": "staging"}),
        ({"teams": ["billing"]}, {"team": "billing"}, {"team": "search"}),
        ({"statuses": ["firing"]}, {"status": "firing"}, {"status": "resolved"}),
    ],
)
def test_set_filters_keep_only_listed_values(rule, passing, blocked):
    only = AlertFilter.model_validate(rule)
    assert only.matches(make_alert(**passing))
    assert not only.matches(make_alert(**blocked))


def test_a_set_filter_refuses_alerts_missing_that_attribute():
    assert not AlertFilter(environments=frozenset({"prod"})).matches(make_alert(environment=None))


def test_filters_combine_with_and():
    rule = AlertFilter(min_severity="critical", environments=frozenset({"prod"}))
    assert rule.matches(make_alert(severity="critical", environment="prod"))
    assert not rule.matches(make_alert(severity="warning", environment="prod"))
    assert not rule.matches(make_alert(severity="critical", environment="test"))


def test_policy_file_routing_section_loads(tmp_path):
    path = tmp_path / "meterguard.yaml"
    path.write_text(
        "routing:\n"
        "  webhooks:\n"
        "    - url: https://siem.example.com/hook\n"
        "      secret_env: SIEM_SECRET\n"
        "      min_severity: critical\n"
        "      environments: [prod]\n"
        "  slack:\n"
        "    statuses: [firing]\n"
    )
    routing = PolicyConfig.load(str(path)).routing
    assert routing.webhooks[0].url == "https://siem.example.com/hook"
    assert routing.webhooks[0].min_severity == "critical"
    assert routing.slack.statuses == frozenset({"firing"})


def test_policy_without_routing_routes_nothing_extra():
    assert PolicyConfig().routing == RoutingConfig()


@pytest.mark.parametrize(
    "bad",
    [
        {"webhooks": [{"url": "https://x.example", "secret": "whsec_inline"}]},
        {"webhooks": [{"url": "ftp://x.example"}]},
        {"slack": {"min_severity": "urgent"}},
    ],
)
def test_routing_refuses_inline_secrets_bad_urls_and_unknown_values(bad):
    with pytest.raises(ValidationError):
        RoutingConfig.model_validate(bad)


def test_env_webhooks_pass_everything_and_share_the_env_secret():
    found = destinations(
        RoutingConfig(), "https://a.example/h, https://b.example/h", "whsec_x", None, {}
    )
    assert [(d.kind, d.url, d.secret) for d in found] == [
        ("webhook", "https://a.example/h", "whsec_x"),
        ("webhook", "https://b.example/h", "whsec_x"),
    ]
    assert all(d.filter == AlertFilter() for d in found)


def test_file_webhook_takes_its_secret_from_the_named_env_var():
    route = WebhookRoute(url="https://siem.example/h", secret_env="SIEM_SECRET")
    found = destinations(RoutingConfig(webhooks=(route,)), None, None, None, {"SIEM_SECRET": "s"})
    assert found[0].secret == "s" and found[0].filter is route


def test_missing_secret_env_is_a_configuration_error():
    route = WebhookRoute(url="https://siem.example/h", secret_env="SIEM_SECRET")
    with pytest.raises(ValueError, match="SIEM_SECRET"):
        destinations(RoutingConfig(webhooks=(route,)), None, None, None, {})


def test_slack_destination_uses_the_slack_filter():
    routing = RoutingConfig(slack=AlertFilter(min_severity="warning"))
    (slack,) = destinations(routing, None, None, "https://hooks.slack.com/services/T/B/x", {})
    assert slack.kind == "slack" and slack.filter.min_severity == "warning"


def test_no_destinations_when_nothing_is_configured():
    assert destinations(RoutingConfig(), None, None, None, {}) == []
    assert destinations(RoutingConfig(), " , ", "whsec_x", "", {}) == []


def test_a_url_given_in_file_and_env_is_one_destination_with_the_file_filter():
    route = WebhookRoute(url="https://siem.example/h", min_severity="critical")
    found = destinations(RoutingConfig(webhooks=(route,)), "https://siem.example/h", "s", None, {})
    assert len(found) == 1 and found[0].filter is route


def test_destination_names_and_keys_carry_no_secrets():
    (hook,) = destinations(
        RoutingConfig(), "https://user:pw@siem.example:8443/in?token=abc#x", None, None, {}
    )
    assert hook.public_name == "https://siem.example:8443/in"
    assert "abc" not in hook.key and "pw" not in hook.key and hook.key.startswith("webhook-")
    slack_url = "https://hooks.slack.com/services/T000/B000/SECRET"
    assert public_url(slack_url, hide_path=True) == "https://hooks.slack.com/…"


@pytest.mark.parametrize("channel", ["#sec-alerts", "sec-alerts"])
def test_a_slack_channel_is_named_with_one_hash_whether_given_with_it_or_not(channel: str):
    api = Destination("slack", "https://slack.com/api/", "xoxb-1", AlertFilter(), channel=channel)
    assert api.public_name == "https://slack.com/api/#sec-alerts"


def test_the_shipped_example_policy_loads_and_names_its_routes():
    from pathlib import Path

    from meterguard.streams.policy.config import PolicyConfig

    example = Path(__file__).parents[2] / "deploy" / "meterguard.yaml"
    policy = PolicyConfig.load(str(example))
    (siem,) = policy.routing.webhooks
    assert siem.secret_env == "SIEM_WEBHOOK_SECRET" and siem.min_severity == "critical"
    assert policy.routing.slack.min_severity == "warning"
