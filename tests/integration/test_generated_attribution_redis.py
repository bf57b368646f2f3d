"""Showback, root-caller cost and team budgets on a generated world, through the real pipeline
and a real Redis (issue 12, item 6).

A small evaluation world (teams, an identity registry with identities left out and moved to
another team, agents calling agents down the call graph and in loops) is delivered with
faults (streams/simulation/delivery_faults.py): redeliveries, some with other figures; a late
flush under new ids; traces whose spans arrive children first, some after the run's end. Then:

* every team, business-unit, environment and identity roll-up equals what the events say under
  the registry, and each team's equals the sum of its identities' (the evaluate check, and
  recomputed here on its own);
* every root identity's cost driven equals the known root costs of the generated chains;
* a budget on a generated team warns once at each fraction and blocks each member at the cap.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from meterguard.models import Alert, ThrottleCommand
from meterguard.streams.evaluation.attribution_run import replay_and_check
from meterguard.streams.offline.replay import ReplayOutputs
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.policy.group_budgets import (
    CAP_MARK,
    GROUP_DETECTOR,
    GroupPeriod,
    alert_id,
    fraction_mark,
    period_of,
)
from meterguard.streams.settings import Settings
from meterguard.streams.simulation.chains import ChainLabel, ChainLedger, root_costs
from meterguard.streams.simulation.config import SimConfig
from meterguard.streams.simulation.delivery_faults import FaultLog, with_faults
from meterguard.streams.simulation.registry_plan import PopulationRegistry, population_registry
from meterguard.streams.simulation.simulate import generate
from meterguard.streams.simulation.traffic import write_jsonl
from meterguard.streams.store import build_store
from meterguard.timeutil import to_ms

pytestmark = pytest.mark.integration
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
CFG = SimConfig(
    identities=40,
    start=START,
    minutes=90,
    seed=5,
    incidents=2,
    incident_kinds=("agent_chain", "runaway_agent"),
    incident_after_minutes=20,
    traps=True,
)
BATCH = 500  # spans of one trace land in different batches, and late


@cache
def world() -> tuple[list[dict[str, Any]], list[ChainLabel], PopulationRegistry, FaultLog]:
    ledger = ChainLedger()
    events = list(ledger.observe(generate(CFG)))
    delivered, log = with_faults(events, CFG.seed)
    return delivered, ledger.labels(), population_registry(CFG), log


def files(tmp_path: Path) -> Settings:
    delivered, _, population, _ = world()
    (tmp_path / "registry.yaml").write_text(population.to_yaml())
    write_jsonl(delivered, tmp_path / "events.jsonl", lambda n: None)
    return Settings(registry_file=str(tmp_path / "registry.yaml"), policy_file=None)


def children_first(delivered: list[dict[str, Any]]) -> set[str]:
    """The traces with a span delivered before its parent span."""
    seen: set[tuple[str, str]] = set()
    early: set[str] = set()
    for e in delivered:
        if e.get("parent_span_id") and (e["trace_id"], e["parent_span_id"]) not in seen:
            early.add(e["trace_id"])
        if e.get("span_id"):
            seen.add((e["trace_id"], e["span_id"]))
    return early


def nano(cost: Any) -> int:
    return int(Decimal(str(cost)) * 1_000_000_000)


def owned(population: PopulationRegistry) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Per team (the registry's, else the events'), the cost of the first delivery of each
    (identity, event id), and its identities."""
    delivered = world()[0]
    listed = population.registry.identities
    cost: dict[str, int] = defaultdict(int)
    members: dict[str, set[str]] = defaultdict(set)
    seen: set[tuple[str, str]] = set()
    for e in delivered:
        key = (e["identity"], e["event_id"])
        if key in seen:
            continue
        seen.add(key)
        entry = listed.get(e["identity"])
        team = entry.team if entry is not None and entry.team else e["team"]
        cost[team] += nano(e["cost_usd"])
        members[team].add(e["identity"])
    return dict(cost), dict(members)


def usage(row: Any) -> tuple[int, ...]:
    return (row.calls, row.input_tokens, row.output_tokens, row.cached_tokens,
            row.cost_nano_usd, row.errors)  # fmt: skip


