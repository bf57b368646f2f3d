"""The shared batch pipeline against a real Redis: dedupe, windows, lateness, determinism."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis.asyncio as aioredis

from meterguard.models import MeteringEvent
from meterguard.streams.policy.config import BudgetSpec, PolicyConfig
from meterguard.streams.runtime.pipeline import BatchOutcome, Pipeline
from meterguard.streams.store import Store, StoreConfig, build_store
from meterguard.timeutil import minute_of
from tests.support.traffic import T0, as_events, mixed, series

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(redis_url: str):
    client = aioredis.Redis.from_url(redis_url)
    yield build_store(client, StoreConfig(prefix="t", allowed_lateness_s=30))
    await client.aclose()


async def run(
    pipeline: Pipeline, events: list[MeteringEvent], batch: int, now: datetime = NOW
) -> BatchOutcome:
    total = BatchOutcome()
    for i in range(0, len(events), batch):
        out = await pipeline.process(events[i : i + batch])
        await pipeline.apply_throttles(out, now)
        total.alerts += out.alerts
        total.commands += out.commands
        total.scores += out.scores
        await pipeline.commit(out, now)
    return total


async def test_duplicate_event_ids_count_once_within_and_across_batches(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    events = as_events(series("svc-a", 3, 10))
    out = await pipeline.process(events + events[:5])  # duplicates inside one batch
    await pipeline.commit(out, NOW)
    again = await pipeline.process(events)  # a full redelivery
    await pipeline.commit(again, NOW)

    first = minute_of(events[0].event_time_ms)
    rows = await store.windows.read("svc-a", first, first + 2)
    assert [r.calls for r in rows] == [10, 10, 10]
    assert [r.input_tokens for r in rows] == [4000, 4000, 4000]
    assert sum(r.cost_nano_usd for r in rows) == 30 * 400_000  # 0.0004 USD, exactly
    counters = await store.windows.counters("svc-a")
    assert (counters["new"], counters["dup"]) == (30, 35)
    assert [s.status for s in again.scores] == ["duplicate"] * 30


async def test_event_past_allowed_lateness_is_counted_as_late_not_in_its_minute(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    on_time = as_events(series("svc-b", 5, 2))
    first = minute_of(on_time[0].event_time_ms)
    await pipeline.commit(await pipeline.process(on_time), NOW)
    late = MeteringEvent(
        event_id="late-1", identity="svc-b", event_time=T0 + timedelta(seconds=5), input_tokens=7
    )
    within = MeteringEvent(
        event_id="late-2",
        identity="svc-b",
        event_time=T0 + timedelta(minutes=4, seconds=10),
        input_tokens=9,
    )
    out = await pipeline.process([late, within])
    await pipeline.commit(out, NOW)

    assert [s.status for s in out.scores] == ["late", "new"]
    rows = await store.windows.read("svc-b", first, first + 4)
    assert rows[0].calls == 2  # the scored minute did not move
    # Watermark 04:30, lateness 30 s: minute 03 is final, minute 04 still open.
    assert rows[4].calls == 3  # inside the lateness allowance: counted in its minute
    late_totals = await store.windows.late_totals("svc-b")
    assert [(r.calls, r.input_tokens) for r in late_totals.values()] == [(1, 7)]
    assert (await store.windows.counters("svc-b"))["late"] == 1


@pytest.mark.parametrize("batch", [1, 37, 10_000])
async def test_alerts_and_scores_do_not_depend_on_batch_size(redis_url: str, batch: int):
    events = as_events(mixed(quiet=2))
    outcomes = []
    for size in (batch, 500):
        client = aioredis.Redis.from_url(redis_url)
        await client.flushall()
        pipeline = Pipeline(build_store(client, StoreConfig(prefix="b")), PolicyConfig())
        outcomes.append(await run(pipeline, events, size))
        await client.aclose()
    one, other = outcomes
    assert [a.alert_id for a in one.alerts] == [a.alert_id for a in other.alerts]
    assert one.alerts == other.alerts
    assert one.commands == other.commands
    assert [s.scores for s in one.scores] == [s.scores for s in other.scores]
    assert {a.identity for a in one.alerts} == {"agent-runaway"}


async def test_runaway_identity_gets_alert_and_throttle_key_quiet_ones_none(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    # The wall clock during the run sits just after the data, as for a live worker.
    out = await run(pipeline, as_events(mixed(quiet=3)), 400, now=T0 + timedelta(minutes=76))
    firing = [a for a in out.alerts if a.status == "firing"]
    assert [a.identity for a in firing] == ["agent-runaway"]
    alert = firing[0]
    assert alert.severity == "critical" and alert.score >= 0.9
    assert "calls" in alert.summary and "baseline" in alert.summary
    assert alert.throttle_command_id is not None
    command = next(c for c in out.commands if c.command_id == alert.throttle_command_id)
    assert command.action == "throttle" and command.limits.requests_per_minute >= 10
    key_command = await store.throttles.active_for("agent-runaway")
    assert key_command == command
    assert await store.redis.pttl(store.keys.throttle_key("agent-runaway")) > 0
    for i in range(3):
        assert await store.throttles.active_for(f"svc-quiet-{i}") is None


async def test_lost_checkpoint_rescores_the_same_minutes_with_the_same_ids(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    events = as_events(mixed(quiet=1, minutes=70, runaway_from=66))
    cut = next(i for i, e in enumerate(events) if e.event_time >= T0 + timedelta(minutes=66))
    await run(pipeline, events[:cut], 300)
    crashed = await pipeline.process(events[cut:])  # published, then "crashed" before commit
    assert crashed.alerts, "the burst should have fired in this batch"
    redelivered = await pipeline.process(events[cut:])
    assert all(s.status == "duplicate" for s in redelivered.scores)
    assert [a.alert_id for a in redelivered.alerts] == [a.alert_id for a in crashed.alerts]
    assert redelivered.commands == crashed.commands


async def test_keys_share_the_identity_hash_tag_and_expire(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    await run(pipeline, as_events(series("agent:{odd}", 3, 5)), 100)
    keys = sorted(k.decode() for k in await store.redis.keys("t:{agent:{odd}*"))
    assert keys == [f"t:{{agent:{{odd}}}}:{p}" for p in ("dd", "meta", "state", "win")]
    for key in keys:
        ttl = await store.redis.ttl(key)
        assert 0 < ttl <= store.config.ttl_s


async def test_offboarded_identity_is_blocked_at_once_even_in_staging(store: Store):
    policy = PolicyConfig(offboarded_identities=frozenset({"svc-retired"}))
    pipeline = Pipeline(store, policy)
    docs = series("svc-retired", 5, 3, environment="staging")
    out = await run(pipeline, as_events(docs), 100, now=T0 + timedelta(minutes=5))
    firing = [a for a in out.alerts if a.status == "firing"]
    assert [(a.detector, a.severity) for a in firing] == [("drift", "critical")]
    assert "offboarding" in firing[0].summary
    blocks = [c for c in out.commands if c.action == "block"]
    assert blocks and blocks[0].limits.requests_per_minute == 0
    assert (await store.throttles.active_for("svc-retired")).action == "block"


async def test_budget_warns_before_the_cap_and_blocks_at_it(store: Store):
    # 6 calls/min x $0.0004 = $0.0024/min: $0.12/day is 50 minutes of this traffic.
    policy = PolicyConfig(budgets={"svc-spender": BudgetSpec(daily_usd=0.12)})
    pipeline = Pipeline(store, policy)
    out = await run(pipeline, as_events(series("svc-spender", 60, 6)), 200)
    budget = [a for a in out.alerts if a.detector == "budget" and a.status == "firing"]
    assert [a.severity for a in budget] == ["warning", "critical"]
    warning, cap = budget
    assert warning.evidence["fraction"] < 1.0 <= cap.evidence["fraction"]
    assert warning.window_end < cap.window_end
    assert "budget" in warning.summary and "$" in warning.summary
    assert any(c.action == "block" and c.alert_id == cap.alert_id for c in out.commands)


def _command(action: str, alert: str, minute: int, identity: str = "svc-x"):
    from meterguard.models import ThrottleCommand, ThrottleLimits

    issued = T0 + timedelta(minutes=minute)
    return ThrottleCommand(
        command_id=f"{action}-{alert}-{minute}",
        identity=identity,
        action=action,
        limits=ThrottleLimits(requests_per_minute=0 if action == "block" else 5),
        reason="test",
        alert_id=alert,
        issued_at=issued,
        expires_at=issued + timedelta(minutes=15),
        version=minute * 60_000,
    )


async def test_gateway_key_keeps_a_block_and_a_release_clears_only_its_own_command(
    store: Store,
):
    now = T0 + timedelta(minutes=3)
    block = _command("block", "drift-alert", 0)
    throttle = _command("throttle", "spike-alert", 1)
    accepted = await store.throttles.apply([block, throttle], now)
    assert accepted == [block]  # a throttle never replaces another alert's block
    assert (await store.throttles.active_for("svc-x")) == block
    assert await store.throttles.apply([_command("release", "spike-alert", 2)], now) == []
    assert (await store.throttles.active_for("svc-x")) == block  # not the spike's to release
    older = _command("block", "old-alert", -1)
    assert await store.throttles.apply([older], now) == []  # a lower version never wins
    assert await store.throttles.apply([block], now) == [block]  # redelivery: accepted again
    release = _command("release", "drift-alert", 2)
    assert await store.throttles.apply([release], now) == [release]
    assert await store.throttles.active_for("svc-x") is None


async def test_expired_command_is_accepted_for_the_feed_but_writes_no_key(store: Store):
    # A replay of old events must emit the same commands whatever the wall clock says.
    stale = _command("throttle", "old-alert", 0)
    late_now = T0 + timedelta(hours=2)
    assert await store.throttles.apply([stale], late_now) == [stale]
    assert await store.throttles.active_for("svc-x") is None


async def test_operator_release_clears_the_key_publishes_it_and_sticks_for_that_alert(
    store: Store,
):
    now = T0 + timedelta(minutes=3)
    held = _command("throttle", "spike-alert", 1)
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.keys.throttle_channel)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    await store.throttles.apply([held], now)
    operator = _command("release", "spike-alert", 2).model_copy(update={"command_id": "op-1"})
    assert await store.operator.release(held, operator) == 1
    assert await store.throttles.active_for("svc-x") is None
    published = []
    while len(published) < 2:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2.0)
        assert message is not None, f"only {published} were published"
        published.append(orjson.loads(message["data"])["command_id"])
    assert published == [held.command_id, "op-1"]
    # The episode renews its throttle a minute later: the operator's release stands.
    assert await store.throttles.apply([_command("throttle", "spike-alert", 6)], now) == []
    assert await store.throttles.active_for("svc-x") is None
    # A new alert (an escalation, another detector) throttles again.
    fresh = _command("block", "budget-alert", 7)
    assert await store.throttles.apply([fresh], now) == [fresh]
    assert await store.operator.release(held, operator) == -1  # not the held one any more
    await pubsub.aclose()


async def test_trace_call_tree_reports_depth_cycles_root_fanout_and_cost(store: Store):
    from meterguard.streams.store.traces import SpanLink

    # A -> B -> C -> A (a loop back into A), and A's root span also calls D directly.
    spans = [
        SpanLink("t1", "s0", None, "agent-a", 100),
        SpanLink("t1", "s1", "s0", "agent-b", 200),
        SpanLink("t1", "s2", "s1", "agent-c", 300),
        SpanLink("t1", "s3", "s2", "agent-a", 400),
        SpanLink("t1", "s4", "s0", "agent-d", 500),
    ]
    places = await store.traces.link(spans[:2])  # the tree grows across batches
    places += await store.traces.link(spans[2:])
    assert [p.depth for p in places] == [0, 1, 2, 3, 1]
    assert [p.cycle for p in places] == [False, False, False, True, False]
    assert {p.root for p in places} == {"agent-a"}
    assert places[4].fanout == 2  # s0 has two children: s1 and s4
    assert places[-1].trace_cost_nano_usd == 1500
    again = await store.traces.link(spans)  # a redelivery changes nothing
    assert again[-1].trace_cost_nano_usd == 1500 and again[4].fanout == 2


async def test_rankings_cover_the_newest_event_time_hours_only(store: Store):
    pipeline = Pipeline(store, PolicyConfig())
    # svc-old is busy in the first hour only, svc-new quieter but in the third hour.
    old = as_events(series("svc-old", 60, 10))
    new = as_events(series("svc-new", 60, 2, start=T0 + timedelta(hours=2)))
    await run(pipeline, old + new, 500)
    newest = await store.history.top_identities(10, hours=1)
    assert [identity for identity, _ in newest] == ["svc-new"]
    assert newest[0][1] == 60 * 2 * 500  # 2 calls/min x 500 tokens each, one hour
    assert [i for i, _ in await store.history.top_identities(10, hours=3)] == ["svc-old", "svc-new"]
    (cost,) = await store.history.top_by_cost(10, hours=1)
    assert cost == ("svc-new", 60 * 2 * 400_000)  # $0.0004 a call, in nano-USD


async def test_counters_stay_exact_when_a_worker_dies_before_its_checkpoint(redis_url: str):
    """A batch is ingested (and its roll-ups applied), then the worker dies before the
    checkpoint round trip; the redelivery finds every event a duplicate. The pipeline's
    events_new / events_late come from the roll-up, applied exactly once, so they are exact
    (they used to come from the checkpoint step, and fell short by the lost batch)."""
    client = aioredis.Redis.from_url(redis_url)
    store = build_store(client, StoreConfig(prefix="crash", allowed_lateness_s=30))
    pipeline = Pipeline(store, PolicyConfig())
    events = as_events(series("svc-k", 6, 5))
    late = MeteringEvent(event_id="k-late", identity="svc-k", event_time=T0, input_tokens=3)
    try:
        await pipeline.commit(await pipeline.process(events[:15]), NOW)
        await pipeline.process(events[15:])  # ... and the worker is killed here
        again = await pipeline.process([*events[15:], late])  # redelivered, plus a late one
        await pipeline.commit(again, NOW)
        await pipeline.commit(await pipeline.process(events), NOW)  # a full redelivery
        counters = await store.stats.pipeline_counters()
        assert (counters["events_new"], counters["events_late"]) == (len(events), 1)
        assert counters["events_duplicate"] == 15 + len(events)
    finally:
        await client.aclose()


async def test_a_batch_whose_checkpoint_never_landed_is_observed_again(redis_url: str):
    """Event-level observations (retry fingerprints, models, workloads, spans) live in the
    checkpoint. A worker that dies after ingest but before its checkpoint loses them, and the
    redelivered events are duplicates: they are observed again (status 'r'), not counted
    again, so the checkpoint ends exactly as if nothing had happened."""
    docs = series("svc-o", 4, 6)
    for n, doc in enumerate(docs):
        doc.update(workload=f"job-{n % 3}", model="gpt-4o", request_fingerprint=f"fp-{n % 2}")
    events = as_events(docs)
    first, second = events[:12], events[12:]
    client = aioredis.Redis.from_url(redis_url)
    states = []
    try:
        for prefix, crash in (("calm", False), ("killed", True)):
            store = build_store(client, StoreConfig(prefix=prefix, allowed_lateness_s=30))
            pipeline = Pipeline(store, PolicyConfig())
            await pipeline.commit(await pipeline.process(first), NOW)
            if crash:
                await pipeline.process(second)  # ingested; the worker dies before committing
            again = await pipeline.process(second)
            await pipeline.commit(again, NOW)
            if crash:
                assert {s.status for s in again.scores} == {"duplicate"}  # not counted twice
            counters = await store.windows.counters("svc-o")
            assert counters["new"] == len(events)
            assert await client.hget(store.keys.identity_key("svc-o", "dd"), "awaiting:") is None
            states.append(await client.get(store.keys.identity_key("svc-o", "state")))
    finally:
        await client.aclose()
    calm, killed = states
    assert killed == calm


@pytest.mark.parametrize("slow_commits", ["first", "last"])
async def test_a_rebalance_never_overwrites_a_newer_checkpoint(redis_url: str, slow_commits: str):
    """Two workers step one identity at once (a rebalance: the old owner finishes a step the
    new owner re-reads). Neither closes a minute, so the scored minute cannot tell their
    checkpoints apart: the commit compares the checkpoint each was built on. Whichever
    commits second loses and is stepped again from the winner's state (as the worker's
    _score_step does), and the checkpoint ends exactly as one uninterrupted worker's."""
    docs = series("svc-r", 4, 6)
    for n, doc in enumerate(docs):
        doc.update(workload=f"job-{n % 3}", model="gpt-4o", request_fingerprint=f"fp-{n % 2}")
    last = docs[-1]
    # New ids at the newest event time with new models and workloads: observations that
    # close no minute (the scored pointer stays where it was for both workers).
    extra = [
        {**last, "event_id": f"extra-{n}", "model": f"model-{n}", "workload": f"new-{n}"}
        for n in range(3)
    ]
    events = as_events([*docs, *extra])
    first, second, third = events[:12], events[12 : len(docs)], events[len(docs) :]
    client = aioredis.Redis.from_url(redis_url)
    try:
        calm_store = build_store(client, StoreConfig(prefix="race-calm", allowed_lateness_s=30))
        calm = Pipeline(calm_store, PolicyConfig())
        for part in (first, second, third):
            await calm.commit(await calm.process(part), NOW)
        store = build_store(
            client, StoreConfig(prefix=f"race-{slow_commits}", allowed_lateness_s=30)
        )
        old_owner, new_owner = Pipeline(store, PolicyConfig()), Pipeline(store, PolicyConfig())
        await old_owner.commit(await old_owner.process(first), NOW)
        await old_owner.commit(await old_owner.process(second), NOW)
        # The old owner's last step: `third`, ingested and scored, not yet committed ...
        stale = await old_owner.process(third)
        # ... while the new owner, from the last committed offset, steps `third` too.
        fresh = await new_owner.process(third)
        if slow_commits == "last":
            assert await new_owner.commit(fresh, NOW) == []
            assert await old_owner.commit(stale, NOW) == ["svc-r"]  # refused: built on old state
            loser, lost_events = old_owner, third
        else:
            assert await old_owner.commit(stale, NOW) == []
            assert await new_owner.commit(fresh, NOW) == ["svc-r"]
            loser, lost_events = new_owner, third
        again = await loser.process(lost_events)  # stepped again from the winner's state
        assert {s.status for s in again.scores} == {"duplicate"}  # counted once
        assert await loser.commit(again, NOW) == []
        assert (await store.windows.counters("svc-r"))["new"] == len(events)
        states = [
            await client.get(s.keys.identity_key("svc-r", "state")) for s in (calm_store, store)
        ]
    finally:
        await client.aclose()
    assert states[1] == states[0]
