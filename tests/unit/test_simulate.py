"""Behaviour of the synthetic metering-traffic generator (streams/simulation/simulate.py)."""

from __future__ import annotations

import hashlib
import itertools
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from meterguard.streams.simulation.config import (
    ALL_INCIDENT_KINDS,
    INCIDENT_EFFECTS,
    Incident,
    SimConfig,
)
from meterguard.streams.simulation.incident_plan import plan_incidents
from meterguard.streams.simulation.profiles import MODELS, plan_identities
from meterguard.streams.simulation.simulate import (
    SimPlan,
    budgets,
    generate,
    generate_minute,
    incident_bystanders,
    offboarded_identities,
)

START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
RFC3339_MS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
REQUIRED = ("event_id", "identity", "event_time")
COUNTS = ("input_tokens", "output_tokens")


def small(**overrides) -> SimConfig:
    fields: dict[str, Any] = {
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


# -- the classic world is frozen -----------------------------------------------------------------

# sha256 over `orjson.dumps(event) + b"\n"` for every event of generate(cfg), computed with
# streams/simulate.py as committed at fe64bef (before incident kinds and traps were added;
# now streams/simulation/), by running the digest loop of `classic_digest` below against that
# file. Key order counts.
CLASSIC_DIGESTS = {
    "default": "1391e9386ce7e16785311d572c22e67d90ecebbc1cf5ded29ae8872131d22b2d",
    "small": "75f0c5255c8e68803c502a2ce08e5d19af3b56932fa5c54a4f5acee651a9bb54",
    "multi": "4502442b72d9d82edbcb995ac065845aeca171834764e789ef8cc4d0923fbd85",
}
MULTI: dict[str, Any] = {
    "identities": 120,
    "start": START,
    "minutes": 180,
    "seed": 11,
    "incidents": 6,
    "incident_after_minutes": 30,
    "incident_minutes": 20,
    "incident_latest_start": 120,
}


def classic_digest(events) -> str:
    digest = hashlib.sha256()
    for event in events:
        digest.update(orjson.dumps(event) + b"\n")
    return digest.hexdigest()


def test_classic_default_run_is_byte_identical_to_before_traps_and_kinds(default_run):
    _, events = default_run
    assert classic_digest(events) == CLASSIC_DIGESTS["default"]


@pytest.mark.parametrize(
    ("name", "cfg"), [("small", lambda: small()), ("multi", lambda: SimConfig(**MULTI))]
)
def test_classic_runs_are_byte_identical_to_before_traps_and_kinds(name, cfg):
    assert not cfg().enriched
    assert classic_digest(generate(cfg())) == CLASSIC_DIGESTS[name]


def test_only_traps_or_new_kinds_switch_to_the_evaluation_world():
    assert not SimConfig(start=START).enriched
    assert SimConfig(start=START, traps=True).enriched
    assert SimConfig(start=START, incident_kinds=("runaway_agent", "retry_loop")).enriched


def test_classic_world_lists_no_offboarded_identities_and_no_bystanders():
    cfg = SimConfig(start=START)
    assert offboarded_identities(cfg) == []
    assert incident_bystanders(cfg) == {}


def test_every_kind_is_listed_and_known_to_the_config():
    assert tuple(INCIDENT_EFFECTS) == ALL_INCIDENT_KINDS
    assert set(ALL_INCIDENT_KINDS) == {
        "runaway_agent", "retry_loop", "slow_ramp", "agent_chain", "drift_model",
        "drift_workload", "offboarded", "budget_burn",
    }  # fmt: skip


# -- the evaluation world: traps and every incident kind -----------------------------------------

WORLD = SimConfig(
    identities=240,
    start=START,
    minutes=300,
    seed=5,
    incidents=2 * len(ALL_INCIDENT_KINDS),
    incident_kinds=ALL_INCIDENT_KINDS,
    traps=True,
)


@dataclass
class Run:
    cfg: SimConfig
    events: list[dict]
    incidents: list[Incident]
    minute_of: list[int]  # run minute per event
    ms_of: list[int]  # epoch ms per event
    by_identity: dict[str, list[int]]  # event indices per identity, in time order

    def of(self, identity: str, first: int = 0, end: int | None = None) -> list[dict]:
        end = self.cfg.minutes if end is None else end
        return [
            self.events[k] for k in self.by_identity[identity] if first <= self.minute_of[k] < end
        ]

    def counts(self, identity: str) -> list[int]:
        counts = [0] * self.cfg.minutes
        for k in self.by_identity[identity]:
            counts[self.minute_of[k]] += 1
        return counts

    def window(self, incident: Incident) -> tuple[int, int]:
        minute = timedelta(minutes=1)
        return (incident.start - self.cfg.start) // minute, (
            incident.end - self.cfg.start
        ) // minute

    def kind(self, kind: str) -> list[Incident]:
        found = [i for i in self.incidents if i.kind == kind]
        assert found, kind
        return found