async def test_rollups_and_root_costs_are_exact_with_faults(tmp_path: Path, redis_url: str):
    settings = files(tmp_path)
    _, labels, population, log = world()
    assert population.unregistered and population.moved
    assert log.held_spans > 0 and log.changed > 0
    # Loops of agents (A -> B -> A) among the traces whose spans arrive children first.
    assert {c.trace_id for c in labels if c.cycle} & children_first(world()[0])

    checked = await replay_and_check(
        tmp_path / "events.jsonl", None, settings, redis_url, labels,
        batch_size=BATCH, show_progress=False, keep_namespace=True,
    )  # fmt: skip

    stats = checked.summary.stats
    assert stats["events_duplicate"] == log.redelivered
    assert stats["events_late"] > log.flushed  # the flush and the held-back traces
    check = checked.attribution
    assert check.ok, check.mismatch_lines()
    assert all(t.checked > 0 and t.exact == t.checked for t in check.tallies)
    assert check.facts["moved"] == len(population.moved)
    assert check.facts["unregistered"] == len(population.unregistered)

    # The same, read and recomputed here on its own.
    client = aioredis.Redis.from_url(redis_url)
    try:
        store = build_store(client, settings.store_config(prefix=checked.summary.namespace))
        cost, members = owned(population)
        assert await store.rollups.values("team") == sorted(cost)
        for team, want in cost.items():
            rows = (await store.rollups.rows("team", team)).hours
            assert sum(r.cost_nano_usd for r in rows.values()) == want, team
            summed = [
                sum(
                    r.cost_nano_usd
                    for r in (await store.rollups.rows("identity", i)).hours.values()
                )
                for i in members[team]
            ]
            assert sum(summed) == want, team
        assert sorted(await store.rollups.unregistered()) == list(population.unregistered)
        known = root_costs(labels)
        assert await store.traces.driven_identities() == sorted(known)
        for root, want_usage in known.items():
            hours = await store.traces.driven(root)
            got = tuple(map(sum, zip(*(usage(r) for r in hours.values()), strict=True)))
            assert got == want_usage, root
    finally:
        await client.aclose()


def budgeted_team(population: PopulationRegistry) -> tuple[str, int, set[str]]:
    """The generated team with the most identities (one moved into it, if any is)."""
    cost, members = owned(population)
    moved_in = {new for _, new in population.moved.values()}
    team = max(members, key=lambda t: (t in moved_in, len(members[t]), t))
    return team, cost[team], members[team]


async def test_a_generated_teams_budget_warns_once_and_blocks_its_members(
    tmp_path: Path, redis_url: str
):
    settings = files(tmp_path)
    _, labels, population, _ = world()
    team, spent_nano, members = budgeted_team(population)
    assert len(members) >= 2
    limit = float(Decimal(spent_nano).scaleb(-9) * Decimal("0.6"))  # reached 60 % into the run
    policy = PolicyConfig.model_validate(
        {"group_budgets": {"team": {team: {
            "limit_usd": limit, "period": "day", "warn_at": [0.25, 0.5], "at_cap": "block",
        }}}}
    )  # fmt: skip
    outputs = ReplayOutputs(tmp_path / "alerts.jsonl", tmp_path / "throttles.jsonl")

    checked = await replay_and_check(
        tmp_path / "events.jsonl", outputs, settings, redis_url, labels,
        batch_size=BATCH, show_progress=False, policy=policy,
    )  # fmt: skip

    assert checked.attribution.ok  # a budget changes nothing in the roll-ups
    alerts = [Alert.model_validate_json(line) for line in outputs.alerts.read_bytes().splitlines()]
    commands = [
        ThrottleCommand.model_validate_json(line)
        for line in outputs.throttles.read_bytes().splitlines()
    ]
    group = GroupPeriod("team", team, period_of("day", to_ms(START)))
    want = [alert_id(group, m) for m in (fraction_mark(0.25), fraction_mark(0.5), CAP_MARK)]
    budget_alerts = [a for a in alerts if a.detector == GROUP_DETECTOR]
    assert [a.alert_id for a in budget_alerts] == want  # each once, in order
    assert {a.identity for a in budget_alerts} == {f"team:{team}"}
    assert [a.severity for a in budget_alerts] == ["warning", "warning", "critical"]
    blocks = [c for c in commands if c.alert_id == want[-1]]
    assert all(c.action == "block" for c in blocks)
    assert sorted(c.identity for c in blocks) == sorted(members)  # each member, once
    moved_out = {i for i, (old, new) in population.moved.items() if old == team and new != team}
    assert not moved_out & {c.identity for c in blocks}
