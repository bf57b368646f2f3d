"""Root-caller attribution on a real Redis: every span's cost credited to its trace's root
identity exactly once, whatever the order, batching and redelivery of the spans.

Generated multi-agent traces (chains, fan-outs, identity cycles, a chain past the hop guard,
rootless traces, a loop of span ids) go through the real pipeline shuffled (children before
their roots) and partly redelivered; the cost each root drove is computed independently by
tests/support/agent_chains.py. Crashes between the two steps (credit in the trace's slot,
apply in the root's) are simulated by calling the steps alone.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from meterguard.models import MeteringEvent
from meterguard.streams.policy.config import PolicyConfig
from meterguard.streams.runtime.pipeline import Pipeline
from meterguard.streams.store import Store, StoreConfig, build_store
from meterguard.streams.store import traces as traces_module
from meterguard.streams.store.rollups import totals
from meterguard.streams.store.showback import Period
from meterguard.streams.store.showback_read import load_report
from meterguard.streams.store.traces import MAX_TRACE_HOPS, SpanLink
from tests.support.agent_chains import IDENTITIES, deliveries, expected_driven, traces

pytestmark = pytest.mark.integration
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 2, 8, 40, tzinfo=UTC)


@pytest.fixture
async def store(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield build_store(client, StoreConfig(prefix="rc", allowed_lateness_s=30))
    await client.aclose()


def as_rows(hours) -> dict[int, list[int]]:
    return {
        hour: [r.calls, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost_nano_usd,
               r.errors]
        for hour, r in hours.items()
    }  # fmt: skip


async def drive(store: Store, events: list[MeteringEvent], batch: int) -> None:
    pipeline = Pipeline(store, PolicyConfig())
    for i in range(0, len(events), batch):
        out = await pipeline.process(events[i : i + batch])
        await pipeline.commit(out, NOW)


async def assert_driven_exact(store: Store, events: list[MeteringEvent]) -> None:
    want = expected_driven(events, MAX_TRACE_HOPS)
    assert await store.traces.driven_identities() == sorted(want)
    for root, hours in want.items():
        got = as_rows(await store.traces.driven(root))
        assert got == hours, root
        # The same rows through the roll-ups' reader (the report's other way in).
        assert as_rows((await store.rollups.rows("driven", root)).hours) == hours, root
    # Nothing left waiting to be applied.
    assert [k async for k in store.redis.scan_iter(match="rc:trace:*:credits")] == []
    assert await store.traces.sweep() == 0


@pytest.mark.parametrize(("seed", "batch"), [(1, 1), (2, 7), (3, 64), (4, 5000)])
async def test_driven_cost_is_exact_out_of_order_and_redelivered(
    store: Store, seed: int, batch: int
):
    events = traces(seed, 60, T0)
    await drive(store, deliveries(events, seed, redeliver=0.3), batch)
    await assert_driven_exact(store, events)
    want = expected_driven(events, MAX_TRACE_HOPS)
    assert sum(len(h) for h in want.values()) > 5  # several roots and hours were credited


async def test_a_redelivery_of_the_whole_stream_adds_nothing(store: Store):
    events = traces(5, 40, T0)
    await drive(store, deliveries(events, 5, redeliver=0.0), 50)
    await drive(store, deliveries(events, 6, redeliver=0.0), 13)
    await assert_driven_exact(store, events)


async def test_own_cost_and_cost_driven_of_a_chain(store: Store):
    """A -> B -> C, B fans out to D twice, and C calls back into A (a cycle): A drove B, C
    and D's cost; A's span inside the chain is its own cost; B drove nothing as a root."""
    at = T0 + timedelta(minutes=5)

    def call(span_id: str, parent: str | None, identity: str, usd: str) -> MeteringEvent:
        return MeteringEvent(
            event_id=span_id,
            identity=identity,
            event_time=at,
            trace_id="tr",
            span_id=span_id,
            parent_span_id=parent,
            input_tokens=10,
            output_tokens=5,
            cost_usd=Decimal(usd),
        )

    spans = [
        call("a0", None, "agent-a", "0.10"),
        call("b1", "a0", "agent-b", "0.20"),
        call("c2", "b1", "agent-c", "0.30"),
        call("d3", "b1", "agent-d", "0.01"),
        call("d4", "b1", "agent-d", "0.02"),
        call("a5", "c2", "agent-a", "0.40"),
    ]
    # Deepest first: nothing can be credited until the root comes, last.
    await drive(store, list(reversed(spans)) + spans[1:3], 2)
    hour = int(at.timestamp()) // 3600
    (row,) = (await store.traces.driven("agent-a")).values()
    assert (row.calls, row.cost_nano_usd, row.input_tokens) == (4, 530_000_000, 40)
    assert list(await store.traces.driven("agent-a", hour, hour)) == [hour]
    assert await store.traces.driven("agent-a", hour + 1) == {}
    assert await store.traces.driven_identities() == ["agent-a"]
    # Own cost per identity: the identity roll-up (every event of the identity).
    own = totals((await store.rollups.rows("identity", "agent-a")).hours)
    assert own.cost_nano_usd == 500_000_000
    # The report by identity shows both: own cost, and cost driven downstream.
    period = Period(hour, hour + 1)
    report = await load_report(store.redis, store.rollups, "identity", period, "rc")
    lines = {line.group: line for line in report.rows}
    assert lines["agent-a"].usage.cost_usd == Decimal("0.5")
    assert lines["agent-a"].driven is not None
    assert lines["agent-a"].driven.cost_usd == Decimal("0.53")
    assert lines["agent-b"].driven is not None and lines["agent-b"].driven.calls == 0
    assert report.totals.driven is not None
    assert report.totals.driven.cost_nano_usd == 530_000_000


async def test_a_crash_between_credit_and_apply_loses_and_doubles_nothing(store: Store):
    spans = [
        SpanLink("tx", "c", "b", "agent-c", 300, hour=7),
        SpanLink("tx", "b", "a", "agent-b", 200, hour=7),
        SpanLink("tx", "a", None, "agent-a", 100, hour=7),
    ]
    # The worker credits (the trace's slot), then dies before applying to agent-a's roll-up.
    _, credits = await store.traces.link_spans(spans)
    assert sorted((c.span_id, c.root, c.cost_nano_usd) for c in credits) == [
        ("b", "agent-a", 200),
        ("c", "agent-a", 300),
    ]
    assert await store.traces.driven("agent-a") == {}
    # The redelivery links nothing new and returns the credits still waiting.
    _, again = await store.traces.link_spans(spans)
    assert sorted(again, key=str) == sorted(credits, key=str)
    # Applied, then a crash before they are deleted: applying them again adds nothing.
    assert await store.traces.credited.apply(again) == 2
    assert await store.traces.settle(credits) == 0
    assert (await store.traces.driven("agent-a"))[7].cost_nano_usd == 500
    # Deleted once applied: the next link of the trace returns none.
    _, after = await store.traces.link_spans(spans[:1])
    assert after == []


async def test_a_sweep_applies_what_a_trace_that_never_came_back_left(store: Store):
    spans = [
        SpanLink("ty", "root", None, "agent-a", 1, hour=3),
        SpanLink("ty", "kid", "root", "agent-b", 20, hour=4, input_tokens=7, errors=1),
    ]
    await store.traces.link_spans(spans)  # credited, never applied (the worker died)
    assert await store.traces.sweep() == 1
    assert await store.traces.sweep() == 0
    row = (await store.traces.driven("agent-a"))[4]
    assert (row.calls, row.input_tokens, row.cost_nano_usd, row.errors) == (1, 7, 20, 1)


async def test_a_redelivery_after_the_call_tree_expired_is_not_credited_twice(store: Store):
    spans = [
        SpanLink("tz", "r", None, "agent-a", 1, hour=5),
        SpanLink("tz", "k", "r", "agent-b", 40, hour=5),
    ]
    await store.traces.link(spans)
    await store.redis.delete(store.keys.trace_key("tz"))  # its hour of silence is over
    places = await store.traces.link(spans)  # a late redelivery rebuilds the tree
    assert places[1].root == "agent-a"
    assert (await store.traces.driven("agent-a"))[5].cost_nano_usd == 40


async def test_a_loop_of_span_ids_ends_and_credits_nothing(store: Store):
    spans = [
        SpanLink("tl", "x1", "x2", "agent-a", 5, hour=1),
        SpanLink("tl", "x2", "x1", "agent-b", 7, hour=1),
        SpanLink("tl", "x3", "x3", "agent-c", 9, hour=1),  # its own parent
    ]
    places = await store.traces.link(spans[:1])
    places += await store.traces.link(spans[1:])
    assert [p.root for p in places] == [None, None, None]
    assert await store.traces.driven_identities() == []
    trace = await store.redis.hgetall(store.keys.trace_key("tl"))
    assert not [f for f in trace if f.startswith(b"w\t")]  # nothing left waiting


async def test_agent_chain_alert_names_the_root_and_the_chains_cost(store: Store):
    """agent-b, normally called by agent-a at depth 1, is caught in a loop agent-a -> b ->
    c -> b -> c -> b -> c -> b: the alert says who started the chain and what it cost."""
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    events: list[MeteringEvent] = []

    def call(trace: str, span_id: str, parent: str | None, identity: str, caller: str | None,
             at: datetime, usd: str) -> None:  # fmt: skip
        events.append(
            MeteringEvent(
                event_id=f"{trace}/{span_id}",
                identity=identity,
                event_time=at,
                trace_id=trace,
                span_id=span_id,
                parent_span_id=parent,
                caller_identity=caller,
                environment="staging",
                cost_usd=Decimal(usd),
            )
        )

    for m in range(80):
        at = start + timedelta(minutes=m)
        call(f"n{m}", "a", None, "agent-a", None, at, "0.01")
        call(f"n{m}", "b", "a", "agent-b", "agent-a", at + timedelta(seconds=2), "0.002")
        if m == 72:
            chain = ["agent-a", "agent-b", "agent-c"] + ["agent-b", "agent-c"] * 2 + ["agent-b"]
            for depth, identity in enumerate(chain):
                parent = f"l{depth - 1}" if depth else None
                caller = chain[depth - 1] if depth else None
                call("loop", f"l{depth}", parent, identity, caller,
                     at + timedelta(seconds=10 + depth), "0.05")  # fmt: skip
    events.sort(key=lambda e: e.event_time)
    pipeline = Pipeline(store, PolicyConfig())
    out = await pipeline.process(events)
    await pipeline.commit(out, NOW)

    firing = [a for a in out.alerts if a.detector == "agent_chain" and a.status == "firing"]
    assert [a.identity for a in firing] == ["agent-b"]
    alert = firing[0]
    assert alert.evidence["root_identity"] == "agent-a"
    assert alert.evidence["trace_id"] == "loop"
    assert alert.evidence["chain_cost_usd"] == pytest.approx(8 * 0.05)
    assert "chain started by 'agent-a'" in alert.summary and "$0.4" in alert.summary
    # Cost driven by agent-a: every agent-b span, and the loop's agent-c spans.
    driven = totals(await store.traces.driven("agent-a"))
    assert driven.cost_nano_usd == 80 * 2_000_000 + 7 * 50_000_000


async def test_two_workers_sharing_traces_credit_each_span_once(redis_url: str):
    """Spans of one trace belong to several identities, so to several partitions: two workers
    link the same traces at once and both see (and apply) each other's waiting credits."""
    events = traces(9, 50, T0)
    stream = deliveries(events, 9, redeliver=0.2)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    stores = [build_store(c, StoreConfig(prefix="rc", allowed_lateness_s=30)) for c in clients]
    pipelines = [Pipeline(s, PolicyConfig()) for s in stores]
    partitions: list[list[MeteringEvent]] = [[], []]
    for e in stream:  # by identity, as Kafka keys metering.events
        partitions[IDENTITIES.index(e.identity) % 2].append(e)

    async def worker(pipeline: Pipeline, mine: list[MeteringEvent], batch: int) -> None:
        for i in range(0, len(mine), batch):
            out = await pipeline.process(mine[i : i + batch])
            await pipeline.commit(out, NOW)

    jobs = zip(pipelines, partitions, (5, 9), strict=True)
    await asyncio.gather(*(worker(p, m, b) for p, m, b in jobs))
    await assert_driven_exact(stores[0], events)
    for c in clients:
        await c.aclose()


async def test_a_runaway_trace_stops_growing_at_its_span_cap(
    store: Store, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(traces_module, "MAX_TRACE_SPANS", 5)
    chain = [SpanLink("loop", f"s{i}", f"s{i - 1}" if i else None, "agent-x", 10, hour=7)
             for i in range(12)]  # fmt: skip
    places, _ = await store.traces.link_spans(chain[:8])
    # The first five are linked; a span past the cap is described from the links made (its
    # parent unlinked: depth 0).
    assert [p.depth for p in places] == [0, 1, 2, 3, 4, 5, 0, 0]
    before = await store.redis.hlen(store.keys.trace_key("loop"))
    places, _ = await store.traces.link_spans(chain[8:])  # their parents were never linked
    assert [p.depth for p in places] == [0, 0, 0, 0]
    assert await store.redis.hlen(store.keys.trace_key("loop")) == before  # nothing waits
