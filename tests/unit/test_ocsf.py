"""OCSF Detection Findings (sinks/ocsf.py): every detector's real alerts, firing and resolved,
validated against the upstream OCSF schema (tests/support/ocsf_schema.py), and the per
destination `format: ocsf` of the policy's `routing:`."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from meterguard.detectors.identity_flood import flood_alert
from meterguard.detectors.registry import REGISTRY, new_filter
from meterguard.models import Alert
from meterguard.sinks.base import Delivered
from meterguard.sinks.ocsf import ANALYTIC_TYPE, OCSF_VERSION, detection_finding
from meterguard.sinks.routing import RoutingConfig, destinations
from meterguard.sinks.webhook import WebhookSink
from meterguard.sinks.webhook_verify import WebhookVerifier
from meterguard.streams.policy.config import GroupBudget, PolicyConfig
from meterguard.streams.policy.episodes import (
    Attribution,
    Baseline,
    Episode,
    ScoredMinute,
    decide,
)
from meterguard.streams.policy.group_budgets import (
    CAP_MARK,
    GroupPeriod,
    Spend,
    alerts,
    assess,
    period_of,
)
from meterguard.streams.runtime.topics import topic_specs
from meterguard.streams.settings import Settings
from meterguard.timeutil import MINUTE_MS, to_ms
from tests.support.alerts import make_alert
from tests.support.detector_scenarios import SCENARIOS, minute_of, ordinary
from tests.support.ocsf_schema import VERSIONS, problems

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
DEPLOY_POLICY = Path(__file__).parents[2] / "deploy" / "meterguard.yaml"
# Quiet minutes after a scenario, at most, until its episode resolves: a budget episode
# lasts until the UTC day ends (the scenarios start at 13:00), so a day covers every one.
CALM_MINUTES = 24 * 60


def episode_alerts(detector: str) -> list[Alert]:
    """The alerts the policy raises on the detector's own scenario (seed 0), then on quiet
    minutes until its last episode resolves."""
    scenario = SCENARIOS[detector](0)
    runner = new_filter(detector)
    runner.detector.configure(scenario.context)
    policy, rng = PolicyConfig(), np.random.default_rng(0)
    minutes = list(scenario.minutes)
    last = minutes[-1].window.minute
    # 2 calls a minute: below every scenario's ordinary rate, so every detector calms down.
    minutes += [
        minute_of(last + i, ordinary(last + i, 2, rng), False) for i in range(1, CALM_MINUTES)
    ]
    episode: Episode | None = None
    found: list[Alert] = []
    for minute in minutes:
        for facts in minute.events:
            runner.detector.observe_one(facts)
        verdict = runner.process(minute.window)
        end = (minute.window.minute + 1) * MINUTE_MS
        scored = ScoredMinute(
            identity=f"agent-{detector}",
            detector=detector,
            window=minute.window,
            verdict=verdict,
            who=Attribution(team="payments", environment="prod"),
            # The scenarios' ordinary level (~10 calls of 800 tokens a minute): throttle limits.
            baseline=Baseline(requests_per_minute=10, tokens_per_minute=8000),
            trigger_ms=end + 30_000,
            event_ms=end + 1_000,
        )
        decision = decide(policy, scored, episode)
        episode = decision.episode
        found += decision.alerts
        if episode is None and found and minute.window.minute > last:
            break
    return found


def flood_alerts() -> list[Alert]:
    newcomers = [(f"leak-{i}", "search" if i % 3 else None) for i in range(40)]
    # Births over a bar of 120: 4,000 is past 10x the bar (critical), 300 a warning.
    return [
        flood_alert(29_000_100, 4_000, 120.0, newcomers),
        flood_alert(29_000_200, 300, 120.0, []),
    ]


def group_alerts() -> list[Alert]:
    day = to_ms(datetime(2026, 3, 2, tzinfo=UTC))
    found: list[Alert] = []
    for dimension, value in [
        ("team", "payments"),
        ("business_unit", "retail"),
        ("environment", "prod"),
        ("team", ""),
    ]:
        group = GroupPeriod(dimension, value, period_of("day", day))
        budget = GroupBudget(limit_usd=10, period="day", at_cap="block")
        spend = Spend(10_500_000_000, 0, day // MINUTE_MS + 600)  # $10.50 of $10 by 10:00
        found += alerts(assess(group, budget, spend), ["a|0.8", CAP_MARK], commanded=2)
    return found


ALERTS = {name: lambda n=name: episode_alerts(n) for name in SCENARIOS} | {
    "identity_flood": flood_alerts,
    "group_budget": group_alerts,
}


@pytest.mark.parametrize("detector", sorted(ALERTS))
def test_every_detectors_alerts_are_valid_detection_findings(detector: str):
    made = ALERTS[detector]()
    statuses = {a.status for a in made}
    # identity_flood and group_budget alerts have no resolution; every episode detector's do.
    assert statuses == (
        {"firing"} if detector in ("identity_flood", "group_budget") else {"firing", "resolved"}
    )
    assert {a.detector for a in made} == {detector}
    for alert in made:
        finding = detection_finding(alert)
        assert problems(finding) == [], (alert.alert_id, problems(finding))
        assert orjson.loads(orjson.dumps(finding)) == finding  # JSON as it is
        assert (finding["class_uid"], finding["category_uid"]) == (2004, 2)
        assert finding["metadata"]["uid"] == alert.alert_id
        assert finding["finding_info"]["uid"] == alert.episode_id
        assert finding["evidences"][0]["data"] == alert.model_dump(mode="json")["evidence"]


def test_one_episode_is_one_finding_created_updated_and_closed():
    start = make_alert(evidence={"episode_start_minute": 100, "minute": 100}, severity="warning")
    escalation = make_alert(evidence={"episode_start_minute": 100, "minute": 103})
    resolved = make_alert(status="resolved", severity="info")
    findings = [detection_finding(a) for a in (start, escalation, resolved)]
    assert len({f["finding_info"]["uid"] for f in findings}) == 1
    assert len({f["metadata"]["uid"] for f in findings}) == 3
    assert [f["activity_name"] for f in findings] == ["Create", "Update", "Close"]
    assert [f["type_uid"] for f in findings] == [200401, 200402, 200403]
    assert [(f["severity_id"], f["status"]) for f in findings] == [
        (3, "New"),
        (5, "New"),
        (1, "Resolved"),
    ]
    assert findings[1]["finding_info"]["first_seen_time"] == 100 * MINUTE_MS
    for finding in findings:
        assert problems(finding) == []


def test_the_identity_is_the_actor_and_the_resource_and_groups_have_no_actor():
    finding = detection_finding(make_alert(identity="agent-7", team="billing", environment="prod"))
    user = finding["evidences"][0]["actor"]["user"]
    assert (user["uid"], user["type_id"], user["groups"]) == (
        "agent-7",
        99,
        [{"name": "billing", "type": "team"}],
    )
    assert finding["resources"] == [
        {
            "uid": "agent-7",
            "name": "agent-7",
            "type": "Non-human identity",
            "group": {"name": "billing", "type": "team"},
            "labels": ["environment:prod"],
        }
    ]
    assert {o["value"] for o in finding["observables"]} == {"agent-7"}
    assert (
        finding["unmapped"]["severity"] == "critical" and finding["unmapped"]["team"] == "billing"
    )
    team = detection_finding(group_alerts()[0])
    assert "actor" not in team["evidences"][0]
    assert team["resources"] == [{"uid": "team:payments", "name": "payments", "type": "team"}]


def test_evidence_identities_and_traces_are_observables():
    chain = make_alert(
        detector="agent_chain",
        evidence={"root_identity": "root-agent", "trace_id": "ab12", "chain_cost_usd": 3.5},
    )
    seen = {(o["name"], o["value"]) for o in detection_finding(chain)["observables"]}
    assert ("evidences[0].data.root_identity", "root-agent") in seen
    assert ("evidences[0].data.trace_id", "ab12") in seen
    flood = detection_finding(flood_alerts()[0])
    assert sum(o["name"] == "evidences[0].data.sample" for o in flood["observables"]) == 10


def test_null_fields_are_left_out_but_the_evidence_is_kept_whole():
    alert = make_alert(team=None, environment=None, evidence={"root_identity": None})
    finding = detection_finding(alert)
    assert "team" not in finding["unmapped"] and "throttle_command_id" not in finding["unmapped"]
    assert (
        "labels" not in finding["resources"][0]
        and "groups" not in finding["evidences"][0]["actor"]["user"]
    )
    assert finding["evidences"][0]["data"] == {"root_identity": None}
    assert problems(finding) == []


def test_every_detector_has_an_analytic_type():
    assert set(REGISTRY) | {"identity_flood", "group_budget"} == set(ANALYTIC_TYPE)
    assert set(ALERTS) == set(ANALYTIC_TYPE)  # and every one is validated above


def test_the_declared_version_is_the_oldest_validated():
    assert OCSF_VERSION == VERSIONS[0] == "1.1.0"


# -- routing and the webhook sink ------------------------------------------------------------


def test_routing_format_is_per_destination_and_meterguard_by_default():
    routing = RoutingConfig.model_validate(
        {
            "webhooks": [
                {"url": "https://siem.example/ocsf", "format": "ocsf"},
                {"url": "https://siem.example/plain"},
            ]
        }
    )
    found = destinations(routing, "https://other.example/hook", SECRET, None, {})
    assert [(d.url, d.format) for d in found] == [
        ("https://siem.example/ocsf", "ocsf"),
        ("https://siem.example/plain", "meterguard"),
        ("https://other.example/hook", "meterguard"),
    ]
    with pytest.raises(ValidationError, match="format"):
        RoutingConfig.model_validate({"webhooks": [{"url": "https://x.example/", "format": "cef"}]})


def test_the_shipped_policy_has_an_ocsf_destination():
    routes = PolicyConfig.load(str(DEPLOY_POLICY)).routing.webhooks
    assert "ocsf" in {r.format for r in routes}


async def test_an_ocsf_webhook_posts_the_signed_bare_finding():
    requests: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    alert = make_alert()
    async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as client:
        sink = WebhookSink("https://siem.example/ocsf", SECRET, client, format="ocsf")
        assert await sink.deliver([alert]) == [Delivered(200)]
    delivery = WebhookVerifier(SECRET).verify(requests[0].content, requests[0].headers)
    assert delivery.webhook_id == f"msg_{alert.alert_id}"
    assert orjson.loads(delivery.body) == detection_finding(alert)


def test_the_ocsf_topic_is_created_only_when_set():
    plain = {s.name for s in topic_specs(Settings.model_validate({}))}
    both = {
        s.name for s in topic_specs(Settings.model_validate({"topic_alerts_ocsf": "siem.ocsf"}))
    }
    assert both - plain == {"siem.ocsf"}
