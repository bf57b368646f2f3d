"""Behaviour of the synthetic metering-traffic generator (streams/simulate.py)."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from streams.simulate import (
    MODELS,
    Incident,
    SimConfig,
    SimPlan,
    generate,
    generate_minute,
    plan_identities,
    plan_incidents,
)

START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
RFC3339_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REQUIRED = ("event_id", "identity", "event_time")
COUNTS = ("input_tokens", "output_tokens")


def small(**overrides) -> SimConfig:
    fields = {
        "identities": 40,
        "start": START,
        "minutes": 30,
        "incidents": 1,
        "incident_after_minutes": 10,
        "incident_minutes": 5,
    } | overrides
    return SimConfig(**fields)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_minute(event: dict, cfg: SimConfig) -> int:
    return (parse(event["event_time"]) - cfg.start) // timedelta(minutes=1)


def per_minute_counts(events: list[dict], identity: str, cfg: SimConfig) -> list[int]:
    counts = [0] * cfg.minutes
    for event in events:
        if event["identity"] == identity:
            counts[run_minute(event, cfg)] += 1
    return counts


@pytest.fixture(scope="module")
def default_run() -> tuple[SimConfig, list[dict]]:
    cfg = SimConfig(start=START)
    return cfg, list(generate(cfg))


def contract_violations(event: dict) -> list[str]:
    """The DESIGN.md MeteringEvent rules, checked independently of the generator."""
    problems = [f"missing {name}" for name in REQUIRED if not event.get(name)]
    if not 1 <= len(event.get("event_id", "")) <= 128:
        problems.append("event_id length")
    identity = event.get("identity", "")
    if not (1 <= len(identity) <= 256 and identity.isprintable()):
        problems.append("identity not 1-256 printable chars")
    if not RFC3339_MS_Z.match(event.get("event_time", "")):
        problems.append("event_time not RFC 3339 UTC with ms and Z")
    if event.get("kind") not in ("llm.call", "tool.call", "api.call"):
        problems.append("kind")
    for name in COUNTS:
        value = event.get(name)
        if type(value) is not int or value < 0:
            problems.append(f"{name} not an int >= 0")
    if not isinstance(event.get("cost_usd"), float) or event["cost_usd"] < 0:
        problems.append("cost_usd")
    if event.get("status") not in ("ok", "error"):
        problems.append("status")
    if (event.get("status") == "error") != ("error_type" in event):
        problems.append("error_type present iff status is error")
    if not isinstance(event.get("latency_ms"), int) or event["latency_ms"] < 0:
        problems.append("latency_ms")
    if not re.fullmatch(r"[0-9a-f]+", event.get("request_fingerprint", "")):
        problems.append("request_fingerprint not hex")
    return problems


def test_same_config_yields_identical_events():
    first = [orjson.dumps(e) for e in generate(small())]
    second = [orjson.dumps(e) for e in generate(small())]
    assert first and first == second


def test_different_seed_yields_different_events():
    assert list(generate(small(seed=1))) != list(generate(small(seed=2)))
    assert plan_incidents(small(seed=1)) != plan_incidents(small(seed=2))


def test_a_minute_rebuilt_on_its_own_matches_the_full_run():
    cfg = small()
    events = list(generate(cfg))
    minute_12 = [e for e in events if run_minute(e, cfg) == 12]
    first_seq = int(minute_12[0]["event_id"].split("-")[1])
    assert generate_minute(SimPlan(cfg), 12, first_seq) == minute_12


def test_events_are_sorted_by_time_and_inside_the_run(default_run):
    cfg, events = default_run
    times = [parse(e["event_time"]) for e in events]
    assert times == sorted(times)
    assert times[0] >= cfg.start
    assert times[-1] < cfg.start + timedelta(minutes=cfg.minutes)


def test_non_utc_start_still_gives_utc_times_inside_the_run():
    start = datetime(2025, 1, 6, 10, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))
    cfg = small(start=start)
    assert cfg.start.tzinfo is UTC
    times = [parse(e["event_time"]) for e in generate(cfg)]
    assert min(times) >= start and max(times) < start + timedelta(minutes=cfg.minutes)


def test_event_ids_are_unique(default_run):
    _, events = default_run
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)


def test_every_event_satisfies_the_metering_event_contract(default_run):
    _, events = default_run
    bad = [(e["event_id"], p) for e in events if (p := contract_violations(e))]
    assert bad == []


def test_events_round_trip_through_orjson(default_run):
    _, events = default_run
    assert [orjson.loads(orjson.dumps(e)) for e in events[:5000]] == events[:5000]


def test_cost_follows_the_model_price_list(default_run):
    _, events = default_run
    for e in events[:20000]:
        _, price_in, price_out, _, _ = MODELS[e["model"]]
        expected = (e["input_tokens"] * price_in + e["output_tokens"] * price_out) / 1e6
        assert e["cost_usd"] == pytest.approx(expected, abs=1e-8)
        assert e["provider"] == MODELS[e["model"]][0]


def test_error_rate_is_about_one_percent(default_run):
    _, events = default_run
    rate = sum(e["status"] == "error" for e in events) / len(events)
    assert 0.005 < rate < 0.02


def test_identity_mix_and_environments_look_like_an_estate(default_run):
    _, events = default_run
    prefixes = Counter(e["identity"].split("-")[0] for e in events)
    assert set(prefixes) == {"svc", "agent", "ci", "key"}
    environments = Counter(e["environment"] for e in events)
    assert environments.most_common(1)[0][0] == "prod"
    assert {"staging", "test"} <= set(environments)


def test_base_rates_are_log_normal_with_heavy_and_light_identities():
    rates = [p.rate_per_min for p in plan_identities(SimConfig(start=START))]
    assert 1.0 <= statistics.median(rates) <= 2.0
    assert 1 <= sum(r >= 20 for r in rates) <= 15
    assert sum(r < 0.5 for r in rates) >= len(rates) // 10


def test_nearly_every_identity_is_seen(default_run):
    cfg, events = default_run
    seen = {e["identity"] for e in events}
    assert 0.95 * cfg.identities <= len(seen) <= cfg.identities


def test_each_identity_sends_a_few_distinct_requests(default_run):
    _, events = default_run
    fingerprints = defaultdict(set)
    for e in events:
        fingerprints[e["identity"]].add(e["request_fingerprint"])
    assert max(len(fps) for fps in fingerprints.values()) <= 6


def test_only_agents_carry_caller_and_trace_context(default_run):
    _, events = default_run
    traced = [e for e in events if "trace_id" in e]
    assert traced and all(e["identity"].startswith("agent-") for e in traced)
    assert all(len(e["trace_id"]) == 32 and len(e["span_id"]) == 16 for e in traced)
    assert any("caller_identity" in e for e in traced)


def test_daily_rhythm_peaks_about_three_times_the_trough():
    def ordinary_calls(hour: int) -> int:
        cfg = SimConfig(start=START.replace(hour=hour), minutes=30, incidents=0)
        batch = {p.name for p in plan_identities(cfg) if p.batch}
        return sum(e["identity"] not in batch for e in generate(cfg))

    assert 2.3 < ordinary_calls(15) / ordinary_calls(3) < 3.8


def test_hourly_batch_identities_burst_at_the_top_of_each_hour(default_run):
    cfg, events = default_run
    batch = [p.name for p in plan_identities(cfg) if p.batch]
    assert batch
    for name in batch:
        counts = per_minute_counts(events, name, cfg)
        for hour in range(cfg.minutes // 60):  # START is on the hour
            burst, rest = counts[hour * 60 : hour * 60 + 2], counts[hour * 60 + 2 : hour * 60 + 60]
            assert sum(burst) >= 10 and sum(burst) > 5 * sum(rest), (name, hour, burst, rest)


def test_runaway_agent_calls_at_least_ten_times_its_usual_rate(default_run):
    cfg, events = default_run
    incidents = plan_incidents(cfg)
    assert len(incidents) == cfg.incidents
    for incident in incidents:
        counts = per_minute_counts(events, incident.identity, cfg)
        first = (incident.start - cfg.start) // timedelta(minutes=1)
        before = statistics.median(counts[:first])
        during = statistics.median(counts[first : first + cfg.incident_minutes])
        assert before >= 1, incident  # an identity with a real baseline
        assert during >= 10 * before, (incident, before, during)


def test_runaway_agent_uses_more_tokens_per_call(default_run):
    cfg, events = default_run
    incident = plan_incidents(cfg)[0]
    mine = [e for e in events if e["identity"] == incident.identity and e["status"] == "ok"]
    inside = [
        e["input_tokens"] for e in mine if incident.start <= parse(e["event_time"]) < incident.end
    ]
    before = [e["input_tokens"] for e in mine if parse(e["event_time"]) < incident.start]
    assert statistics.median(inside) >= 1.5 * statistics.median(before)


@pytest.mark.parametrize("seed", range(10))
def test_incidents_start_after_the_learning_period_and_end_inside_the_run(seed):
    cfg = SimConfig(start=START, seed=seed, minutes=90, incidents=4)
    incidents = plan_incidents(cfg)
    assert len(incidents) == 4 and len({i.identity for i in incidents}) == 4
    batch = {p.name for p in plan_identities(cfg) if p.batch}
    for incident in incidents:
        assert isinstance(incident, Incident) and incident.kind == "runaway_agent"
        assert incident.start >= cfg.start + timedelta(minutes=cfg.incident_after_minutes)
        assert incident.end == incident.start + timedelta(minutes=cfg.incident_minutes)
        assert incident.end <= cfg.start + timedelta(minutes=cfg.minutes)
        assert incident.identity not in batch


def test_plan_incidents_is_deterministic():
    assert plan_incidents(SimConfig(start=START)) == plan_incidents(SimConfig(start=START))


def test_zero_incidents_plans_none():
    assert plan_incidents(small(incidents=0)) == []


def test_naive_start_is_rejected():
    with pytest.raises(ValueError, match="timezone"):
        SimConfig(start=datetime(2025, 1, 6, 8, 0))


def test_run_too_short_for_an_incident_is_rejected():
    with pytest.raises(ValueError, match="no room"):
        SimConfig(start=START, minutes=30)


def test_unknown_incident_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown incident kinds"):
        SimConfig(start=START, incident_kinds=("meteor_strike",))
