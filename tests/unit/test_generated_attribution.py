"""The generator's registry, agent-chain labels and delivery faults, and the attribution check's
pure side (streams/simulation/registry_plan.py, chains.py, delivery_faults.py;
streams/evaluation/attribution.py). The Redis side:
tests/integration/test_generated_attribution_redis.py.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from meterguard.models import MeteringEvent
from meterguard.streams.evaluation.attribution import (
    Observed,
    Recomputed,
    Rows,
    compare,
    pool,
    recompute,
)
from meterguard.streams.offline.reconcile import Rules
from meterguard.streams.policy.registry import Registry
from meterguard.streams.simulation.chains import ChainLabel, ChainLedger, root_costs
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.delivery_faults import with_faults
from meterguard.streams.simulation.profiles import TEAM_BUSINESS_UNITS, TEAMS, plan_identities
from meterguard.streams.simulation.registry_plan import population_registry
from meterguard.streams.simulation.simulate import generate
from meterguard.streams.store.traces import MAX_TRACE_HOPS
from meterguard.streams.tools.cli import cli
from tests.support.agent_chains import expected_driven

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
RULES = Rules(30_000, 48 * 3_600_000, 24 * 60, 7 * 86_400_000)
HOUR = 3_600_000


def world(seed: int = 5, **overrides: Any) -> SimConfig:
    fields: dict[str, Any] = {
        "identities": 40,
        "start": START,
        "minutes": 60,
        "seed": seed,
        "incidents": 2,
        "incident_kinds": ("agent_chain",),
        "incident_after_minutes": 15,
        "traps": True,
    } | overrides
    return SimConfig(**fields)


@cache
def events_of(seed: int) -> tuple[dict[str, Any], ...]:
    return tuple(generate(world(seed)))


# the registry


def test_the_registry_lists_the_population_with_a_few_left_out_and_a_few_moved():
    cfg = world()
    made = population_registry(cfg)
    assert made == population_registry(cfg)  # deterministic
    people = {p.name: p for p in plan_identities(cfg)}
    listed = made.registry.identities
    assert made.unregistered and made.moved
    assert set(listed) | set(made.unregistered) == set(people)
    assert not set(listed) & set(made.unregistered)
    for name, entry in listed.items():
        own = people[name]
        if name in made.moved:
            assert made.moved[name] == (own.team, entry.team) and entry.team != own.team
        else:
            assert entry.team == own.team
        assert entry.team in TEAMS
        assert entry.business_unit == TEAM_BUSINESS_UNITS[entry.team]
        assert (entry.environment, entry.workload) == (own.environment, own.workload)
        assert entry.owner == f"{entry.team}-oncall@example.com"


def test_the_registry_file_loads_as_meterguard_reads_it(tmp_path: Path):
    made = population_registry(world())
    path = tmp_path / "registry.yaml"
    path.write_text(made.to_yaml())
    assert Registry.load(path) == made.registry
    for name in made.unregistered:
        assert f"#   {name}" in path.read_text()


def test_the_wide_world_has_a_registry_too():
    made = population_registry(world(world="wide", identities=40, incidents=0, minutes=30,
                                     incident_kinds=("runaway_agent",)))  # fmt: skip
    assert len(made.registry.identities) + len(made.unregistered) == 40
    assert {e.environment for e in made.registry.identities.values()} == {"prod"}


# the chains' known root costs


def span(trace: str, span_id: str, parent: str | None, identity: str, cost: float) -> dict:
    event: dict[str, Any] = {
        "event_id": f"{trace}/{span_id}", "identity": identity,
        "event_time": "2025-01-06T09:00:00.000Z", "trace_id": trace, "span_id": span_id,
        "input_tokens": 10, "output_tokens": 5, "cost_usd": cost,
    }  # fmt: skip
    if parent is not None:
        event["parent_span_id"] = parent
    return event


def test_a_cycle_back_to_the_root_is_its_own_cost_and_order_does_not_matter():
    spans = [
        span("t1", "a", None, "agent-a", 0.5),
        span("t1", "b", "a", "agent-b", 0.25),
        span("t1", "a2", "b", "agent-a", 0.125),  # A -> B -> A: A's own
        span("t1", "c", "a2", "agent-c", 0.0625),
        span("t1", "b2", "a", "agent-b", 0.03125),
    ]
    for order in (spans, spans[::-1]):
        ledger = ChainLedger()
        for event in order:
            ledger.add(event)
        ledger.add({**spans[1], "cost_usd": 99.0})  # a redelivered span: the first one counts
        (label,) = ledger.labels()
        assert (label.root, label.spans, label.depth, label.cycle) == ("agent-a", 5, 3, True)
        assert label.root_own_spans == 1
        assert label.driven == (3, 30, 15, 0, 343_750_000, 0)
        assert str(label.driven_cost_usd) == "0.343750000"
        assert ChainLabel.from_dict(orjson.loads(orjson.dumps(label.to_dict()))) == label


def test_a_trace_without_its_root_span_has_nothing_to_credit():
    ledger = ChainLedger()
    ledger.add(span("t2", "x", "never-sent", "agent-b", 0.1))
    ledger.add(span("t2", "y", "x", "agent-c", 0.1))
    (label,) = ledger.labels()
    assert label.root is None and label.driven[0] == 0
    assert root_costs([label]) == {}


def test_generated_chains_carry_the_root_costs_the_spans_imply():
    events = events_of(5)
    ledger = ChainLedger()
    for event in events:
        ledger.add(event)
    labels = ledger.labels()
    assert sum(c.cycle for c in labels) > 0  # the agent_chain incidents loop
    assert all(c.root is not None for c in labels)  # every generated trace has its root span
    assert max(c.depth for c in labels) < MAX_TRACE_HOPS
    # Independently (tests/support/agent_chains.py walks parents on MeteringEvents).
    traced = [MeteringEvent.model_validate(e) for e in events if e.get("trace_id")]
    by_hour = expected_driven(traced, MAX_TRACE_HOPS)
    want = {
        root: tuple(map(sum, zip(*hours.values(), strict=True))) for root, hours in by_hour.items()
    }
    assert root_costs(labels) == want
    assert len(want) >= 3


def test_the_classic_worlds_traced_calls_have_no_root():
    ledger = ChainLedger()
    for event in generate(world(traps=False, incident_kinds=("runaway_agent",))):
        ledger.add(event)
    labels = ledger.labels()
    assert labels and all(c.root is None for c in labels)


# delivery faults


def test_faults_redeliver_flush_and_reorder_but_lose_nothing():
    events = list(events_of(5))
    delivered, log = with_faults(events, 5)
    assert delivered == with_faults(events, 5)[0]  # deterministic
    assert log.redelivered and log.changed and log.flushed and log.held_traces
    assert len(delivered) == len(events) + log.redelivered + log.flushed
    ids = Counter((e["identity"], e["event_id"]) for e in delivered)
    assert all(ids[(e["identity"], e["event_id"])] >= 1 for e in events)
    assert sum(n - 1 for n in ids.values()) == log.redelivered
    first = {}
    for e in delivered:
        first.setdefault((e["identity"], e["event_id"]), e)
    for e in events:  # each event's first delivery is the generated one...
        assert first[(e["identity"], e["event_id"])] == e
    # ... other figures only ever on untraced redeliveries; flushed copies are untraced.
    original = {(e["identity"], e["event_id"]): e for e in events}
    key = lambda e: (e["identity"], e["event_id"])  # noqa: E731
    other = [e for e in delivered if key(e) in original and e != original[key(e)]]
    assert len(other) == log.changed and all("trace_id" not in e for e in other)
    flushed = [e for e in delivered if e["event_id"].startswith("flush-")]
    assert len(flushed) == log.flushed and all("trace_id" not in e for e in flushed)
    # Children before their roots: some spans arrive before their parent span.
    seen: set[tuple[str, str]] = set()
    early = 0
    for e in delivered:
        parent = e.get("parent_span_id")
        if parent and (e["trace_id"], parent) not in seen:
            early += 1
        if e.get("span_id"):
            seen.add((e["trace_id"], e["span_id"]))
    assert early >= log.held_traces


# the comparison


def test_recompute_follows_the_registry_dedupe_and_lateness():
    registry = Registry.model_validate(
        {"identities": {"a": {"team": "pay", "business_unit": "fin"}, "b": {"team": "pay"}}}
    )
    at = START
    raw = [
        {"event_id": "1", "identity": "a", "event_time": at, "team": "x", "cost_usd": 1},
        {"event_id": "1", "identity": "a", "event_time": at, "cost_usd": 50},  # first wins
        {"event_id": "1", "identity": "b", "event_time": at, "cost_usd": 2},  # another identity
        {"event_id": "2", "identity": "c", "event_time": at, "team": "x", "cost_usd": 4},
        {"event_id": "3", "identity": "a", "event_time": at + timedelta(minutes=5), "cost_usd": 8},
        {"event_id": "4", "identity": "a", "event_time": at, "cost_usd": 16},  # late
        {"identity": "broken"},
    ]
    got = recompute(raw, registry, RULES)
    hour = int(at.timestamp() * 1000) // HOUR
    assert (got.events, got.duplicates, got.late, got.invalid) == (5, 1, 1, 1)
    assert got.groups[("team", "pay")].total()[4] == 27 * 10**9
    assert got.groups[("team", "pay")].late == {hour: (1, 0, 0, 0, 16 * 10**9, 0)}
    assert got.groups[("team", "x")].total()[4] == 4 * 10**9  # c is unregistered
    assert got.groups[("business_unit", "")].total()[4] == 6 * 10**9  # b and c: unassigned
    assert got.unregistered == {"c"} and got.moved == {"a"}
    assert got.members[("team", "pay")] == {"a", "b"}


def observed_as(want: Recomputed, labels: list[ChainLabel]) -> Observed:
    return Observed(
        groups={k: Rows(dict(r.hours), dict(r.late)) for k, r in want.groups.items()},
        identities={k: Rows(dict(r.hours), dict(r.late)) for k, r in want.identities.items()},
        unregistered=set(want.unregistered),
        driven=root_costs(labels),
    )


def test_compare_counts_exact_groups_and_describes_mismatches():
    events = list(events_of(5))
    registry = population_registry(world()).registry
    want = recompute(events, registry, RULES)
    ledger = ChainLedger()
    for event in events:
        ledger.add(event)
    labels = ledger.labels()
    check = compare(want, observed_as(want, labels), labels)
    assert check.ok and all(t.checked and t.exact == t.checked for t in check.tallies)
    assert check.facts["moved"] and check.facts["unregistered"] and check.facts["cycle_traces"]
    # One team short by a nano-dollar, a root credited twice, an unregistered one missing.
    got = observed_as(want, labels)
    team = next(k for k in got.groups if k[0] == "team")
    hour, row = next(iter(got.groups[team].hours.items()))
    got.groups[team].hours[hour] = (*row[:4], row[4] - 1, row[5])
    root = next(iter(got.driven))
    got.driven[root] = tuple(2 * v for v in got.driven[root])  # type: ignore[assignment]
    got.unregistered.pop()
    bad = compare(want, got, labels)
    by_check = {t.check: t for t in bad.tallies}
    assert not bad.ok
    assert by_check["team"].mismatch == 1 and by_check["team_sum"].mismatch == 1
    assert by_check["root_cost"].mismatch == 1 and by_check["unregistered"].mismatch == 1
    assert by_check["identity"].mismatch == 0
    assert team[1] in by_check["team"].examples[0]
    assert by_check["team_sum"].label == "team = Σ its identities"
    doc = bad.to_dict()
    assert doc["ok"] is False and doc["checks"][0]["check"] == "team"
    pooled = pool([check, bad])
    assert pooled is not None and not pooled.ok
    assert pooled.facts["events"] == 2 * want.events


# the command line


def test_simulate_writes_the_registry_the_chains_and_a_faulty_stream(tmp_path: Path):
    out, reg, chains = tmp_path / "e.jsonl", tmp_path / "r.yaml", tmp_path / "c.jsonl"
    args = [
        "simulate", "--out", str(out), "--identities", "30", "--minutes", "40", "--seed", "4",
        "--traps", "--kinds", "agent_chain", "--incidents", "1", "--incident-after", "15",
        "--start", "2025-01-06T09:00:00Z", "--registry-out", str(reg), "--chains-out",
        str(chains), "--faults",
    ]  # fmt: skip
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    registry = Registry.load(reg)
    assert 25 <= len(registry.identities) < 30
    labels = [ChainLabel.from_dict(orjson.loads(line)) for line in chains.read_bytes().splitlines()]
    assert any(c.cycle for c in labels) and all(c.root for c in labels)
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert any(e["event_id"].startswith("flush-") for e in lines)
    assert len({(e["identity"], e["event_id"]) for e in lines}) < len(lines)
    bad = CliRunner().invoke(cli, ["simulate", "--faults", "--minutes", "5", "--incidents", "0"])
    assert bad.exit_code == 2


def test_simulate_refuses_unknown_kinds():
    done = CliRunner().invoke(cli, ["simulate", "--out", "/dev/null", "--kinds", "nonsense"])
    assert done.exit_code == 2
