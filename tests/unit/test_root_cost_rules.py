"""Root-caller attribution's pure parts: the agent-chain alert naming the chain's root and
cost, span facts reaching the detector, the packed credit rows, and the tests' own oracle."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from meterguard.detectors.agent_chain import AgentChainDetector, usd
from meterguard.detectors.features import EventFacts, MinuteWindow
from meterguard.models import MeteringEvent
from meterguard.streams.runtime.event_facts import event_facts
from meterguard.streams.store.driven import Credit, parse_credits
from meterguard.streams.store.traces import SpanLink, SpanPlace
from tests.support.agent_chains import expected_driven, span

T0 = 29_000_040  # an epoch minute


def facts(minute: int, **over: object) -> EventFacts:
    base: dict[str, object] = dict(
        time_ms=minute * 60_000, minute=minute, is_error=False, caller="agent-a", depth=1
    )
    return EventFacts(**{**base, **over})  # type: ignore[arg-type]


def warm() -> AgentChainDetector:
    detector = AgentChainDetector()
    for m in range(70):
        detector.observe_one(facts(T0 + m, trace_root="agent-a", trace_cost_nano_usd=10**7))
        detector.score_one(MinuteWindow(T0 + m, calls=1))
        detector.learn_one(MinuteWindow(T0 + m, calls=1))
    return detector


def loop_minute(detector: AgentChainDetector, minute: int) -> None:
    for k in range(3):  # a cheap loop rooted at agent-a, then a costlier one rooted at root-x
        detector.observe_one(
            facts(
                minute,
                caller="agent-c",
                depth=3 + k,
                cycle=True,
                trace_root="agent-a",
                trace_id="t-cheap",
                trace_cost_nano_usd=(k + 1) * 10**8,
            )
        )
    detector.observe_one(
        facts(
            minute,
            caller="agent-c",
            depth=9,
            cycle=True,
            trace_root="root-x",
            trace_id="t-dear",
            trace_cost_nano_usd=2_500_000_000,
        )
    )


def test_the_alert_names_the_costliest_chains_root_and_its_cost() -> None:
    detector = warm()
    minute = T0 + 70
    loop_minute(detector, minute)
    verdict = detector.score_one(MinuteWindow(minute, calls=4))
    assert verdict.score >= 0.95  # four cycles: a loop
    assert verdict.evidence["root_identity"] == "root-x"
    assert verdict.evidence["trace_id"] == "t-dear"
    assert verdict.evidence["chain_cost_usd"] == 2.5
    assert verdict.reason.endswith("chain started by 'root-x', its trace's cost so far $2.50")
    detector.learn_one(MinuteWindow(minute, calls=4))
    quiet = detector.score_one(MinuteWindow(minute + 1, calls=1))
    assert "root_identity" not in quiet.evidence  # reported once, with its minute


def test_an_unknown_root_is_said_so_and_a_known_one_wins_a_tie() -> None:
    detector = warm()
    minute = T0 + 70
    for root in (None, "agent-a"):
        detector.observe_one(
            facts(minute, depth=12, trace_root=root, trace_id="t", trace_cost_nano_usd=5 * 10**7)
        )
    assert detector.score_one(MinuteWindow(minute)).evidence["root_identity"] == "agent-a"
    detector.learn_one(MinuteWindow(minute))
    detector.observe_one(facts(minute + 1, depth=12, trace_id="t2", trace_cost_nano_usd=7))
    verdict = detector.score_one(MinuteWindow(minute + 1))
    assert verdict.evidence["root_identity"] is None
    assert "chain root not known yet, its trace's cost so far $7e-09" in verdict.reason


def test_ordinary_calls_and_calls_without_a_trace_name_no_chain() -> None:
    detector = warm()
    minute = T0 + 70
    detector.observe_one(facts(minute, trace_root="agent-a", trace_cost_nano_usd=10**7))
    detector.observe_one(facts(minute, depth=None, caller="stranger"))  # a new edge, no trace
    verdict = detector.score_one(MinuteWindow(minute, calls=2))
    assert verdict.score > 0 and "new caller" in verdict.reason
    assert "root_identity" not in verdict.evidence and "chain" not in verdict.reason


def test_the_chain_survives_a_checkpoint_and_old_checkpoints_load() -> None:
    detector = warm()
    loop_minute(detector, T0 + 70)
    restored = AgentChainDetector.from_state(detector.to_state())
    window = MinuteWindow(T0 + 70, calls=4)
    assert restored.score_one(window) == detector.score_one(window)
    older = detector.to_state()
    del older["chain"]  # a checkpoint written before the chain was kept
    assert AgentChainDetector.from_state(older).chain is None


def test_usd_reads_well_at_every_scale() -> None:
    assert [usd(n) for n in (0, 4_000, 123_456_789, 2_500_000_000, 12_345_678_900_000)] == [
        "$0", "$4e-06", "$0.123", "$2.50", "$12,345.68",
    ]  # fmt: skip


def test_event_facts_carry_the_spans_place_and_trace() -> None:
    event = MeteringEvent(
        event_id="e",
        identity="agent-b",
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        trace_id="t1",
        span_id="s1",
        parent_span_id="s0",
        caller_identity="agent-a",
    )
    placed = event_facts(event, SpanPlace(2, True, "agent-a", 3, 1_500))
    assert (placed.depth, placed.cycle, placed.fanout) == (2, True, 3)
    assert (placed.trace_root, placed.trace_id, placed.trace_cost_nano_usd) == (
        "agent-a",
        "t1",
        1500,
    )
    unplaced = event_facts(event)
    assert (unplaced.depth, unplaced.trace_id, unplaced.trace_root) == (None, None, None)


def test_a_span_packs_its_usage_as_one_roll_up_call() -> None:
    link = SpanLink("t", "s", None, "a", 40, hour=9, input_tokens=1, output_tokens=2,
                    cached_tokens=3, errors=1)  # fmt: skip
    assert link.row == "1,1,2,3,40,1"
    assert parse_credits("t", "s1\tagent-a\t9\t1,1,2,3,40,1\ns2\tagent-a\t10\t1,0,0,0,5,0\n") == [
        Credit("t", "s1", "agent-a", 9, "1,1,2,3,40,1"),
        Credit("t", "s2", "agent-a", 10, "1,0,0,0,5,0"),
    ]
    assert parse_credits("t", "") == []
    assert Credit("t", "s", "a", 1, "1,0,0,0,77,0").cost_nano_usd == 77


def test_the_oracle_credits_other_identities_under_the_root_only() -> None:
    rng = random.Random(1)
    at = datetime(2026, 1, 1, 10, 59, tzinfo=UTC)
    spans = [
        span(rng, "t", "a0", None, "agent-a", at),
        span(rng, "t", "b1", "a0", "agent-b", at),
        span(rng, "t", "a2", "b1", "agent-a", at),  # back into A: its own cost
        span(rng, "t", "c3", "a2", "agent-c", at + timedelta(minutes=2)),  # the next hour
        span(rng, "t", "d4", "gone", "agent-d", at),  # its parent never came
    ]
    got = expected_driven(spans, max_hops=64)
    hour = int(at.timestamp()) // 3600
    assert sorted(got) == ["agent-a"] and sorted(got["agent-a"]) == [hour, hour + 1]
    assert got["agent-a"][hour][0] == 1 and got["agent-a"][hour + 1][0] == 1
    assert got["agent-a"][hour][4] == spans[1].cost_nano_usd
    assert expected_driven(spans, max_hops=2)["agent-a"].keys() == {hour}  # c3 is 3 hops deep
    assert spans[0].cost_usd == Decimal(spans[0].cost_nano_usd).scaleb(-9)