def epoch_ms(text: str) -> int:
    return int(parse(text).timestamp() * 1000)


@pytest.fixture(scope="module")
def world() -> Run:
    events = list(generate(WORLD))
    start_ms = epoch_ms(WORLD.start.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    ms_of = [epoch_ms(e["event_time"]) for e in events]
    by_identity: dict[str, list[int]] = defaultdict(list)
    for k, e in enumerate(events):
        by_identity[e["identity"]].append(k)
    return Run(
        WORLD, events, plan_incidents(WORLD), [(t - start_ms) // 60_000 for t in ms_of], ms_of,
        by_identity,
    )  # fmt: skip


def test_world_events_are_valid_sorted_unique_and_attributed(world):
    events = world.events
    assert [(e["event_id"], p) for e in events if (p := contract_violations(e))] == []
    assert world.ms_of == sorted(world.ms_of)
    assert min(world.minute_of) >= 0 and max(world.minute_of) < WORLD.minutes
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["credential_id"].startswith("cred-") and e["source"] for e in events)
    credentials = defaultdict(set)
    for e in events:
        credentials[e["identity"]].add(e["credential_id"])
    assert all(len(c) == 1 for c in credentials.values())  # one stable credential each


def test_world_cost_follows_the_price_list_of_each_calls_model(world):
    for e in world.events[::7]:
        provider, price_in, price_out, _, _ = MODELS[e["model"]]
        expected = (e["input_tokens"] * price_in + e["output_tokens"] * price_out) / 1e6
        assert e["cost_usd"] == pytest.approx(expected, abs=1e-8)
        assert e["provider"] == provider


def test_world_is_deterministic_and_a_minute_rebuilds_on_its_own():
    cfg = SimConfig(
        identities=120, start=START, minutes=170, seed=3, incidents=len(ALL_INCIDENT_KINDS),
        incident_kinds=ALL_INCIDENT_KINDS, traps=True,
    )  # fmt: skip
    first = [orjson.dumps(e) for e in generate(cfg)]
    assert first == [orjson.dumps(e) for e in generate(cfg)]
    assert first != [orjson.dumps(e) for e in generate(SimConfig(**{**vars(cfg), "seed": 4}))]
    events = [orjson.loads(line) for line in first]
    for minute in (0, 95, 169):
        mine = [e for e in events if run_minute(e, cfg) == minute]
        first_seq = int(mine[0]["event_id"].split("-")[1])
        assert generate_minute(SimPlan(cfg), minute, first_seq) == mine


def test_kinds_are_assigned_round_robin_with_their_own_durations(world):
    counts = Counter(i.kind for i in world.incidents)
    assert counts == dict.fromkeys(ALL_INCIDENT_KINDS, 2)
    assert len({i.identity for i in world.incidents}) == len(world.incidents)
    for incident in world.incidents:
        first, end = world.window(incident)
        expected = {"slow_ramp": 90, "budget_burn": 120}.get(incident.kind, WORLD.incident_minutes)
        assert end - first == expected, incident
        assert first >= (60 if incident.kind == "offboarded" else WORLD.incident_after_minutes)
        assert end <= WORLD.minutes


def test_runaway_agent_still_calls_ten_times_its_rate_without_flooding_its_callees(world):
    callee_spans_checked = 0
    for incident in world.kind("runaway_agent"):
        first, end = world.window(incident)
        counts = world.counts(incident.identity)
        assert statistics.median(counts[first:end]) >= 10 * max(
            1, statistics.median(counts[:first])
        )
        # Its extra calls are LLM calls of a stuck loop, not agent executions: no extra children.
        children = Counter(
            world.minute_of[k]
            for k, e in enumerate(world.events)
            if e.get("caller_identity") == incident.identity and "parent_span_id" in e
        )
        if sum(children[m] for m in range(first)):
            callee_spans_checked += 1
            before = sum(children[m] for m in range(first)) / first
            during = sum(children[m] for m in range(first, end)) / (end - first)
            assert during <= 3 * before + 1, (incident, before, during)
    assert callee_spans_checked  # the run has a runaway agent that calls other agents


def test_retry_loop_hammers_one_fingerprint_steadily_and_mostly_failing(world):
    for incident in world.kind("retry_loop"):
        first, end = world.window(incident)
        inside = world.of(incident.identity, first, end)
        fingerprint, _ = Counter(e["request_fingerprint"] for e in inside).most_common(1)[0]
        loop = [e for e in inside if e["request_fingerprint"] == fingerprint]
        per_minute = Counter(run_minute(e, WORLD) for e in loop)
        assert min(per_minute[m] for m in range(first, end)) >= 20, incident
        errors = [e for e in loop if e["status"] == "error"]
        assert len(errors) >= 0.7 * len(loop)
        assert all(e.get("error_type") and e["output_tokens"] == 0 for e in errors)
        sizes = Counter(e["input_tokens"] for e in loop)
        size, repeats = sizes.most_common(1)[0]
        assert size <= 500 and repeats >= 0.7 * len(loop)  # the same small request every time
        gaps = [b - a for a, b in itertools.pairwise(epoch_ms(e["event_time"]) for e in loop)]
        third = len(gaps) // 3
        assert statistics.median(gaps[-third:]) <= 1.3 * statistics.median(gaps[:third])
        assert max(gaps) <= 3 * statistics.median(gaps)  # no backoff: gaps never widen
        assert any(e["request_fingerprint"] != fingerprint for e in inside)  # normal calls go on
        earlier = Counter(
            (run_minute(e, WORLD), e["request_fingerprint"])
            for e in world.of(incident.identity, 0, first)
            if e["status"] == "error"
        )
        assert max(earlier.values(), default=0) < 14  # nothing like it before


def test_slow_ramp_grows_smoothly_to_several_times_the_rate_without_a_step(world):
    for incident in world.kind("slow_ramp"):
        first, end = world.window(incident)
        counts = world.counts(incident.identity)
        blocks = [sum(counts[m : m + 15]) for m in range(first, end, 15)]
        before = sum(counts[first - 15 : first])
        assert blocks[-1] >= 2.5 * before, (incident, before, blocks)
        assert blocks[0] <= 1.6 * before  # no step at the start
        steps = [b / a for a, b in itertools.pairwise(blocks)]
        assert min(steps) >= 0.8 and max(steps) <= 1.8, steps  # every quarter hour a little more
        assert sum(counts[end : end + 15]) <= 0.6 * blocks[-1]  # over when the key is revoked


def trace_facts(spans: list[dict]) -> tuple[int, bool, int]:
    """(depth, an identity repeats along some parent chain, most children of one span)."""
    by_span = {s["span_id"]: s for s in spans}
    depth, repeated = 0, False
    for span in spans:
        seen, current, length = {span["identity"]}, span, 1
        while "parent_span_id" in current:
            current = by_span[current["parent_span_id"]]
            repeated |= current["identity"] in seen
            seen.add(current["identity"])
            length += 1
        depth = max(depth, length)
    children = Counter(s["parent_span_id"] for s in spans if "parent_span_id" in s)
    return depth, repeated, max(children.values(), default=0)


@pytest.fixture(scope="module")
def traces(world) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for e in world.events:
        if "trace_id" in e:
            out[e["trace_id"]].append(e)
    return out


def root_of(spans: list[dict]) -> dict:
    roots = [s for s in spans if "parent_span_id" not in s]
    assert len(roots) == 1
    return roots[0]


def in_chain_incident(world: Run, root: dict) -> bool:
    return any(
        i.identity == root["identity"] and i.start <= parse(root["event_time"]) < i.end
        for i in world.kind("agent_chain")
    )


def test_traces_are_well_formed_and_only_agents_carry_them(world, traces):
    for spans in traces.values():
        by_span = {s["span_id"]: s for s in spans}
        root = root_of(spans)
        assert root["identity"].startswith("agent-")
        for span in spans:
            assert span["identity"].startswith("agent-") and span["caller_identity"]
            if span is not root:
                parent = by_span[span["parent_span_id"]]
                assert span["caller_identity"] == parent["identity"]
                assert parse(span["event_time"]) >= parse(parent["event_time"])


def test_normal_agent_chains_are_shallow_acyclic_and_reach_depth_four(world, traces):
    depths: Counter[int] = Counter()
    for spans in traces.values():
        if in_chain_incident(world, root_of(spans)):
            continue
        depth, repeated, fan_out = trace_facts(spans)
        assert depth <= 4 and not repeated and fan_out <= 3, spans
        depths[depth] += 1
    assert depths[1] and depths[2] and depths[3] and depths[4] >= 100  # deep chains are normal


def test_agent_chain_loops_deep_fans_out_on_new_edges_and_costs_ten_times(world, traces):
    normal_edges, normal_cost = set(), defaultdict(list)
    loops = defaultdict(list)
    for spans in traces.values():
        root = root_of(spans)
        edges = {(s["caller_identity"], s["identity"]) for s in spans if s is not root}
        if in_chain_incident(world, root):
            loops[root["identity"]].append((spans, edges))
        else:
            normal_edges |= edges
            normal_cost[root["identity"]].append(sum(s["cost_usd"] for s in spans))
    for incident in world.kind("agent_chain"):
        first, _ = world.window(incident)
        before = [s for s in traces.values() if root_of(s)["identity"] == incident.identity]
        before = [s for s in before if run_minute(root_of(s), WORLD) < first]
        assert before and all(trace_facts(s)[0] <= 4 for s in before)  # its usual traces
        deep = [(s, e) for s, e in loops[incident.identity] if trace_facts(s)[0] >= 8]
        assert len(deep) >= incident_minutes(incident), incident
        usual = statistics.median(normal_cost[incident.identity])
        for spans, edges in deep:
            depth, repeated, fan_out = trace_facts(spans)
            assert depth <= 20 + 1 and repeated and fan_out >= 20
            assert edges - normal_edges  # caller -> callee pairs never seen in normal traffic
            assert sum(s["cost_usd"] for s in spans) >= 10 * usual
        bystanders = incident_bystanders(WORLD)[incident]
        assert bystanders and incident.identity not in bystanders


def incident_minutes(incident: Incident) -> int:
    return (incident.end - incident.start) // timedelta(minutes=1)


def price_per_token(model: str) -> float:
    return MODELS[model][1] + MODELS[model][2]


def test_drift_model_moves_to_a_much_pricier_model_only_inside_its_window(world):
    for incident in world.kind("drift_model"):
        first, end = world.window(incident)
        before = Counter(e["model"] for e in world.of(incident.identity, 0, first))
        assert len(before) == 1
        usual = next(iter(before))
        inside = world.of(incident.identity, first, end)
        drifted = {e["model"] for e in inside}
        assert len(drifted) == 1 and usual not in drifted
        assert price_per_token(drifted.pop()) >= 3 * price_per_token(usual)
        assert {e["model"] for e in world.of(incident.identity, end)} <= {usual}
        rate_before = sum(before.values()) / first
        assert 0.5 * rate_before <= len(inside) / (end - first) <= 2 * rate_before  # same rate


def test_drift_workload_uses_the_same_credential_from_a_new_workload_and_source(world):
    for incident in world.kind("drift_workload"):
        first, end = world.window(incident)
        before = world.of(incident.identity, 0, first)
        workloads, sources = {e["workload"] for e in before}, {e["source"] for e in before}
        assert len(workloads) == 1
        new = [e for e in world.of(incident.identity, first, end) if e["workload"] not in workloads]
        assert new and all(e["source"] not in sources for e in new)
        assert len({e["credential_id"] for e in before + new}) == 1
        rate_before = len(before) / first
        assert 0.2 * rate_before <= len(new) / (end - first) <= 2 * rate_before  # moderate
        assert all(e["workload"] in workloads for e in world.of(incident.identity, end))


def test_offboarded_identity_is_silent_then_calls_again_during_its_window(world):
    listed = offboarded_identities(WORLD)
    assert listed == sorted(listed) == offboarded_identities(WORLD)
    for incident in world.kind("offboarded"):
        first, end = world.window(incident)
        assert incident.identity in listed
        assert first >= 60 and world.of(incident.identity, 0, first) == []
        assert len(world.of(incident.identity, first, end)) >= 0.2 * (end - first)
        assert world.of(incident.identity, end) == []
    quiet = set(listed) - {i.identity for i in world.incidents}
    assert quiet and all(name not in world.by_identity for name in quiet)  # listed, never call


def daily_spend(world: Run, identity: str) -> list[tuple[datetime, float]]:
    """(event time, spend so far that UTC day) per event of the identity."""
    out, total, day = [], 0.0, None
    for e in world.of(identity):
        at = parse(e["event_time"])
        if at.date() != day:
            total, day = 0.0, at.date()
        total += e["cost_usd"]
        out.append((at, total))
    return out


def test_budget_burn_crosses_its_daily_budget_inside_its_window(world):
    limits = budgets(WORLD)
    for incident in world.kind("budget_burn"):
        crossing = next(
            at
            for at, total in daily_spend(world, incident.identity)
            if total > limits[incident.identity]
        )
        assert incident.start + timedelta(minutes=15) <= crossing < incident.end, incident
        first, end = world.window(incident)
        before = world.of(incident.identity, first - 60, first)
        inside = world.of(incident.identity, first, end)
        spend_before = sum(e["cost_usd"] for e in before) / 60
        spend_inside = sum(e["cost_usd"] for e in inside) / (end - first)
        assert spend_inside >= 3 * spend_before  # sustained, several times the usual spend


def test_normal_identities_stay_well_under_their_budget(world):
    limits = budgets(WORLD)
    assert set(limits) == {p.name for p in plan_identities(WORLD)}
    assert all(limit > 0 for limit in limits.values())
    involved = {i.identity for i in world.incidents}
    involved |= {b for names in incident_bystanders(WORLD).values() for b in names}
    shares = [
        daily_spend(world, name)[-1][1] / limits[name]
        for name in world.by_identity
        if name not in involved
    ]
    assert max(shares) <= 0.6 and 0.2 <= statistics.median(shares) <= 0.45


def test_budgets_follow_the_profile_not_the_random_draw():
    assert budgets(small(seed=1)) == budgets(small(seed=1))
    cheap = SimConfig(start=START, minutes=60, incidents=0)
    longer = SimConfig(start=START, minutes=240, incidents=0)
    ratio = {k: budgets(longer)[k] / v for k, v in budgets(cheap).items()}
    assert all(3 < r < 5 for r in ratio.values())  # four times the hours, four times the budget


def test_traps_cold_starts_appear_mid_run_with_ordinary_rates():
    def first_minutes(share: float) -> dict[str, int]:
        cfg = SimConfig(
            identities=200, start=START, minutes=120, incidents=0, traps=True,
            cold_start_share=share,
        )  # fmt: skip
        first: dict[str, int] = {}
        for e in generate(cfg):
            first.setdefault(e["identity"], run_minute(e, cfg))
        return first

    rates = {p.name: p.rate_per_min for p in plan_identities(small(identities=200))}
    late = {n: m for n, m in first_minutes(0.1).items() if m >= 12 and rates[n] >= 1}
    assert len(late) >= 5
    assert not [n for n, m in first_minutes(0.0).items() if m >= 12 and rates[n] >= 1]


def test_traps_backoff_retries_widen_their_gaps_then_succeed(world):
    attempts = defaultdict(list)
    for k, e in enumerate(world.events):
        attempts[(e["identity"], e["request_fingerprint"], e["input_tokens"])].append(k)
    sequences = 0
    for ks in attempts.values():
        if not 3 <= len(ks) <= 6 or world.ms_of[ks[-1]] - world.ms_of[ks[0]] > 40_000:
            continue
        calls = [world.events[k] for k in ks]
        if not all(c["status"] == "error" for c in calls[:-1]) or calls[-1]["status"] != "ok":
            continue
        gaps = [world.ms_of[b] - world.ms_of[a] for a, b in itertools.pairwise(ks)]
        assert 800 <= gaps[0] <= 1200, gaps
        assert all(1.6 <= b / a <= 2.5 for a, b in itertools.pairwise(gaps)), gaps
        sequences += 1
    assert sequences >= 20


def test_traps_deploys_double_traffic_for_an_hour_after_a_gradual_ramp(world):
    plan = SimPlan(WORLD)
    deploys = plan.world.deploys
    assert len(deploys) >= 3
    names = [p.name for p in plan.profiles]
    # Each deploying identity's calls over its daily rhythm and its own level outside the
    # deploy, aligned on the start of the ramp.
    aligned = defaultdict(list)
    for index, first in deploys:
        counts = world.counts(names[index])
        level = {
            m - first: counts[m] / plan.shape(plan.start_ms + m * 60_000)[index]
            for m in range(max(0, first - 40), min(WORLD.minutes, first + 110))
        }
        outside = statistics.mean(v for t, v in level.items() if t < 0 or t >= 90)
        for t, v in level.items():
            aligned[t].append(v / outside)

    def mean(*spans: range) -> float:
        return statistics.mean(c for span in spans for t in span for c in aligned[t])

    assert 1.6 <= mean(range(10, 70)) <= 2.5  # about twice the usual level for an hour
    assert mean(range(4)) <= 0.75 * mean(range(10, 70))  # after a gradual ramp
    assert mean(range(80, 110)) <= 1.3  # then back to normal


def test_traps_some_identities_legitimately_use_a_premium_model(world):
    involved = {i.identity for i in world.incidents}
    premium = {
        e["identity"]
        for e in world.events
        if e["model"] in ("claude-opus-4", "gemini-2.5-pro") and e["identity"] not in involved
    }
    assert premium
    for name in premium:
        assert {e["model"] for e in world.of(name)} == {world.of(name)[0]["model"]}


def test_a_run_too_short_for_a_long_kind_is_rejected():
    with pytest.raises(ValueError, match=r"no room.*slow_ramp"):
        SimConfig(start=START, minutes=100, incident_kinds=("slow_ramp",))
    with pytest.raises(ValueError, match=r"no room.*offboarded"):
        SimConfig(start=START, minutes=70, incident_kinds=("offboarded",))


def test_cold_start_share_must_be_a_fraction():
    with pytest.raises(ValueError, match="cold_start_share"):
        SimConfig(start=START, cold_start_share=1.0)


def test_a_population_without_an_entry_agent_cannot_host_an_agent_chain():
    with pytest.raises(ValueError, match="agent_chain"):
        plan_incidents(small(identities=200, incidents=30, incident_kinds=("agent_chain",)))
